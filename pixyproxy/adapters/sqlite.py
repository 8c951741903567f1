"""SQLite image repository (aiosqlite): the embedded default. Named parameters only."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite

from pixyproxy.adapters.sql_rows import RowMapping
from pixyproxy.domain.exceptions import (
    DuplicateImageError,
    ImageNotFoundError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import (
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
    request_hash TEXT
);
CREATE INDEX IF NOT EXISTS jobs_newest_first ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC, id DESC);
DROP TABLE IF EXISTS idempotency_keys;
"""

_COLUMNS = "id, guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at, updated_at"
_SELECT = "SELECT " + _COLUMNS + " FROM images"  # noqa: S608  # constants only; values are :named
_NEWEST_FIRST = " ORDER BY created_at DESC, guid DESC LIMIT :limit"


def _timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(value: str) -> datetime:
    # fromisoformat reads the fixed-width text (and its Z) some forty times faster than strptime.
    return datetime.fromisoformat(value)


ROWS = RowMapping(to_db_time=_timestamp, from_db_time=_parse_timestamp)


class SqliteImageRepository:
    """Image records in one SQLite file, opened lazily on first use."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
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
                        await connection.execute("PRAGMA journal_mode=WAL")
                        await connection.execute("PRAGMA busy_timeout=5000")
                        await connection.executescript(SCHEMA)
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
                "INSERT INTO images (guid, prompt, filename, content_type, size_bytes, sha256,"  # noqa: S608
                " generation, created_at, updated_at) VALUES (:guid, :prompt, :filename,"
                " :content_type, :size_bytes, :sha256, :generation, :created_at, :updated_at)"
                " RETURNING " + _COLUMNS,
                ROWS.image_to_row(image),
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

    async def list_page(self, *, limit: int, after: PageKey | None = None) -> list[ImageRecord]:
        """Newest first by (created_at, guid), keyset-paged."""
        if after is None:
            sql = _SELECT + _NEWEST_FIRST
            params: dict[str, Any] = {"limit": limit}
        else:
            sql = _SELECT + " WHERE (created_at, guid) < (:created_at, :guid)" + _NEWEST_FIRST
            params = {
                "limit": limit,
                "created_at": _timestamp(after.created_at),
                "guid": str(after.guid),
            }
        return [ROWS.row_to_image(row) for row in await self._fetch(sql, params)]

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
