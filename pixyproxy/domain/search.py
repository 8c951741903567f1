"""Which words a prompt can be found by, and which a search asks for: one rule for every repository.

Text is folded first: NFKC (full-width letters and half-width kana become the ordinary ones),
case-folded (so "STRASSE", "Straße" and "strasse" are one word), and stripped of the Latin, Greek
and Cyrillic accents of U+0300..U+036F (so "café" is found by "cafe"); marks that are letters of
their own script (Thai vowels and tones, Japanese dakuten, Devanagari signs) are kept.

Scripts written with spaces are split into words at every character that is not a letter, digit
or mark. Scripts written without spaces (Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar)
have no word boundaries a machine can see without a dictionary, so a run of them is indexed as
every single character and every pair of neighbours (bigrams). A search for such a run asks for
its bigrams (a single character: itself), so "東京" finds "東京タワー" and "狐" finds "赤い狐".
All of a search's terms must be present; nothing in a search is an operator.
"""

from __future__ import annotations

import re
import unicodedata

# Every term of a search must be present; more than this many are not a search but a document.
MAX_QUERY_TERMS = 64

_ACCENTS = re.compile("[\u0300-\u036f]")
# Scripts written without spaces between words: Thai, Lao, Myanmar, Hangul Jamo, Khmer, CJK
# radicals, symbols and punctuation (the iteration marks), Hiragana, Katakana, Bopomofo,
# compatibility Jamo, Katakana extensions, CJK Extension A, CJK Unified, Hangul syllables, CJK
# compatibility ideographs, and the supplementary ideograph planes.
_UNSPACED = (
    (0x0E00, 0x0EFF),
    (0x1000, 0x109F),
    (0x1100, 0x11FF),
    (0x1780, 0x17FF),
    (0x2E80, 0x2FDF),
    (0x3005, 0x3007),
    (0x3021, 0x3029),
    (0x3031, 0x303C),
    (0x3040, 0x30FF),
    (0x3100, 0x318F),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)


def fold(text: str) -> str:
    """Text as search compares it: NFKC, case-folded, Latin/Greek/Cyrillic accents removed, NFC."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", folded)))


def _is_unspaced(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED)


def _runs(text: str) -> list[tuple[bool, str]]:
    """(unspaced?, run) for each maximal run of word characters in folded text."""
    runs: list[tuple[bool, str]] = []
    current: list[str] = []
    current_unspaced = False
    for char in fold(text):
        if unicodedata.category(char)[0] not in "LMN":
            kind: bool | None = None
        else:
            kind = _is_unspaced(char)
        if current and kind is not current_unspaced:
            runs.append((current_unspaced, "".join(current)))
            current = []
        if kind is not None:
            current.append(char)
            current_unspaced = kind
    if current:
        runs.append((current_unspaced, "".join(current)))
    return runs


def _bigrams(run: str) -> list[str]:
    return [run[i : i + 2] for i in range(len(run) - 1)]


def indexed_terms(prompt: str) -> list[str]:
    """Every term a prompt can be found by, each once, in order of first appearance."""
    terms: dict[str, None] = {}
    for unspaced, run in _runs(prompt):
        if unspaced:
            terms.update(dict.fromkeys(run))
            terms.update(dict.fromkeys(_bigrams(run)))
        else:
            terms[run] = None
    return list(terms)


def query_terms(words: str) -> tuple[str, ...]:
    """The terms a search asks for, each once; all must be present. Operators and quotes are not
    terms: `"fox" -snow +C++*` asks for fox, snow and c. Raises ValueError past MAX_QUERY_TERMS."""
    terms: dict[str, None] = {}
    for unspaced, run in _runs(words):
        if unspaced and len(run) > 1:
            terms.update(dict.fromkeys(_bigrams(run)))
        else:
            terms[run] = None
    if len(terms) > MAX_QUERY_TERMS:
        raise ValueError(f"asks for {len(terms)} terms; at most {MAX_QUERY_TERMS}")
    return tuple(terms)


def matches(terms: tuple[str, ...], prompt_terms: set[str] | frozenset[str]) -> bool:
    """Whether a prompt with these indexed terms is found by a search for `terms` (never by none)."""
    return bool(terms) and all(term in prompt_terms for term in terms)
