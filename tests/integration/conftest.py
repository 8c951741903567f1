"""Fixtures shared by the integration tests: a moto S3 server and a MariaDB database per test, and
the session's end check that no secret given to a PixyProxy process reached its log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import secrets_watch
from tests.support.moto_server import MotoServer, moto_server
from tests.support.mysql import fresh_database_url


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto S3 server of this test's own, so it can be stopped and restarted."""
    with moto_server(tmp_path / "moto.log") as server:
        yield server


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database, dropped afterwards."""
    with fresh_database_url() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log() -> Iterator[None]:
    """After every integration test has run: no API key, upstream key or webhook secret a server or
    worker was started with appears anywhere in its log (tests/support/secrets_watch.py)."""
    yield
    leaks = secrets_watch.leaks()
    assert not leaks, f"secrets in {len(leaks)} of {secrets_watch.watched_logs()} logs:\n" + "\n".join(leaks)
