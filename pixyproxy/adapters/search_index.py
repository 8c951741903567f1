"""Search terms as index words that SQLite FTS5 and MariaDB FULLTEXT both take whole.

Each term of domain.search becomes one ASCII word: `x` and the hex of its UTF-8 bytes, or, past
30 bytes, `h` and a 120-bit BLAKE2b digest. So every word is 3 to 61 characters of [0-9a-hx]:
above InnoDB's `innodb_ft_min_token_size` (3; a CJK character's bigram is only two characters),
below its maximum (84), never one of its English stop words, and split by both engines' default
tokenizers at spaces only. A search is built from these words alone, never from what a client
typed, so quotes, `*`, `+`, `-` and parentheses in a search are never operators.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pixyproxy.domain import search
from pixyproxy.domain.models import GenerationInfo

_MAX_HEX_BYTES = 30


def index_word(term: str) -> str:
    """The index word of one search term."""
    raw = term.encode()
    if len(raw) <= _MAX_HEX_BYTES:
        return "x" + raw.hex()
    return "h" + hashlib.blake2b(raw, digest_size=15).hexdigest()


def indexed_words(prompt: str) -> str:
    """What a prompt's search column holds: the index words of its terms, space-separated."""
    return " ".join(index_word(term) for term in search.indexed_terms(prompt))


def fts5_match(terms: tuple[str, ...]) -> str:
    """An FTS5 MATCH expression that needs every term (each word quoted, though it needs no quotes)."""
    return " AND ".join('"' + index_word(term) + '"' for term in terms)


def boolean_match(terms: tuple[str, ...]) -> str:
    """A MariaDB/MySQL `AGAINST (... IN BOOLEAN MODE)` expression that needs every term."""
    return " ".join("+" + index_word(term) for term in terms)


# The widest generator and model names the filter columns hold (VARCHAR(100) and VARCHAR(255) on
# MySQL): a longer name is stored as NULL, and no filter can ask for one (the API caps them alike).
MAX_GENERATOR_CHARS = 100
MAX_MODEL_CHARS = 255


def search_columns(prompt: str, generation: GenerationInfo) -> dict[str, Any]:
    """The search and filter columns of an image row: generator, model and search_words."""
    model = generation.model
    return {
        "generator": generation.generator if len(generation.generator) <= MAX_GENERATOR_CHARS else None,
        "model": model if model is not None and len(model) <= MAX_MODEL_CHARS else None,
        "search_words": indexed_words(prompt),
    }
