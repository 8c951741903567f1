"""A fresh, uniquely named MariaDB/MySQL database per test, on the server PIXYPROXY_TEST_MYSQL_URL names."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pymysql

from pixyproxy.adapters.mysql import MySqlImageRepository, init_schema, parse_mysql_url
from pixyproxy.adapters.mysql.connection import quote_identifier
from tests.support.real_parts import missing_real_part

DEFAULT_TEST_URL = "mysql://root@127.0.0.1:3306/pixyproxy_test"
HOW_TO_START = "start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"


def server_url() -> str:
    """The test server's URL (its database part is only a prefix for the fresh ones)."""
    return os.environ.get("PIXYPROXY_TEST_MYSQL_URL", DEFAULT_TEST_URL)


def admin_connection(database: str | None = None) -> pymysql.Connection[Any]:
    """A plain blocking connection to the test server; skips (fails in CI) when it does not answer."""
    target = parse_mysql_url(server_url())
    try:
        return pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=3,
        )
    except pymysql.err.OperationalError:
        missing_real_part(f"MariaDB at {target.host}:{target.port}", HOW_TO_START)


def url_for(database: str) -> str:
    """The test server's URL, pointed at another database."""
    return urlsplit(server_url())._replace(path="/" + database).geturl()


@contextmanager
def fresh_database_url() -> Iterator[str]:
    """The URL of a database name no one uses yet (not created: init_schema does that); dropped after."""
    prefix = parse_mysql_url(server_url()).database
    name = f"{prefix}_{uuid4().hex[:12]}"
    admin_connection().close()  # skip now, before the test runs, if the server is down
    try:
        yield url_for(name)
    finally:
        with admin_connection() as admin, admin.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS " + quote_identifier(name))


@asynccontextmanager
async def fresh_mysql_repository(**kwargs: Any) -> AsyncIterator[MySqlImageRepository]:
    """A repository on a fresh database with the schema in place; closed and dropped afterwards."""
    with fresh_database_url() as url:
        await init_schema(url)
        repository = MySqlImageRepository(url, **kwargs)
        try:
            yield repository
        finally:
            await repository.close()


def connection_ids(database: str) -> list[int]:
    """The server's ids of every connection currently using `database`, other than ours."""
    with admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %(db)s", {"db": database})
        return [int(row[0]) for row in cursor.fetchall()]


def kill_connections(database: str) -> int:
    """KILL every connection using `database` (as an admin would); return how many."""
    ids = connection_ids(database)
    with admin_connection() as admin, admin.cursor() as cursor:
        for thread_id in ids:
            with suppress(pymysql.err.OperationalError):  # it went away by itself meanwhile
                cursor.execute("KILL %(id)s", {"id": thread_id})
    return len(ids)
