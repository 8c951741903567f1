"""Faults under load: MariaDB connections killed and S3 stopped in the middle of a burst of POSTs.

Every answer must be a 201 or a 503 problem (never a 500, never a dropped connection); every
201 must be listed with its bytes; no record may point at missing bytes; and PixyProxy must
recover by itself once the fault is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest

from pixyproxy.adapters.mysql import parse_mysql_url
from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import MotoServer, moto_server, new_bucket_name
from tests.support.mysql import admin_connection
from tests.support.server import RunningServer, running_server
from tests.support.stack import (
    PREFIX,
    Burst,
    all_records,
    assert_logs_clean,
    assert_no_orphans,
    object_keys,
    post_burst,
    run_gc,
    stack_env,
)

pytestmark = [pytest.mark.mysql, pytest.mark.s3, pytest.mark.slow]

PROBLEM = "application/problem+json"


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The fake, answering normally after a short delay so a burst lasts long enough to be hit."""
    fake_openai.reset()
    fake_openai.set_mode("ok", delay_s=0.05)
    return fake_openai


def _assert_only_created_or_unavailable(burst: Burst, *, slug: str) -> None:
    """Every request was answered, with a 201 or a 503 problem of the expected kind."""
    assert burst.errors() == []
    assert set(burst.statuses()) <= {201, 503}
    for outcome in burst.outcomes:
        response = outcome.response
        assert response is not None
        if response.status_code == 503:
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert problem["status"] == 503
            assert problem["type"] == f"https://pixyproxy.dev/problems/{slug}"
            assert problem["request_id"]


def _assert_created_are_listed_with_bytes(
    server: RunningServer, burst: Burst, records: list[dict[str, Any]]
) -> None:
    listed = {r["guid"]: r for r in records}
    with server.client() as client:
        for detail in burst.created():
            assert detail["guid"] in listed
            content = client.get(f"/image/{detail['guid']}/content")
            assert content.status_code == 200
            assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]


def _kill_repeatedly(database: str, done: threading.Event, kills: list[int]) -> None:
    """KILL every connection on `database`, round after round, for 1.5 s at least and until `done`."""
    started = time.monotonic()
    with admin_connection() as admin, admin.cursor() as cursor:
        while time.monotonic() - started < 10 and (not done.is_set() or time.monotonic() - started < 1.5):
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %(db)s", {"db": database}
            )
            for (thread_id,) in cursor.fetchall():
                with contextlib.suppress(pymysql.err.OperationalError):  # it went away by itself meanwhile
                    cursor.execute("KILL %(id)s", {"id": thread_id})
                    kills.append(int(thread_id))
            time.sleep(0.005)


def test_killing_database_connections_mid_burst_loses_nothing(
    upstream: FakeOpenAI, moto: MotoServer, mysql_url: str, tmp_path: Path
) -> None:
    database = parse_mysql_url(mysql_url).database
    bucket = new_bucket_name()
    env = stack_env(mysql_url=mysql_url, moto=moto, bucket=bucket, data_dir=tmp_path / "data", fake=upstream)
    with running_server(env, tmp_path / "server.log") as server:
        kills: list[int] = []

        async def burst_under_kills() -> Burst:
            done = threading.Event()
            killer = asyncio.create_task(asyncio.to_thread(_kill_repeatedly, database, done, kills))
            await asyncio.sleep(0.2)  # let the pool fill first
            try:
                return await post_burst(server.base_url, count=100, concurrency=10)
            finally:
                done.set()
                await killer

        burst = asyncio.run(burst_under_kills())
        assert kills, "no connection was ever killed"
        _assert_only_created_or_unavailable(burst, slug="repository-unavailable")
        statuses = Counter(burst.statuses())
        assert statuses[201] > 0

        # The database is healthy again; without a restart, the next POST succeeds.
        with server.client() as client:
            after = client.post("/image", json={"prompt": "after the kills"})
            assert after.status_code == 201, after.text

        records = all_records(server.base_url)
        _assert_created_are_listed_with_bytes(server, burst, records)
        created = {d["guid"] for d in burst.created()} | {after.json()["guid"]}
        # A record the client never saw confirmed would be an INSERT that committed while its
        # connection died: its bytes must still be there (the checks below), so it is no loss.
        assert created <= {r["guid"] for r in records}
        assert_logs_clean(server.logs())
        logs = server.logs()

    report = run_gc(env)
    assert report["missing_blobs"] == []  # no record without bytes
    # Compensation deleted the bytes of every insert known to have failed. Bytes are kept only
    # where the insert's fate could not be learnt (the retry that settles it failed too): each
    # of those was logged, and gc reports exactly them.
    # (Some of those kept bytes do have their record: the insert had committed after all.)
    kept = set(re.findall(r"kept bytes (\S+): unknown whether their record was written", logs))
    orphans = set(report["orphan_blobs"])
    assert orphans <= kept
    assert len(object_keys(moto, bucket)) == len(records) + len(orphans)
    assert set(run_gc(env, "--delete", "--grace-minutes", "0")["deleted"]) == orphans
    assert_no_orphans(run_gc(env))


def test_stopping_s3_mid_burst_creates_no_record_and_recovers(
    upstream: FakeOpenAI, mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto keeps its buckets in memory; its request recorder, replayed after the restart, brings
    # back what was stored before the outage, as a real S3 would still have it.
    monkeypatch.setenv("MOTO_ENABLE_RECORDING", "true")
    monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(tmp_path / "moto-recording.jsonl"))
    with moto_server(tmp_path / "moto.log") as moto:
        bucket = new_bucket_name()
        env = stack_env(
            mysql_url=mysql_url, moto=moto, bucket=bucket, data_dir=tmp_path / "data", fake=upstream
        )
        with running_server(env, tmp_path / "server.log") as server:
            stopped_at: list[int] = []

            def stop_s3_after_thirty(burst: Burst) -> None:
                if not stopped_at and len(burst.outcomes) >= 30:
                    stopped_at.append(len(burst.outcomes))
                    moto.stop()

            burst = asyncio.run(
                post_burst(server.base_url, count=100, concurrency=10, on_outcome=stop_s3_after_thirty)
            )
            assert stopped_at, "the burst ended before S3 was stopped"
            _assert_only_created_or_unavailable(burst, slug="blob-store-unavailable")
            statuses = Counter(burst.statuses())
            assert statuses[201] >= 30
            assert statuses[503] > 0  # the outage was really felt

            moto.start()  # the same port
            replayed = httpx.post(moto.endpoint_url + "/moto-api/recorder/replay-recording", timeout=60)
            assert replayed.status_code == 200

            # No record for any failed request: exactly one per 201.
            records = all_records(server.base_url)
            assert sorted(r["guid"] for r in records) == sorted(d["guid"] for d in burst.created())

            # S3 is back: without a restart, POST succeeds and everything listed is served.
            with server.client() as client:
                after = client.post("/image", json={"prompt": "after the outage"})
                assert after.status_code == 201, after.text
            records = all_records(server.base_url)
            _assert_created_are_listed_with_bytes(server, burst, records)
            assert_logs_clean(server.logs())

        report = run_gc(env)
        assert report["missing_blobs"] == []
        # A PUT that reached S3 just as it stopped, whose answer was lost, may leave bytes with no
        # record: gc reports exactly those, and nothing else is in the bucket.
        keys = set(object_keys(moto, bucket))
        recorded = {PREFIX + r["filename"] for r in records}
        assert recorded <= keys
        assert {PREFIX + key for key in report["orphan_blobs"]} == keys - recorded
