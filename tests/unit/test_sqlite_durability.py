"""The embedded SQLite file's journal settings: WAL, synced at checkpoints rather than at every commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.container import build_container
from tests.support.builders import new_image

SYNCHRONOUS_NORMAL, SYNCHRONOUS_FULL = 1, 2  # what PRAGMA synchronous answers


async def test_the_connection_runs_wal_with_synchronous_normal(tmp_path: Path) -> None:
    repository = SqliteImageRepository(tmp_path / "db.sqlite3")
    try:
        journal = await repository.fetch("PRAGMA journal_mode", {})
        synchronous = await repository.fetch("PRAGMA synchronous", {})
    finally:
        await repository.close()
    assert journal[0][0] == "wal"
    assert synchronous[0][0] == SYNCHRONOUS_NORMAL


async def test_full_is_a_setting_for_power_loss_durability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXYPROXY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIXYPROXY_SQLITE_SYNCHRONOUS", "full")
    repository = build_container().selected_repository()
    assert isinstance(repository, SqliteImageRepository)
    try:
        synchronous = await repository.fetch("PRAGMA synchronous", {})
    finally:
        await repository.close()
    assert synchronous[0][0] == SYNCHRONOUS_FULL


def test_another_synchronous_value_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXYPROXY_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ConfigurationError) as refused:
        build_container()
    assert refused.value.setting == "PIXYPROXY_SQLITE_SYNCHRONOUS"


async def test_a_commit_is_in_the_file_for_another_connection_before_any_close(tmp_path: Path) -> None:
    # A process killed after a commit leaves it in the WAL: another connection (a restarted
    # server) reads it, with no checkpoint and no close in between.
    path = tmp_path / "db.sqlite3"
    repository = SqliteImageRepository(path)
    try:
        record = await repository.add(new_image())
        with sqlite3.connect(path) as other:
            found = other.execute("SELECT guid FROM images WHERE guid = ?", (str(record.guid),)).fetchall()
    finally:
        await repository.close()
    assert found == [(str(record.guid),)]
