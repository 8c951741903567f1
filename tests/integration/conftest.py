"""Fixtures shared by the integration tests: a moto S3 server and a MariaDB database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
