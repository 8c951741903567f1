"""Idempotent schema set-up for the MySQL repository: the database, the tables, a schema version.

Run by `pixyproxy init-db`, and at start-up when `repository.init_schema` is true. Every step is
safe to repeat; concurrent runs (several workers starting at once) serialise on a named lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiomysql
import pymysql

from pixyproxy.adapters.mysql.connection import (
    MySqlTarget,
    error_number,
    parse_mysql_url,
    quote_identifier,
    unavailable,
)
from pixyproxy.adapters.search_index import search_columns
from pixyproxy.domain.exceptions import RepositoryUnavailableError
from pixyproxy.domain.models import GenerationInfo

log = logging.getLogger(__name__)

_UNKNOWN_DATABASE = 1049
_LOCK_WAIT_S = 30


@dataclass(frozen=True)
class Migration:
    """One schema version: the statements that bring the previous version to it."""

    version: int
    description: str
    statements: tuple[str, ...]


# Append new versions; never edit a released one. Statements must be idempotent (IF NOT EXISTS),
# because MySQL DDL commits as it goes and a crash can leave a version half applied.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "images and idempotency keys",
        (
            """CREATE TABLE IF NOT EXISTS images (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                guid CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                prompt TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                filename VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                content_type VARCHAR(100) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                size_bytes BIGINT UNSIGNED NOT NULL,
                sha256 CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                generation JSON NOT NULL,
                created_at DATETIME(6) NOT NULL COMMENT 'UTC',
                updated_at DATETIME(6) NOT NULL COMMENT 'UTC',
                UNIQUE KEY images_guid (guid),
                KEY images_newest_first (created_at, guid)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
            # The key is compared byte for byte: VARBINARY, because MySQL's *_bin collations
            # ignore trailing spaces and 'k' and 'k ' would then be one key. 1,020 bytes hold
            # the 255 characters the service accepts, in UTF-8.
            """CREATE TABLE IF NOT EXISTS idempotency_keys (
                idem_key VARBINARY(1020) NOT NULL PRIMARY KEY,
                request_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                guid CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
                created_at DATETIME(6) NOT NULL COMMENT 'UTC',
                KEY idempotency_keys_created (created_at)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        ),
    ),
    Migration(
        2,
        "generation jobs, which hold the idempotency keys now",
        (
            # The indexes are declared inside CREATE TABLE: MySQL (unlike MariaDB) has no
            # CREATE INDEX IF NOT EXISTS, and this way the statement stays safe to repeat.
            # idem_key is VARBINARY, compared byte for byte: MySQL's *_bin collations ignore
            # trailing spaces, and 'k' and 'k ' would then be one key.
            # (status, created_at, id) serves a listing of one status and the oldest-first sweeps
            # of unfinished jobs; (status, published) finds queued jobs whose message never went out.
            """CREATE TABLE IF NOT EXISTS jobs (
                id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                prompt TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                size VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                attempts INT UNSIGNED NOT NULL DEFAULT 0,
                created_at DATETIME(6) NOT NULL COMMENT 'UTC',
                started_at DATETIME(6) NULL COMMENT 'UTC',
                finished_at DATETIME(6) NULL COMMENT 'UTC',
                lease_until DATETIME(6) NULL COMMENT 'UTC',
                cancel_requested TINYINT(1) NOT NULL DEFAULT 0,
                published TINYINT(1) NOT NULL DEFAULT 0,
                image_guid CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
                error JSON NULL,
                idem_key VARBINARY(1020) NULL,
                request_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
                UNIQUE KEY jobs_idem_key (idem_key),
                KEY jobs_newest_first (created_at, id),
                KEY jobs_by_status (status, created_at, id),
                KEY jobs_unpublished (status, published)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
            # A key claimed before this version only guarded a synchronous request, long answered.
            "DROP TABLE IF EXISTS idempotency_keys",
        ),
    ),
    Migration(
        3,
        "webhooks: a job's webhook and event filter, and the deliveries",
        (
            # ADD COLUMN IF NOT EXISTS is MariaDB's (10.0.2+); MySQL has no such clause.
            # webhook_events is the filter as a JSON list; NULL means the default, ["completed"].
            """ALTER TABLE jobs
                ADD COLUMN IF NOT EXISTS webhook TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                ADD COLUMN IF NOT EXISTS webhook_events JSON NULL""",
            # (status, next_attempt_at) finds the due pending ones (InnoDB appends the id, the order
            # claim_due hands them out in); (job_id, created_at) lists one job's, oldest first.
            # No foreign key to jobs: a job may be purged before its deliveries are.
            """CREATE TABLE IF NOT EXISTS webhook_deliveries (
                id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                job_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                event VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                url TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                attempts INT UNSIGNED NOT NULL DEFAULT 0,
                last_status TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                created_at DATETIME(6) NOT NULL COMMENT 'UTC',
                next_attempt_at DATETIME(6) NOT NULL COMMENT 'UTC',
                last_attempt_at DATETIME(6) NULL COMMENT 'UTC',
                lease_until DATETIME(6) NULL COMMENT 'UTC',
                KEY webhook_deliveries_due (status, next_attempt_at),
                KEY webhook_deliveries_by_job (job_id, created_at)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        ),
    ),
    Migration(
        4,
        "search and filters: generator, model and the prompt's index words, with their indexes",
        (
            # search_words holds adapters.search_index words (ASCII, 3 to 61 characters each), so
            # InnoDB's FULLTEXT parser indexes the bigrams of CJK and Thai text as it does words.
            # generator IS NULL marks a row written before this version: _fill_search_columns fills it.
            """ALTER TABLE images
              ADD COLUMN IF NOT EXISTS generator VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
              ADD COLUMN IF NOT EXISTS model VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
              ADD COLUMN IF NOT EXISTS search_words MEDIUMTEXT CHARACTER SET ascii COLLATE ascii_bin NULL""",
            "ALTER TABLE images ADD INDEX IF NOT EXISTS images_by_generator (generator, created_at, guid)",
            "ALTER TABLE images ADD INDEX IF NOT EXISTS images_by_model (model, created_at, guid)",
            "ALTER TABLE images ADD FULLTEXT INDEX IF NOT EXISTS images_search (search_words)",
        ),
    ),
    Migration(
        5,
        "owners: the API key name that made each image and job, with an index for an owner's pages",
        (
            # Rows from before keys had names belong to `anonymous`, as requests without a key do.
            """ALTER TABLE images ADD COLUMN IF NOT EXISTS
                owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT 'anonymous'""",
            """ALTER TABLE jobs ADD COLUMN IF NOT EXISTS
                owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT 'anonymous'""",
            "ALTER TABLE images ADD INDEX IF NOT EXISTS images_by_owner (owner, created_at, guid)",
            "ALTER TABLE jobs ADD INDEX IF NOT EXISTS jobs_by_owner (owner, created_at, id)",
        ),
    ),
    Migration(
        6,
        "outbox flag: set when a webhook job finishes, cleared once its event's delivery is written",
        (
            "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS events_pending BOOLEAN NOT NULL DEFAULT 0",
            "ALTER TABLE jobs ADD INDEX IF NOT EXISTS jobs_events_pending (events_pending, finished_at, id)",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INT UNSIGNED NOT NULL PRIMARY KEY,
    description VARCHAR(255) NOT NULL,
    applied_at DATETIME(6) NOT NULL COMMENT 'UTC'
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


async def init_schema(url: str | MySqlTarget, *, connect_timeout_s: float = 5.0) -> int:
    """Create the database and tables if missing, apply pending versions; return the schema version.

    Raises ConfigurationError for a bad URL and RepositoryUnavailableError when MySQL fails.
    """
    target = url if isinstance(url, MySqlTarget) else parse_mysql_url(url)
    try:
        connection = await _connect_creating_database(target, connect_timeout_s)
        try:
            version = await _migrate(connection, target)
            await _fill_search_columns(connection)
            return version
        finally:
            connection.close()
    except (pymysql.err.MySQLError, OSError) as err:
        raise unavailable(err, target) from err


async def _connect_creating_database(target: MySqlTarget, timeout_s: float) -> aiomysql.Connection:
    """A connection to the target database, creating the database first if it does not exist."""
    try:
        return await aiomysql.connect(**target.connect_kwargs(connect_timeout_s=timeout_s))
    except pymysql.err.OperationalError as err:
        if error_number(err) != _UNKNOWN_DATABASE:
            raise
    # Only now ask for CREATE DATABASE: a user with rights on an existing database needs no more.
    server = await aiomysql.connect(**target.connect_kwargs(connect_timeout_s=timeout_s, with_database=False))
    try:
        async with server.cursor() as cursor:
            await cursor.execute(
                "CREATE DATABASE IF NOT EXISTS "
                + quote_identifier(target.database)
                + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
    finally:
        server.close()
    log.info("created MySQL database %s", target.describe())
    return await aiomysql.connect(**target.connect_kwargs(connect_timeout_s=timeout_s))


async def _migrate(connection: aiomysql.Connection, target: MySqlTarget) -> int:
    async with connection.cursor() as cursor:
        # "Table already exists" notes are the expected answer to IF NOT EXISTS on a second run.
        await cursor.execute("SET SESSION sql_notes = 0")
        # One migrator per database at a time; the lock dies with the connection if we crash.
        await cursor.execute(
            "SELECT GET_LOCK(CONCAT('pixyproxy.schema.', DATABASE()), %(wait)s)", {"wait": _LOCK_WAIT_S}
        )
        (locked,) = await cursor.fetchone()
        if locked != 1:
            raise RepositoryUnavailableError(
                f"another process held the schema lock of {target.describe()} for {_LOCK_WAIT_S}s"
            )
        try:
            await cursor.execute(_VERSION_TABLE)
            await cursor.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            (current,) = await cursor.fetchone()
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    await cursor.execute(statement)
                await cursor.execute(
                    "INSERT INTO schema_version (version, description, applied_at)"
                    " VALUES (%(version)s, %(description)s, UTC_TIMESTAMP(6))",
                    {"version": migration.version, "description": migration.description},
                )
                log.info(
                    "MySQL schema of %s is now version %d: %s",
                    target.describe(),
                    migration.version,
                    migration.description,
                )
                current = migration.version
        finally:
            await cursor.execute("SELECT RELEASE_LOCK(CONCAT('pixyproxy.schema.', DATABASE()))")
    return int(current)


async def _fill_search_columns(connection: aiomysql.Connection, *, batch: int = 500) -> None:
    """Fill the search and filter columns of rows written before schema version 4, a batch at a time.

    Found through the (generator, created_at, guid) index, so once every row is filled this is one
    index probe. Safe in two processes at once: both write the same values.
    """
    async with connection.cursor(aiomysql.DictCursor) as cursor:
        while True:
            await cursor.execute(
                "SELECT id, prompt, generation FROM images WHERE generator IS NULL LIMIT %(batch)s",
                {"batch": batch},
            )
            rows = await cursor.fetchall()
            for row in rows:
                generation = GenerationInfo.model_validate_json(row["generation"])
                await cursor.execute(
                    "UPDATE images SET generator = %(generator)s, model = %(model)s,"
                    " search_words = %(search_words)s WHERE id = %(id)s",
                    {"id": row["id"], **search_columns(row["prompt"], generation)},
                )
            await connection.commit()
            if len(rows) < batch:
                return
