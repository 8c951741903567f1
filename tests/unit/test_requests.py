"""Request parsing at the edge: NFC, and the body cap derived from the largest valid request."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from pixyproxy.app.requests import (
    LONGEST_ESCAPED_CHAR_BYTES,
    MAX_PROMPT_CHARS,
    largest_valid_body_bytes,
    parse_generate_request,
)
from pixyproxy.domain.exceptions import InvalidRequestError


def test_the_longest_escape_of_a_character_is_what_the_cap_assumes() -> None:
    """Over every code point: the JSON bytes of its longest canonical spelling, per NFC character."""
    longest = 0.0
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code < 0xE000:
            continue
        char = chr(code)
        escaped = len(json.dumps(unicodedata.normalize("NFD", char))) - 2
        longest = max(longest, escaped / len(unicodedata.normalize("NFC", char)))
    assert longest == LONGEST_ESCAPED_CHAR_BYTES


@pytest.mark.parametrize("char", ["\u1f82", "\U0001f98a", "漢", "\uac01", "é"])
def test_the_largest_valid_body_fits_under_the_cap(char: str) -> None:
    prompt = char * MAX_PROMPT_CHARS
    body = json.dumps({"prompt": unicodedata.normalize("NFD", prompt), "size": "1024x1792"}, indent=4)
    assert len(body.encode()) <= largest_valid_body_bytes()
    assert parse_generate_request(json.loads(body)).prompt == unicodedata.normalize("NFC", prompt)


def test_a_prompt_is_stored_in_nfc_and_counted_after_it() -> None:
    nfd = unicodedata.normalize("NFD", "café " * 800)  # 5,000 code points in NFD, 4,000 in NFC
    assert len(nfd) > MAX_PROMPT_CHARS
    parsed = parse_generate_request({"prompt": nfd})
    assert parsed.prompt == unicodedata.normalize("NFC", "café " * 800).strip()
    assert parse_generate_request({"prompt": "cafe\u0301"}) == parse_generate_request({"prompt": "caf\u00e9"})


def test_a_prompt_over_the_limit_after_nfc_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        parse_generate_request({"prompt": "漢" * (MAX_PROMPT_CHARS + 1)})
