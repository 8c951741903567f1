"""SQLite image repository (aiosqlite): the embedded default. Named parameters only."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import aiosqlite

from pixyproxy.adapters.search_index import fts5_match, search_columns
from pixyproxy.adapters.sql_rows import RowMapping
from pixyproxy.domain.exceptions import (
    DuplicateImageError,
    ImageNotFoundError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import (
    GenerationInfo,
    ImageFilter,
    ImageRecord,
    NewImage,
    PageKey,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    generation TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_newest_first ON images (created_at DESC, guid DESC);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    size TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    lease_until TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    published INTEGER NOT NULL DEFAULT 0,
    image_guid TEXT,
    error TEXT,
    idem_key TEXT UNIQUE,
    request_hash TEXT,
    webhook TEXT,
    webhook_events TEXT
);
CREATE INDEX IF NOT EXISTS jobs_newest_first ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status TEXT,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_attempt_at TEXT,
    lease_until TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_job ON webhook_deliveries (job_id, created_at);
DROP TABLE IF EXISTS idempotency_keys;
"""
# Columns added to the jobs table after its first release. CREATE TABLE IF NOT EXISTS leaves an older
# file's table as it was, so each is added when the file is opened and lacks it.
_ADDED_JOB_COLUMNS = (
    ("webhook", "ALTER TABLE jobs ADD COLUMN webhook TEXT"),
    ("webhook_events", "ALTER TABLE jobs ADD COLUMN webhook_events TEXT"),
    ("owner", "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous'"),
    # 1 from a webhook job's finish until its final event's delivery row is written (the outbox flag).
    ("events_pending", "ALTER TABLE jobs ADD COLUMN events_pending INTEGER NOT NULL DEFAULT 0"),
)
# Columns added to the images table after its first release (the search ones are _SEARCH_COLUMNS).
_ADDED_IMAGE_COLUMNS = (("owner", "ALTER TABLE images ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous'"),)
# Indexes on added columns: created once the columns exist. An owner's page is one index range.
_ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS images_by_owner ON images (owner, created_at DESC, guid DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_events_pending ON jobs (finished_at, id) WHERE events_pending = 1",
)

_SYNCHRONOUS = {"normal": "PRAGMA synchronous=NORMAL", "full": "PRAGMA synchronous=FULL"}

_COLUMNS = (
    "id, guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at, updated_at, owner"
)
_SELECT = "SELECT " + _COLUMNS + " FROM images"  # noqa: S608  # constants only; values are :named
_NEWEST_FIRST = " ORDER BY created_at DESC, guid DESC LIMIT :limit"
_SEARCH_SELECT = (
    "SELECT images.id, guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at,"
    " updated_at, owner FROM images_search CROSS JOIN images ON images.id = images_search.rowid"
)
_EQUALS = {"generator": "generator = :generator", "model": "model = :model", "owner": "owner = :owner"}


def _timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(value: str) -> datetime:
    # fromisoformat reads the fixed-width text (and its Z) some forty times faster than strptime.
    return datetime.fromisoformat(value)


ROWS = RowMapping(to_db_time=_timestamp, from_db_time=_parse_timestamp)


async def _add_missing_job_columns(connection: aiosqlite.Connection) -> None:
    """Bring an older file's jobs and images tables up to SCHEMA (added columns and their indexes);
    safe to repeat, and in two processes at once."""
    for table, added in (("jobs", _ADDED_JOB_COLUMNS), ("images", _ADDED_IMAGE_COLUMNS)):
        rows = await connection.execute_fetchall(f"PRAGMA table_info({table})", {})
        present = {row["name"] for row in rows}
        for name, statement in added:
            if name not in present:
                try:
                    await connection.execute(statement)
                except sqlite3.OperationalError as err:
                    if "duplicate column" not in str(err):  # not merely another process adding it first
                        raise
    for statement in _ADDED_INDEXES:
        await connection.execute(statement)


# Search and filter columns, added to the images table after its first release. search_words holds
# the prompt's index words (adapters.search_index); FTS5's unicode61 tokenizer splits them at spaces.
_SEARCH_COLUMNS = (
    ("generator", "ALTER TABLE images ADD COLUMN generator TEXT"),
    ("model", "ALTER TABLE images ADD COLUMN model TEXT"),
    ("search_words", "ALTER TABLE images ADD COLUMN search_words TEXT"),
)
# The full-text index reads the images table (external content); triggers keep it in step.
_SEARCH_SCHEMA = (
    "CREATE INDEX IF NOT EXISTS images_by_generator ON images (generator, created_at DESC, guid DESC)",
    "CREATE INDEX IF NOT EXISTS images_by_model ON images (model, created_at DESC, guid DESC)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS images_search USING fts5(search_words, content='images',"
    " content_rowid='id', tokenize='unicode61')",
    "CREATE TRIGGER IF NOT EXISTS images_search_insert AFTER INSERT ON images BEGIN"
    " INSERT INTO images_search (rowid, search_words) VALUES (new.id, new.search_words); END",
    "CREATE TRIGGER IF NOT EXISTS images_search_delete AFTER DELETE ON images BEGIN"
    " INSERT INTO images_search (images_search, rowid, search_words)"
    " VALUES ('delete', old.id, old.search_words); END",
    "INSERT INTO images_search (images_search) VALUES ('rebuild')",
)
_SEARCH_READY = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'images_search'"


async def _prepare_search(connection: aiosqlite.Connection) -> None:
    """Give an older file's images table the search columns, filled in, and the full-text index.

    One transaction: a second process opening the file meanwhile waits for it, then finds it done.
    """
    if await connection.execute_fetchall(_SEARCH_READY, {}):
        return
    await connection.execute("BEGIN IMMEDIATE")
    try:
        if not await connection.execute_fetchall(_SEARCH_READY, {}):
            columns = await connection.execute_fetchall("PRAGMA table_info(images)", {})
            present = {row["name"] for row in columns}
            for name, statement in _SEARCH_COLUMNS:
                if name not in present:
                    await connection.execute(statement)
            rows = await connection.execute_fetchall(
                "SELECT id, prompt, generation FROM images WHERE search_words IS NULL", {}
            )
            await connection.executemany(
                "UPDATE images SET generator = :generator, model = :model, search_words = :search_words"
                " WHERE id = :id",
                [
                    {
                        "id": row["id"],
                        **search_columns(
                            row["prompt"], GenerationInfo.model_validate_json(row["generation"])
                        ),
                    }
                    for row in rows
                ],
            )
            for statement in _SEARCH_SCHEMA:
                await connection.execute(statement)
        await connection.execute("COMMIT")
    except BaseException:
        await connection.execute("ROLLBACK")
        raise


class SqliteImageRepository:
    """Image records in one SQLite file, opened lazily on first use."""

    def __init__(self, path: str | Path, *, synchronous: Literal["normal", "full"] = "normal") -> None:
        self._path = str(path)
        self._synchronous = synchronous
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def _db(self) -> aiosqlite.Connection:
        if self._connection is None:
            async with self._lock:
                if self._connection is None:
                    try:
                        if self._path != ":memory:":
                            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                        connection = await aiosqlite.connect(self._path, isolation_level=None)
                        connection.row_factory = aiosqlite.Row
                        # The timeout first: turning WAL on needs a moment alone with the file, and
                        # another process opening it at once must then wait, not fail.
                        await connection.execute("PRAGMA busy_timeout=5000")
                        await connection.execute("PRAGMA journal_mode=WAL")
                        # Under WAL, NORMAL syncs the log at checkpoints instead of at every commit: a
                        # commit survives PixyProxy crashing or being killed, and the file stays
                        # consistent, but the last commits may roll back if the machine loses power.
                        # FULL's fsync per commit (1.4 ms here) serialised every write on the one
                        # connection: make bench figures 4-generate-p50 and 6 (BENCHMARKS.md). FULL
                        # stays a setting (PIXYPROXY_SQLITE_SYNCHRONOUS) for power-loss durability.
                        await connection.execute(_SYNCHRONOUS[self._synchronous])
                        await connection.executescript(SCHEMA)
                        await _add_missing_job_columns(connection)
                        await _prepare_search(connection)
                    except (sqlite3.Error, OSError) as err:
                        raise RepositoryUnavailableError(f"cannot open SQLite database: {err}") from err
                    self._connection = connection
        return self._connection

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        """Rows of a statement on this file's connection; the job repository shares it."""
        return await self._fetch(sql, params)

    async def execute(self, sql: str, params: Mapping[str, Any]) -> int:
        """The affected row count of a statement on this file's connection."""
        return await self._execute(sql, params)

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        db = await self._db()
        try:
            # One trip to aiosqlite's thread, where execute + fetchall + close make three.
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as err:
            raise RepositoryUnavailableError(f"SQLite query failed: {err}") from err

    async def _execute(self, sql: str, params: Mapping[str, Any]) -> int:
        db = await self._db()
        try:
            async with db.execute(sql, params) as cursor:
                return cursor.rowcount
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as err:
            raise RepositoryUnavailableError(f"SQLite statement failed: {err}") from err

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert a record; its id comes from SQLite."""
        try:
            rows = await self._fetch(
                "INSERT INTO images (guid, prompt, filename, content_type, size_bytes, sha256,"
                " generation, created_at, updated_at, generator, model, search_words, owner) VALUES"
                " (:guid, :prompt, :filename, :content_type, :size_bytes, :sha256, :generation,"
                " :created_at, :updated_at, :generator, :model, :search_words, :owner) RETURNING " + _COLUMNS,
                {**ROWS.image_to_row(image), **search_columns(image.prompt, image.generation)},
            )
        except sqlite3.IntegrityError as err:
            raise DuplicateImageError(image.guid) from err
        return ROWS.row_to_image(rows[0])

    async def get(self, guid: UUID) -> ImageRecord:
        """The record with this GUID."""
        rows = await self._fetch(_SELECT + " WHERE guid = :guid", {"guid": str(guid)})
        if not rows:
            raise ImageNotFoundError(guid)
        return ROWS.row_to_image(rows[0])

    async def delete(self, guid: UUID) -> bool:
        """Delete the record."""
        return await self._execute("DELETE FROM images WHERE guid = :guid", {"guid": str(guid)}) > 0

    async def list_page(
        self, *, limit: int, after: PageKey | None = None, filters: ImageFilter | None = None
    ) -> list[ImageRecord]:
        """Newest first by (created_at, guid), keyset-paged, of the records that pass `filters`.

        A search starts from the full-text index (CROSS JOIN keeps SQLite from scanning the images
        newest first instead), so a page costs the matches, not the images.
        """
        source = _SELECT
        conditions: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            conditions.append("(created_at, guid) < (:created_at, :guid)")
            params |= {"created_at": _timestamp(after.created_at), "guid": str(after.guid)}
        if filters is not None:
            if filters.words is not None:
                if not filters.words:
                    return []
                source = _SEARCH_SELECT
                conditions.append("images_search MATCH :words")
                params["words"] = fts5_match(filters.words)
            for name in ("generator", "model", "owner"):
                if getattr(filters, name) is not None:
                    conditions.append(_EQUALS[name])
                    params[name] = getattr(filters, name)
            if filters.created_after is not None:
                conditions.append("created_at > :created_after")
                params["created_after"] = _timestamp(filters.created_after)
            if filters.created_before is not None:
                conditions.append("created_at < :created_before")
                params["created_before"] = _timestamp(filters.created_before)
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        return [ROWS.row_to_image(row) for row in await self._fetch(source + where + _NEWEST_FIRST, params)]

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Every record's (guid, filename)."""
        rows = await self._fetch("SELECT guid, filename FROM images", {})
        return [(UUID(row["guid"]), row["filename"]) for row in rows]

    async def ping(self) -> None:
        """Run a trivial query."""
        await self._fetch("SELECT 1", {})

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
