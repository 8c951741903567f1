"""MySQL/MariaDB image repository (aiomysql): a lazily opened pool, `%(name)s` parameters only."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import aiomysql
import pymysql
from pymysql.constants import ER

from pixyproxy.adapters.mysql.connection import (
    error_number,
    is_connection_lost,
    parse_mysql_url,
    unavailable,
)
from pixyproxy.adapters.mysql.init import init_schema
from pixyproxy.adapters.search_index import boolean_match, index_word, search_columns
from pixyproxy.adapters.sql_rows import Row, RowMapping
from pixyproxy.domain.exceptions import (
    DuplicateImageError,
    ImageNotFoundError,
    RecordOutcomeUnknownError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import (
    ImageFilter,
    ImageRecord,
    NewImage,
    PageKey,
)
from pixyproxy.domain.search import MAX_QUERY_TERMS

log = logging.getLogger(__name__)

# aiomysql turns every server warning into a Python warning, which Python prints on standard error
# beside the log in a shape of its own. The search walk's budget running out is expected (the
# repository reads it with SHOW WARNINGS and falls back); it must not reach the log as a stray line.
warnings.filterwarnings(
    "ignore", message=r"Query execution was interrupted\. The query exceeded LIMIT ROWS EXAMINED"
)

T = TypeVar("T")

_COLUMNS = (
    "id, guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at, updated_at, owner"
)
_SELECT = "SELECT " + _COLUMNS + " FROM images"  # noqa: S608  # constants only; values are %(named)s
_NEWEST_FIRST = " ORDER BY created_at DESC, guid DESC LIMIT %(limit)s"
# Spelled out rather than as a row comparison, so MySQL uses the (created_at, guid) index.
_AFTER = " WHERE created_at < %(created_at)s OR (created_at = %(created_at)s AND guid < %(guid)s)"
_INSERT = (
    "INSERT INTO images (guid, prompt, filename, content_type, size_bytes, sha256, generation,"
    " created_at, updated_at, generator, model, search_words, owner) VALUES (%(guid)s, %(prompt)s,"
    " %(filename)s, %(content_type)s, %(size_bytes)s, %(sha256)s, %(generation)s, %(created_at)s,"
    " %(updated_at)s, %(generator)s, %(model)s, %(search_words)s, %(owner)s)"
)
# Each filter's condition; a search goes through the FULLTEXT index of the prompt's index words.
_FILTERS = {
    "words": "MATCH (search_words) AGAINST (%(words)s IN BOOLEAN MODE)",
    "generator": "generator = %(generator)s",
    "model": "model = %(model)s",
    "owner": "owner = %(owner)s",
    "created_after": "created_at > %(created_after)s",
    "created_before": "created_at < %(created_before)s",
}
# A search's other plan: walk newest first and test each term as a whole space-separated token of
# search_words, within a budget of rows examined (MariaDB's LIMIT ... ROWS EXAMINED). The FULLTEXT
# lookup hands back every match before the newest can be picked: cheap for a rare word, seconds for
# one in a third of a million rows, which this walk finds in a few hundred. Term i is %(t<i>)s.
_WALK_TERMS = tuple("CONCAT(' ', search_words, ' ') LIKE %(t" + str(i) + ")s" for i in range(MAX_QUERY_TERMS))
_WALK_BUDGET = " ROWS EXAMINED %(budget)s"
# ER_QUERY_EXCEEDED_ROWS_EXAMINED_LIMIT: the walk stopped at its budget and returned what it had.
_ROWS_EXAMINED_EXCEEDED = 1931


def _token_pattern(term: str) -> str:
    """A LIKE pattern that finds `term`'s index word as a whole token of ' ' + search_words + ' '."""
    word = index_word(term).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "% " + word + " %"


def _to_db_time(value: datetime) -> datetime:
    """Naive UTC: DATETIME has no zone, and every session runs at +00:00."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _from_db_time(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


ROWS = RowMapping(to_db_time=_to_db_time, from_db_time=_from_db_time)


class MySqlImageRepository:
    """Image records in MySQL or MariaDB, through an aiomysql pool opened on first use."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        connect_timeout_s: float = 5.0,
        init_schema: bool = False,
        query_timeout_s: float = 30.0,
        acquire_timeout_s: float | None = None,
        pool_recycle_s: int = 600,
        search_walk_rows: int = 5_000,
    ) -> None:
        self._target = parse_mysql_url(url)
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._query_timeout_s = query_timeout_s
        # Waiting for a free connection includes opening one, which may take the connect timeout.
        self._acquire_timeout_s = acquire_timeout_s or max(10.0, 2 * connect_timeout_s)
        self._pool_recycle_s = pool_recycle_s
        # How many rows a search may examine walking newest first before it asks FULLTEXT (0: never walk).
        self._search_walk_rows = search_walk_rows
        self._schema_ready = not init_schema
        self._pool: aiomysql.Pool | None = None
        self._lock = asyncio.Lock()
        self._wakeups: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"MySqlImageRepository({self._target.describe()})"

    async def initialize(self) -> None:
        """Create the schema if configured to, and check the server answers. Called at start-up."""
        await self.ping()

    async def create_schema(self) -> int:
        """Create the database and tables if missing (idempotent); return the schema version."""
        version = await init_schema(self._target, connect_timeout_s=self._connect_timeout_s)
        self._schema_ready = True
        return version

    async def _get_pool(self) -> aiomysql.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    if not self._schema_ready:
                        # Not done yet (or the server was down at start-up): try again now.
                        await self.create_schema()
                    # minsize=0: creating the pool opens nothing, so it cannot fail half-way.
                    self._pool = await aiomysql.create_pool(
                        minsize=0,
                        maxsize=self._pool_size,
                        pool_recycle=self._pool_recycle_s,
                        **self._target.connect_kwargs(connect_timeout_s=self._connect_timeout_s),
                    )
        return self._pool

    async def _acquire(self) -> tuple[aiomysql.Pool, aiomysql.Connection]:
        pool = await self._get_pool()
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                connection = await pool.acquire()
        except TimeoutError as err:
            raise RepositoryUnavailableError(
                f"no connection to {self._target.describe()} within {self._acquire_timeout_s:g}s"
            ) from err
        except (pymysql.err.MySQLError, OSError) as err:
            raise unavailable(err, self._target) from err
        except RuntimeError as err:  # aiomysql: "Cannot acquire connection after closing pool"
            raise RepositoryUnavailableError("the repository is closed") from err
        return pool, connection

    def _release(self, pool: aiomysql.Pool, connection: aiomysql.Connection, *, broken: bool) -> None:
        if broken:
            connection.close()  # never hand a connection in an unknown state to the next request
        pool.release(connection)
        if connection.closed:
            # aiomysql only wakes waiters when it keeps the connection; tell them a slot is free.
            task = asyncio.get_running_loop().create_task(pool._wakeup())
            self._wakeups.add(task)
            task.add_done_callback(self._wakeups.discard)

    async def _run(self, operation: Callable[[Any], Awaitable[T]], *, retry_lost: bool) -> T:
        """Run `operation(cursor)` on a pooled connection, translating driver errors.

        With `retry_lost`, a connection found dead (killed, server restarted) is replaced once:
        only for statements that are safe to run twice.
        """
        attempt = 1
        while True:
            pool, connection = await self._acquire()
            try:
                async with asyncio.timeout(self._query_timeout_s):
                    cursor = await connection.cursor(aiomysql.DictCursor)
                    result = await operation(cursor)
                    await cursor.close()
            except pymysql.err.IntegrityError:
                self._release(pool, connection, broken=False)  # the server refused a row; all is well
                raise
            except BaseException as err:
                self._release(pool, connection, broken=True)
                if not isinstance(err, pymysql.err.MySQLError | OSError):
                    raise
                if retry_lost and attempt == 1 and is_connection_lost(err):
                    log.warning("MySQL connection lost (%s); retrying on a fresh one", error_number(err))
                    attempt += 1
                    continue
                if not is_connection_lost(err) and isinstance(err, pymysql.err.ProgrammingError):
                    log.error("MySQL refused a statement", exc_info=err)
                raise unavailable(err, self._target) from err
            self._release(pool, connection, broken=False)
            return result

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        """Rows of a read; a dead connection is retried once."""

        async def fetch(cursor: Any) -> list[Row]:
            await cursor.execute(sql, params)
            return list(await cursor.fetchall())

        return await self._run(fetch, retry_lost=True)

    async def _execute(self, sql: str, params: Mapping[str, Any], *, retry_lost: bool) -> int:
        """The affected row count of a write."""

        async def execute(cursor: Any) -> int:
            return int(await cursor.execute(sql, params))

        return await self._run(execute, retry_lost=retry_lost)

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        """Rows of a read on this repository's pool; the job repository shares it."""
        return await self._fetch(sql, params)

    async def execute(self, sql: str, params: Mapping[str, Any], *, retry_lost: bool) -> int:
        """The affected (changed) row count of a write on this repository's pool."""
        return await self._execute(sql, params, retry_lost=retry_lost)

    async def transaction(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """Run `operation(cursor)` inside one transaction on one pooled connection: committed when it
        returns, rolled back when it raises. Driver errors are translated as `_run` does; never resent,
        since a lost COMMIT leaves its outcome unknown."""

        async def in_transaction(cursor: Any) -> T:
            await cursor.execute("START TRANSACTION")  # the pool runs with autocommit otherwise
            try:
                result = await operation(cursor)
                await cursor.execute("COMMIT")
            except Exception as err:
                # A dead connection needs no ROLLBACK (_run closes it, and the server rolls back);
                # a live one must not go back to the pool inside a transaction.
                if not is_connection_lost(err):
                    await cursor.execute("ROLLBACK")
                raise
            return result

        return await self._run(in_transaction, retry_lost=False)

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert a record; its id comes from AUTO_INCREMENT."""
        row = {**ROWS.image_to_row(image), **search_columns(image.prompt, image.generation)}

        sent = False

        async def insert(cursor: Any) -> int:
            nonlocal sent
            sent = True
            await cursor.execute(_INSERT, row)
            return int(cursor.lastrowid)

        try:
            new_id = await self._run(insert, retry_lost=False)
        except pymysql.err.IntegrityError as err:
            if error_number(err) == ER.DUP_ENTRY:
                raise DuplicateImageError(image.guid) from err
            raise unavailable(err, self._target) from err
        except RepositoryUnavailableError as err:
            if not sent:
                raise  # no connection was had: nothing can have been written
            # The connection died with the INSERT sent: it may have committed (the answer was
            # lost), or still be running on the server (a KILL closes the socket first).
            return await self._settle_lost_insert(image, row, insert, lost=err)
        return ROWS.row_to_image({**row, "id": new_id})

    async def _settle_lost_insert(
        self,
        image: NewImage,
        row: dict[str, Any],
        insert: Callable[[Any], Awaitable[int]],
        *,
        lost: Exception,
    ) -> ImageRecord:
        """Learn the fate of an INSERT whose answer was lost, by inserting the same row again.

        InnoDB makes the second INSERT wait on the GUID's unique key until the first one has
        committed or rolled back: a duplicate key then means our row is there, success means it
        was not. If even that cannot be learnt, the caller must not assume the row is absent.
        """
        try:
            new_id = await self._run(insert, retry_lost=False)
        except pymysql.err.IntegrityError as err:
            if error_number(err) != ER.DUP_ENTRY:
                raise unavailable(err, self._target) from err
            try:
                rows = await self._fetch(_SELECT + " WHERE guid = %(guid)s", {"guid": row["guid"]})
            except RepositoryUnavailableError as fetch_err:
                raise RecordOutcomeUnknownError(image.guid, fetch_err.reason) from lost
            if not rows or rows[0]["sha256"] != row["sha256"]:
                raise DuplicateImageError(image.guid) from err
            log.warning("the insert of %s committed although its connection was lost", image.guid)
            return ROWS.row_to_image(rows[0])
        except RepositoryUnavailableError as err:
            raise RecordOutcomeUnknownError(image.guid, err.reason) from lost
        log.warning("the insert of %s was lost with its connection, and is now done", image.guid)
        return ROWS.row_to_image({**row, "id": new_id})

    async def get(self, guid: UUID) -> ImageRecord:
        """The record with this GUID."""
        rows = await self._fetch(_SELECT + " WHERE guid = %(guid)s", {"guid": str(guid)})
        if not rows:
            raise ImageNotFoundError(guid)
        return ROWS.row_to_image(rows[0])

    async def delete(self, guid: UUID) -> bool:
        """Delete the record."""
        deleted = await self._execute(
            "DELETE FROM images WHERE guid = %(guid)s", {"guid": str(guid)}, retry_lost=True
        )
        return deleted > 0

    async def list_page(
        self, *, limit: int, after: PageKey | None = None, filters: ImageFilter | None = None
    ) -> list[ImageRecord]:
        """Newest first by (created_at, guid), keyset-paged, of the records that pass `filters`."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params |= {"created_at": _to_db_time(after.created_at), "guid": str(after.guid)}
        conditions = ["(" + _AFTER.removeprefix(" WHERE ") + ")"] if after is not None else []
        words: tuple[str, ...] = ()
        if filters is not None:
            if filters.words is not None and not filters.words:
                return []
            words = filters.words or ()
            given = {
                "generator": filters.generator,
                "model": filters.model,
                "owner": filters.owner,
                "created_after": _to_db_time(filters.created_after) if filters.created_after else None,
                "created_before": _to_db_time(filters.created_before) if filters.created_before else None,
            }
            for name, value in given.items():
                if value is not None:
                    conditions.append(_FILTERS[name])
                    params[name] = value
        if not words:
            where = " WHERE " + " AND ".join(conditions) if conditions else ""
            rows = await self._fetch(_SELECT + where + _NEWEST_FIRST, params)
        else:
            rows = await self._search(words, conditions, params)
        return [ROWS.row_to_image(row) for row in rows]

    async def _search(
        self, words: tuple[str, ...], conditions: list[str], params: dict[str, Any]
    ) -> list[Row]:
        """A search page by whichever of two plans answers it cheaply; both give the same rows.

        First the walk: the newest-first index (or a filter's), each term a whole token of
        search_words, stopped after `search_walk_rows` rows examined. A full page, or a short one
        that ran to the end, is the answer; a walk that ran out of budget (a rare word) leaves it
        to the FULLTEXT index, whose cost is the number of matches, and that is small then.
        """
        full_text = _SELECT + " WHERE " + " AND ".join([*conditions, _FILTERS["words"]]) + _NEWEST_FIRST
        full_text_params = params | {"words": boolean_match(words)}
        walk_sql = ""
        walk_params: dict[str, Any] = {}
        if self._search_walk_rows > 0 and len(words) <= len(_WALK_TERMS):
            walk_conditions = [*conditions, *_WALK_TERMS[: len(words)]]
            walk_sql = _SELECT + " WHERE " + " AND ".join(walk_conditions) + _NEWEST_FIRST + _WALK_BUDGET
            walk_params = params | {"budget": self._search_walk_rows}
            walk_params |= {"t" + str(i): _token_pattern(term) for i, term in enumerate(words)}

        async def search(cursor: Any) -> list[Row]:
            if walk_sql:
                try:
                    await cursor.execute(walk_sql, walk_params)
                except pymysql.err.MySQLError as err:
                    # A plan that sorts (rather than reading an index in order) cannot stop with a
                    # partial answer: the server aborts the sort at the budget instead.
                    if error_number(err) != ER.FILSORT_ABORT:
                        raise
                else:
                    rows = list(await cursor.fetchall())
                    if len(rows) >= params["limit"]:
                        return rows
                    # At the budget the server ends the walk with what it found, and a warning.
                    await cursor.execute("SHOW WARNINGS")
                    warnings = await cursor.fetchall()
                    if not any(int(w["Code"]) == _ROWS_EXAMINED_EXCEEDED for w in warnings):
                        return rows  # the walk saw every candidate row: nothing more matches
            await cursor.execute(full_text, full_text_params)
            return list(await cursor.fetchall())

        return await self._run(search, retry_lost=True)

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Every record's (guid, filename)."""
        rows = await self._fetch("SELECT guid, filename FROM images", {})
        return [(UUID(row["guid"]), row["filename"]) for row in rows]

    async def ping(self) -> None:
        """Run a trivial query (opening the pool, and creating the schema if that is pending)."""
        await self._fetch("SELECT 1 AS ok", {})

    async def close(self) -> None:
        """Close the pool; a later call opens a new one."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.close()
        try:
            async with asyncio.timeout(5):
                await pool.wait_closed()
        except TimeoutError:
            pool.terminate()  # connections still checked out after 5s: cut them
