"""The bench's MariaDB databases: created with the adapter's own schema, bulk-loaded in SQL, dropped after.

Rows are generated inside MariaDB from its SEQUENCE engine (`seq_1_to_1000000`) with INSERT ... SELECT,
so a million rows load in seconds instead of a million round trips; parameters are named, never
formatted into the SQL.

Each row carries the search and filter columns the repository maintains (generator, model,
search_words). Its prompt is one of `PROMPT_VARIANTS + 1` prompts made from a small vocabulary, and
their index words are computed here in Python by the repository's own `search_columns`, kept in a
helper table that the INSERT ... SELECT joins on, then dropped. `COMMON_WORD` is in 30 % of the
rows, `RARE_WORD` in one row in `RARE_EVERY` (10 of a million), for the search figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymysql
import pymysql.cursors

from pixyproxy.adapters.mysql import MySqlImageRepository
from pixyproxy.adapters.mysql.connection import parse_mysql_url, quote_identifier
from pixyproxy.adapters.mysql.init import init_schema
from pixyproxy.adapters.search_index import boolean_match, search_columns
from pixyproxy.domain.models import GenerationInfo, NewImage
from pixyproxy.domain.search import query_terms

MAX_ROWS = 1_000_000
BATCH_ROWS = 100_000
EPOCH = "2026-01-01 00:00:00"  # bulk rows are older than the seeded image, which stays the newest

# The prompts of the bulk rows: PROMPT_VARIANTS made of FILLER words, the first COMMON_SHARE of them
# with COMMON_WORD too, and one more (number PROMPT_VARIANTS) with RARE_WORD, taken by every row whose
# sequence number is RARE_OFFSET modulo RARE_EVERY (10 rows of a million, none of a thousand).
PROMPT_VARIANTS = 1_000
COMMON_WORD, COMMON_SHARE = "fox", 0.3
RARE_WORD, RARE_EVERY, RARE_OFFSET = "narwhal", 100_000, 50_000
FILLER = (
    "red", "blue", "green", "amber", "violet", "golden", "silver", "misty", "quiet", "bright",
    "snow", "forest", "river", "mountain", "harbour", "meadow", "desert", "city", "garden", "lake",
    "dawn", "dusk", "noon", "night", "winter", "summer", "autumn", "spring", "storm", "rain",
    "owl", "hare", "deer", "heron", "otter", "badger", "lantern", "bridge", "tower", "boat",
    "painting", "photo", "sketch", "watercolour", "woodcut", "mosaic", "poster", "etching",
)  # fmt: skip
BULK_GENERATION = GenerationInfo(generator="bench", model="bulk")

# Each generated row: a v4-shaped GUID from an MD5 of the sequence number, 1 ms apart in time, and
# the prompt (with its search columns) of variant `seq MOD PROMPT_VARIANTS`, or the rare one.
_BULK_INSERT = """
INSERT INTO images
    (guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at, updated_at,
     generator, model, search_words)
SELECT g.guid, p.prompt, CONCAT(g.guid, '.png'), 'image/png', %(size_bytes)s,
       SHA2(g.guid, 256), %(generation)s,
       TIMESTAMPADD(MICROSECOND, g.seq * 1000, %(epoch)s),
       TIMESTAMPADD(MICROSECOND, g.seq * 1000, %(epoch)s),
       %(generator)s, %(model)s, p.search_words
FROM (
    SELECT h.seq, LOWER(CONCAT_WS('-', SUBSTR(h.md5, 1, 8), SUBSTR(h.md5, 9, 4),
                                  CONCAT('4', SUBSTR(h.md5, 14, 3)), CONCAT('8', SUBSTR(h.md5, 18, 3)),
                                  SUBSTR(h.md5, 21, 12))) AS guid,
           CASE WHEN h.seq MOD %(rare_every)s = %(rare_offset)s THEN %(variants)s
                ELSE h.seq MOD %(variants)s END AS variant
    FROM (
        SELECT seq, MD5(CONCAT(%(salt)s, seq)) AS md5 FROM seq_1_to_1000000
        WHERE seq BETWEEN %(first)s AND %(last)s
    ) AS h
) AS g
JOIN bench_prompts AS p ON p.variant = g.variant
"""
_PROMPTS_TABLE = """CREATE TABLE bench_prompts (
    variant INT NOT NULL PRIMARY KEY,
    prompt TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    search_words MEDIUMTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL
) ENGINE=InnoDB"""


def bulk_prompt(variant: int) -> str:
    """The prompt of one variant: deterministic, so every run loads the same rows."""
    words = random.Random(variant).sample(FILLER, 6)
    if variant == PROMPT_VARIANTS:
        words.insert(3, RARE_WORD)
    elif variant < COMMON_SHARE * PROMPT_VARIANTS:
        words.insert(2, COMMON_WORD)
    return "bench image: " + " ".join(words)


def expected_matches(rows: int, word: str) -> int:
    """How many images of a database loaded with `rows` hold `word` (the seeded image holds neither)."""
    seqs = range(1, rows)
    if word == RARE_WORD:
        return sum(1 for seq in seqs if seq % RARE_EVERY == RARE_OFFSET)
    if word == COMMON_WORD:
        common = int(COMMON_SHARE * PROMPT_VARIANTS)
        return sum(1 for seq in seqs if seq % RARE_EVERY != RARE_OFFSET and seq % PROMPT_VARIANTS < common)
    raise ValueError(word)


def url_with_database(url: str, database: str) -> str:
    """The same MySQL URL, pointing at another database."""
    quote_identifier(database)
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def _connect(url: str, *, with_database: bool = True) -> pymysql.connections.Connection:
    target = parse_mysql_url(url)
    kwargs = target.connect_kwargs(connect_timeout_s=5, with_database=with_database)
    return pymysql.connect(**kwargs)


def reachable(url: str) -> str | None:
    """None when the server answers, else why not (without the URL, which may hold a password)."""
    try:
        _connect(url, with_database=False).close()
    except pymysql.err.MySQLError as err:
        return f"{type(err).__name__}: {err.args[0] if err.args else ''}"
    return None


def drop_database(url: str) -> None:
    """Drop the URL's database if it exists."""
    database = quote_identifier(parse_mysql_url(url).database)
    connection = _connect(url, with_database=False)
    try:
        with connection.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS " + database)
    finally:
        connection.close()


@dataclass
class LoadedDatabase:
    """A bench database: its URL and how many images it holds."""

    url: str
    rows: int
    load_s: float


def create_loaded_database(url: str, *, rows: int, seeded: NewImage) -> LoadedDatabase:
    """A fresh database: the adapter's schema, `seeded` added through the adapter, bulk rows up to `rows`."""
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be 1 to {MAX_ROWS}")
    drop_database(url)
    asyncio.run(init_schema(url))
    asyncio.run(_add(url, seeded))
    started = time.monotonic()
    _create_prompts(url)
    batches = [(first, min(first + BATCH_ROWS - 1, rows - 1)) for first in range(1, rows, BATCH_ROWS)]
    # Batches keep each transaction's undo small. Two loaders at once were no faster here: the
    # time goes to InnoDB's writes (a 128 MiB buffer pool by default), not to generating rows.
    for first, last in batches:
        _bulk_insert(url, first, last)
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_prompts")
            cursor.execute("ANALYZE TABLE images")
            cursor.fetchall()
            cursor.execute("SELECT COUNT(*) FROM images")
            (count,) = cursor.fetchone()
    finally:
        connection.close()
    return LoadedDatabase(url=url, rows=int(count), load_s=time.monotonic() - started)


def _bulk_insert(url: str, first: int, last: int) -> None:
    """Generate rows `first` to `last` of the sequence inside MariaDB."""
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            # GUIDs are generated unique; skipping the check lets InnoDB buffer the index writes.
            cursor.execute("SET SESSION unique_checks = 0")
            cursor.execute(
                _BULK_INSERT,
                {
                    "size_bytes": 68,
                    "generation": BULK_GENERATION.model_dump_json(),
                    "generator": BULK_GENERATION.generator,
                    "model": BULK_GENERATION.model,
                    "epoch": EPOCH,
                    "variants": PROMPT_VARIANTS,
                    "rare_every": RARE_EVERY,
                    "rare_offset": RARE_OFFSET,
                    "salt": "pixyproxy-bench-",
                    "first": first,
                    "last": last,
                },
            )
    finally:
        connection.close()


def _create_prompts(url: str) -> None:
    """The helper table of the bulk rows' prompts and their search words, as the repository makes them."""
    rows = []
    for variant in range(PROMPT_VARIANTS + 1):
        prompt = bulk_prompt(variant)
        columns = search_columns(prompt, BULK_GENERATION)
        if (columns["generator"], columns["model"]) != (BULK_GENERATION.generator, BULK_GENERATION.model):
            raise RuntimeError(f"search_columns maps the bulk generation to {columns}")
        rows.append({"variant": variant, "prompt": prompt, "search_words": columns["search_words"]})
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_prompts")
            cursor.execute(_PROMPTS_TABLE)
            cursor.executemany(
                "INSERT INTO bench_prompts (variant, prompt, search_words)"
                " VALUES (%(variant)s, %(prompt)s, %(search_words)s)",
                rows,
            )
        connection.commit()
    finally:
        connection.close()


async def _add(url: str, image: NewImage) -> None:
    repository = MySqlImageRepository(url)
    try:
        await repository.add(image)
    finally:
        await repository.close()


def search_statement(word: str, *, limit: int) -> tuple[str, dict[str, Any]]:
    """The SELECT the MySQL repository runs for the first page of `GET /image?q=<word>&limit=<limit>`."""
    # The repository's own SQL fragments, so that the plan explained is the plan the server runs.
    from pixyproxy.adapters.mysql.repository import _FILTERS, _NEWEST_FIRST, _SELECT

    sql = _SELECT + " WHERE " + _FILTERS["words"] + _NEWEST_FIRST
    return sql, {"words": boolean_match(query_terms(word)), "limit": limit}


def explain_search(url: str, word: str, *, limit: int) -> dict[str, Any]:
    """EXPLAIN, and MariaDB's ANALYZE FORMAT=JSON (which runs the query), of one search page."""
    sql, params = search_statement(word, limit=limit)
    connection = _connect(url)
    try:
        with connection.cursor(pymysql.cursors.DictCursor) as cursor:
            cursor.execute("EXPLAIN " + sql, params)
            explain = [dict(row) for row in cursor.fetchall()]
            cursor.execute("ANALYZE FORMAT=JSON " + sql, params)
            analyze = json.loads(next(iter(cursor.fetchone().values())))
    finally:
        connection.close()
    return {"explain": explain, "analyze": analyze, "summary": _analyze_summary(analyze)}


def _analyze_summary(analyze: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of an ANALYZE that say where a search page's time goes."""
    tables: list[dict[str, Any]] = []
    sorts: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "table_name" in node:
                tables.append(node)
            if "sort_key" in node:
                sorts.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(analyze)
    table = tables[0] if tables else {}
    stats = table.get("r_engine_stats", {})
    return {
        "optimization_ms": analyze.get("query_optimization", {}).get("r_total_time_ms"),
        "execution_ms": analyze.get("query_block", {}).get("r_total_time_ms"),
        "access_type": table.get("access_type"),
        "key": table.get("key"),
        "rows_read": table.get("r_rows"),
        "pages_accessed": stats.get("pages_accessed"),
        "pages_read_from_disk": stats.get("pages_read_count"),
        "filesort": bool(sorts),
        "priority_queue": sorts[0].get("r_used_priority_queue") if sorts else None,
    }
