"""The bench's MariaDB databases: created with the adapter's own schema, bulk-loaded in SQL, dropped after.

Rows are generated inside MariaDB from its SEQUENCE engine (`seq_1_to_1000000`) with INSERT ... SELECT,
so a million rows load in seconds instead of a million round trips; parameters are named, never
formatted into the SQL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pymysql

from pixyproxy.adapters.mysql import MySqlImageRepository
from pixyproxy.adapters.mysql.connection import parse_mysql_url, quote_identifier
from pixyproxy.adapters.mysql.init import init_schema
from pixyproxy.domain.models import NewImage

MAX_ROWS = 1_000_000
BATCH_ROWS = 100_000
EPOCH = "2026-01-01 00:00:00"  # bulk rows are older than the seeded image, which stays the newest

# Each generated row: a v4-shaped GUID from an MD5 of the sequence number, 1 ms apart in time.
_BULK_INSERT = """
INSERT INTO images
    (guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at, updated_at)
SELECT g.guid, CONCAT(%(prompt)s, g.seq), CONCAT(g.guid, '.png'), 'image/png', %(size_bytes)s,
       SHA2(g.guid, 256), %(generation)s,
       TIMESTAMPADD(MICROSECOND, g.seq * 1000, %(epoch)s),
       TIMESTAMPADD(MICROSECOND, g.seq * 1000, %(epoch)s)
FROM (
    SELECT h.seq, LOWER(CONCAT_WS('-', SUBSTR(h.md5, 1, 8), SUBSTR(h.md5, 9, 4),
                                  CONCAT('4', SUBSTR(h.md5, 14, 3)), CONCAT('8', SUBSTR(h.md5, 18, 3)),
                                  SUBSTR(h.md5, 21, 12))) AS guid
    FROM (
        SELECT seq, MD5(CONCAT(%(salt)s, seq)) AS md5 FROM seq_1_to_1000000
        WHERE seq BETWEEN %(first)s AND %(last)s
    ) AS h
) AS g
"""


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
    batches = [(first, min(first + BATCH_ROWS - 1, rows - 1)) for first in range(1, rows, BATCH_ROWS)]
    # Batches keep each transaction's undo small. Two loaders at once were no faster here: the
    # time goes to InnoDB's writes (a 128 MiB buffer pool by default), not to generating rows.
    for first, last in batches:
        _bulk_insert(url, first, last)
    connection = _connect(url)
    try:
        with connection.cursor() as cursor:
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
                    "prompt": "bulk-loaded bench image, a fox in the snow at dusk, number ",
                    "size_bytes": 68,
                    "generation": '{"generator": "bench", "model": "bulk"}',
                    "epoch": EPOCH,
                    "salt": "pixyproxy-bench-",
                    "first": first,
                    "last": last,
                },
            )
    finally:
        connection.close()


async def _add(url: str, image: NewImage) -> None:
    repository = MySqlImageRepository(url)
    try:
        await repository.add(image)
    finally:
        await repository.close()
