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
from pixyproxy.domain.exceptions import RepositoryUnavailableError

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
            return await _migrate(connection, target)
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
