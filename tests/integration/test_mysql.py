"""The MySQL repository against a real MariaDB: schema set-up, the real server, and faults."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore
from pixyproxy.adapters.mysql import SCHEMA_VERSION, MySqlImageRepository, init_schema, parse_mysql_url
from pixyproxy.adapters.mysql.connection import quote_identifier
from pixyproxy.domain.exceptions import RepositoryUnavailableError
from pixyproxy.entrypoints.container import build_container
from pixyproxy.entrypoints.http.app import create_app
from tests.support.builders import new_image
from tests.support.mysql import (
    admin_connection,
    connection_ids,
    fresh_mysql_repository,
    kill_connections,
    url_for,
)
from tests.support.real_parts import free_port
from tests.support.server import running_server

pytestmark = pytest.mark.mysql

PROBLEM = "application/problem+json"


def _database(url: str) -> str:
    return parse_mysql_url(url).database


def _query(database: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with admin_connection(database) as admin, admin.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


# --- schema set-up -------------------------------------------------------------------------------


async def test_schema_creation_is_idempotent_and_versioned(mysql_url: str) -> None:
    database = _database(mysql_url)
    assert await init_schema(mysql_url) == SCHEMA_VERSION  # creates the database too
    assert await init_schema(mysql_url) == SCHEMA_VERSION  # and again changes nothing

    versions = _query(database, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]  # each applied once
    tables = {row[0] for row in _query(database, "SHOW TABLES")}
    assert tables == {"images", "jobs", "schema_version", "webhook_deliveries"}
    job_columns = {
        row[0]: row[1:]
        for row in _query(
            database,
            "SELECT COLUMN_NAME, IS_NULLABLE, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = 'jobs'",
            {"db": database},
        )
    }
    assert job_columns["webhook"] == ("YES", "utf8mb4")
    assert job_columns["webhook_events"][0] == "YES"
    delivery_indexes = _query(
        database,
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %(db)s"
        " AND TABLE_NAME = 'webhook_deliveries' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        {"db": database},
    )
    assert delivery_indexes == [
        ("PRIMARY", "id"),
        ("webhook_deliveries_by_job", "job_id"),
        ("webhook_deliveries_by_job", "created_at"),
        ("webhook_deliveries_due", "status"),
        ("webhook_deliveries_due", "next_attempt_at"),
    ]
    index = _query(
        database,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %(db)s"
        " AND TABLE_NAME = 'images' AND INDEX_NAME = 'images_newest_first' ORDER BY SEQ_IN_INDEX",
        {"db": database},
    )
    assert [row[0] for row in index] == ["created_at", "guid"]
    charsets = dict(
        _query(
            database,
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %(db)s AND TABLE_NAME = 'images'",
            {"db": database},
        )
    )
    assert charsets["prompt"] == "utf8mb4"
    assert charsets["guid"] == "ascii"


@pytest.mark.parametrize(
    "prompt",
    ["a fox 🦊 on ❄️ with 🧪 and 漢字", "🦊" * 4000, "é" * 4000 + "   "],
    ids=["emoji", "4000-emoji", "4000-accented-trailing-spaces"],
)
async def test_long_and_four_byte_prompts_round_trip(prompt: str) -> None:
    async with fresh_mysql_repository() as repository:
        image = new_image(prompt=prompt)
        await repository.add(image)
        assert (await repository.get(image.guid)).prompt == prompt
        assert [r.prompt for r in await repository.list_page(limit=1)] == [prompt]


async def test_init_schema_at_first_use_when_configured(mysql_url: str) -> None:
    repository = MySqlImageRepository(mysql_url, init_schema=True)
    try:
        image = new_image()
        await repository.add(image)  # no explicit set-up: the first use creates the schema
        assert (await repository.get(image.guid)).guid == image.guid
    finally:
        await repository.close()
    assert _query(_database(mysql_url), "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_url_encoded_password_is_decoded_and_never_shown(mysql_url: str) -> None:
    password = "p@ss:w/rd%?#"
    user = "pixy_test_user"
    with admin_connection() as admin, admin.cursor() as cursor:
        database = _database(mysql_url)
        cursor.execute(
            "CREATE USER IF NOT EXISTS %(user)s@'%%' IDENTIFIED BY %(pw)s", {"user": user, "pw": password}
        )
        cursor.execute("CREATE DATABASE " + quote_identifier(database))
        cursor.execute("GRANT ALL ON " + quote_identifier(database) + ".* TO %(user)s@'%%'", {"user": user})
        try:
            target = parse_mysql_url(mysql_url)
            good = f"mysql://{user}:{quote(password, safe='')}@{target.host}:{target.port}/{database}"
            await init_schema(good)
            repository = MySqlImageRepository(good)
            try:
                await repository.ping()
                assert password not in repr(repository)
            finally:
                await repository.close()

            wrong = "wrong-" + password
            bad = f"mysql://{user}:{quote(wrong, safe='')}@{target.host}:{target.port}/{database}"
            with pytest.raises(RepositoryUnavailableError) as caught:
                await MySqlImageRepository(bad).ping()
            assert wrong not in str(caught.value)
            assert quote(wrong, safe="") not in str(caught.value)
        finally:
            cursor.execute("DROP USER IF EXISTS %(user)s@'%%'", {"user": user})


def test_init_db_command_creates_the_schema(mysql_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PIXYPROXY_REPOSITORY": "mysql",
        "PIXYPROXY_MYSQL_URL": mysql_url,
        "PIXYPROXY_INIT_SCHEMA": "false",  # init-db creates it regardless
        "PIXYPROXY_DATA_DIR": str(tmp_path),
    }
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pixyproxy.entrypoints.cli", "init-db"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"schema ready (mysql, schema version {SCHEMA_VERSION})" in done.stdout
    assert _query(_database(mysql_url), "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]


# --- the whole server ----------------------------------------------------------------------------


def test_server_on_mysql_serves_all_four_endpoints(mysql_url: str, tmp_path: Path) -> None:
    env = {
        "PIXYPROXY_REPOSITORY": "mysql",
        "PIXYPROXY_MYSQL_URL": mysql_url,
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),
        "PIXYPROXY_PROCEDURAL_SIZE": "64x64",
    }
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        created = client.post("/image", json={"prompt": "a red fox in snow 🦊"})
        assert created.status_code == 201, created.text
        detail = created.json()
        assert created.headers["location"] == f"/image/{detail['guid']}"

        assert client.get(f"/image/{detail['guid']}").json() == detail
        assert [d["guid"] for d in client.get("/image").json()] == [detail["guid"]]

        content = client.get(f"/image/{detail['guid']}/content")
        assert content.status_code == 200
        assert content.headers["content-type"] == "image/png"
        assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
    # The start-up created the schema, and the row is really in MariaDB.
    rows = _query(_database(mysql_url), "SELECT guid, prompt FROM images")
    assert rows == [(detail["guid"], "a red fox in snow 🦊")]


# --- faults, driven in-process through the ASGI app ----------------------------------------------


@asynccontextmanager
async def _app_client(monkeypatch: pytest.MonkeyPatch, url: str) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "mysql")
    monkeypatch.setenv("PIXYPROXY_MYSQL_URL", url)
    monkeypatch.setenv("PIXYPROXY_BLOB_STORE", "memory")
    monkeypatch.setenv("PIXYPROXY_GENERATOR", "memory")
    monkeypatch.setenv("PIXYPROXY_MYSQL_CONNECT_TIMEOUT_S", "2")
    app = create_app(build_container())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pixyproxy") as client,
    ):
        client.app = app  # type: ignore[attr-defined]  # so tests can reach the container
        yield client


def _blobs(client: httpx.AsyncClient) -> InMemoryBlobStore:
    store = client.app.state.container.selected_blob_store()  # type: ignore[attr-defined]
    assert isinstance(store, InMemoryBlobStore)
    return store


def _assert_problem(response: httpx.Response, status: int, *secrets: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["request_id"]
    for secret in secrets:
        assert secret not in response.text
    for leak in ("SELECT", "INSERT", "pymysql", "Traceback"):
        assert leak not in response.text


def _inserting(database: str) -> list[int]:
    """Ids of the connections running an INSERT INTO images on `database`."""
    rows = _query(
        database,
        "SELECT ID FROM information_schema.PROCESSLIST"
        " WHERE DB = %(db)s AND INFO LIKE 'INSERT INTO images%%'",
        {"db": database},
    )
    return [int(row[0]) for row in rows]


async def _wait_until_blocked(database: str) -> int:
    """The id of our connection once it waits on the table lock the admin holds."""
    while not (ids := _inserting(database)):
        await asyncio.sleep(0.02)
    return ids[0]


def _kill(connection_id: int) -> None:
    with admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("KILL %(id)s", {"id": connection_id})


async def _wait_until_gone(database: str, connection_id: int) -> None:
    """Until the server has finished off a killed INSERT (so unlocking cannot let it through)."""
    while connection_id in _inserting(database):
        await asyncio.sleep(0.02)


async def test_killed_connections_answer_503_then_recover(
    mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = _database(mysql_url)
    async with _app_client(monkeypatch, mysql_url) as client:
        first = await client.post("/image", json={"prompt": "before the fault"})
        assert first.status_code == 201, first.text

        # A connection killed in the middle of an INSERT, and the INSERT that the adapter sends
        # again to learn the first one's fate killed too: the request must fail cleanly ...
        with admin_connection(database) as locker, locker.cursor() as cursor:
            cursor.execute("LOCK TABLES images WRITE")
            request = asyncio.create_task(client.post("/image", json={"prompt": "killed mid-insert"}))
            for _ in range(2):
                victim = await _wait_until_blocked(database)
                _kill(victim)
                await _wait_until_gone(database, victim)
            killed = await request
            cursor.execute("UNLOCK TABLES")
        _assert_problem(killed, 503)
        # ... and, since no one can tell whether its record was written, its bytes are kept for gc.
        assert len(_blobs(client).blobs) == 2
        assert [d["prompt"] for d in (await client.get("/image")).json()] == ["before the fault"]

        # Killed once only: the INSERT sent again settles it, and the request succeeds.
        with admin_connection(database) as locker, locker.cursor() as cursor:
            cursor.execute("LOCK TABLES images WRITE")
            request = asyncio.create_task(client.post("/image", json={"prompt": "killed once"}))
            victim = await _wait_until_blocked(database)
            _kill(victim)
            await _wait_until_gone(database, victim)
            cursor.execute("UNLOCK TABLES")
            settled = await request
        assert settled.status_code == 201, settled.text
        assert settled.json()["filename"] in _blobs(client).blobs

        # The failed connection did not poison the pool: the next request works.
        assert (await client.get("/image")).status_code == 200

        # Every idle pooled connection killed: the next call reconnects or answers 503 ...
        assert kill_connections(database) >= 1
        after_kill = await client.get("/image")
        if after_kill.status_code != 200:
            _assert_problem(after_kill, 503)
        # ... and the following ones work, without restarting anything.
        listed = await client.get("/image")
        assert listed.status_code == 200, listed.text
        assert [d["prompt"] for d in listed.json()] == ["killed once", "before the fault"]
        again = await client.post("/image", json={"prompt": "after the fault"})
        assert again.status_code == 201, again.text
        assert (await client.get(f"/image/{again.json()['guid']}")).status_code == 200
    # The lifespan closed the pool (the server notices the closed sockets a moment later).
    for _ in range(250):
        if not connection_ids(database):
            break
        await asyncio.sleep(0.02)
    assert connection_ids(database) == []


async def test_a_killed_connection_frees_its_pool_slot_for_waiters(mysql_url: str) -> None:
    database = _database(mysql_url)
    await init_schema(mysql_url)
    repository = MySqlImageRepository(mysql_url, pool_size=1, acquire_timeout_s=60)
    try:
        with admin_connection(database) as locker, locker.cursor() as cursor:
            cursor.execute("LOCK TABLES images WRITE")
            adds = [asyncio.create_task(repository.add(new_image())) for _ in range(3)]
            victim = await _wait_until_blocked(database)  # it holds the only slot; two wait for it
            _kill(victim)
            await _wait_until_gone(database, victim)
            cursor.execute("UNLOCK TABLES")
        # A hang here (until the pytest timeout) would mean the waiters never learnt of the slot.
        results = await asyncio.gather(*adds, return_exceptions=True)
        # The killed INSERT was sent again (to learn its fate) once a slot was free: all three land.
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len(await repository.list_page(limit=10)) == 3
    finally:
        await repository.close()


async def test_unreachable_database_answers_503_and_stores_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = "never-show-this-secret"
    url = f"mysql://pixy:{password}@127.0.0.1:{free_port()}/pixyproxy_nowhere"
    caplog.set_level(logging.DEBUG)
    async with _app_client(monkeypatch, url) as client:  # starts: the database may come later
        listed = await client.get("/image")
        _assert_problem(listed, 503, password)
        created = await client.post("/image", json={"prompt": "nowhere to go"})
        _assert_problem(created, 503, password)
        one = await client.get("/image/0b5a4d5e-8a5a-4f8e-9d4b-3f3b1f1b2c3d")
        _assert_problem(one, 503, password)
        assert _blobs(client).blobs == {}
    assert password not in caplog.text


async def test_database_that_appears_later_is_used_without_restart(
    mysql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = parse_mysql_url(mysql_url)
    port = free_port()
    # Nothing listens on this port yet: start-up logs a warning and carries on.
    proxied = url_for(target.database).replace(f":{target.port}/", f":{port}/")
    async with _app_client(monkeypatch, proxied) as client:
        _assert_problem(await client.get("/image"), 503)
        server = await asyncio.start_server(_forward_to(target.host, target.port), "127.0.0.1", port)
        try:
            # The database "comes back": the schema is created on first use and requests succeed.
            created = await client.post("/image", json={"prompt": "the database is back"})
            assert created.status_code == 201, created.text
            assert [d["guid"] for d in (await client.get("/image")).json()] == [created.json()["guid"]]
        finally:
            server.close()
            await server.wait_closed()


def _forward_to(host: str, port: int) -> Any:
    """A tiny TCP forwarder: the MariaDB server appearing on a port where nothing listened."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    return handle
