"""An embedded database written before webhooks existed gains the new jobs columns when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import UUID, uuid4

from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.adapters.sqlite_jobs import SqliteJobRepository
from pixyproxy.adapters.sqlite_webhooks import SqliteWebhookDeliveries
from pixyproxy.domain.models import JobStatus, NewJob
from tests.support.builders import BASE_TIME

# The jobs table as released before webhooks.
OLD_JOBS = """
CREATE TABLE jobs (
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
"""


def _old_database(path: Path) -> str:
    """A file with the old jobs table and one job in it; that job's id."""
    job_id = str(uuid4())
    with sqlite3.connect(path) as db:
        db.executescript(OLD_JOBS)
        db.execute(
            "INSERT INTO jobs (id, prompt, status, created_at) VALUES (:id, 'old', 'queued', :at)",
            {"id": job_id, "at": "2026-01-02T03:04:05.000000Z"},
        )
    db.close()
    return job_id


def _columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        names = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    db.close()
    return names


async def test_an_old_jobs_table_gains_the_webhook_owner_and_outbox_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old_id = _old_database(path)
    database = SqliteImageRepository(path)
    try:
        jobs = SqliteJobRepository(database)
        old = await jobs.get(UUID(old_id))
        assert (old.prompt, old.webhook, old.webhook_events_filter) == ("old", None, ("completed",))
        assert old.owner == "anonymous"  # rows from before owners belong to nobody's key
        new = NewJob(
            id=uuid4(),
            prompt="new",
            size=None,
            created_at=BASE_TIME,
            webhook="https://example.com/hook",
            webhook_events_filter=("start",),
        )
        stored, created = await jobs.add(new)
        assert created
        assert (stored.status, stored.webhook, stored.webhook_events_filter) == (
            JobStatus.QUEUED,
            "https://example.com/hook",
            ("start",),
        )
        assert await SqliteWebhookDeliveries(database).list_for_job(new.id) == []
    finally:
        await database.close()
    assert _columns(path)[-4:] == ["webhook", "webhook_events", "owner", "events_pending"]


async def test_opening_an_upgraded_file_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _old_database(path)
    for _ in range(3):
        database = SqliteImageRepository(path)
        try:
            await database.ping()
        finally:
            await database.close()
        assert _columns(path).count("webhook") == 1
        assert _columns(path).count("webhook_events") == 1
