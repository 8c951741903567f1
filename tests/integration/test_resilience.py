"""Nothing lost, nothing doubled: idempotency, load and a crash on MariaDB + S3 + a fake OpenAI upstream.

Each test runs a real `pixyproxy serve` process against a fresh MariaDB database, its own moto S3
server and the fake OpenAI upstream, then reads back what was really stored: records through the
API, objects straight from S3, and `pixyproxy gc`'s report.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.server import RunningServer, running_server, start_server
from tests.support.stack import (
    PREFIX,
    Burst,
    all_records,
    assert_logs_clean,
    assert_no_orphans,
    object_keys,
    object_sha256s,
    post_burst,
    run_gc,
    stack_env,
)

pytestmark = [pytest.mark.mysql, pytest.mark.s3]

PROBLEM = "application/problem+json"


def _assert_every_record_has_its_bytes(server: RunningServer, records: list[dict[str, Any]]) -> None:
    """GET content for each record: 200 and the recorded sha256."""
    import hashlib

    def check(detail: dict[str, Any]) -> tuple[str, int, str]:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            response = client.get(f"/image/{detail['guid']}/content")
        return detail["sha256"], response.status_code, hashlib.sha256(response.content).hexdigest()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(check, records))
    assert [status for _, status, _ in results] == [200] * len(records)
    assert [got for _, _, got in results] == [want for want, _, _ in results]


# --- idempotency on the real stack ---------------------------------------------------------------


def test_idempotent_retries_generate_once_on_the_real_stack(
    upstream: FakeOpenAI, moto: MotoServer, mysql_url: str, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=0.3)
    bucket = new_bucket_name()
    env = stack_env(mysql_url=mysql_url, moto=moto, bucket=bucket, data_dir=tmp_path / "data", fake=upstream)
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        # A sequential retry: the same body back, the upstream asked once.
        body = {"prompt": "a lighthouse at dusk"}
        first = client.post("/image", json=body, headers={"Idempotency-Key": "retry-1"})
        assert first.status_code == 201, first.text
        again = client.post("/image", json=body, headers={"Idempotency-Key": "retry-1"})
        assert again.status_code == 201, again.text
        assert again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
        assert upstream.stats()["requests"] == 1

        # 20 at once with one key: one generation, one record, the same image for all.
        burst = asyncio.run(
            post_burst(
                server.base_url,
                count=20,
                concurrency=20,
                body=lambda i: {"prompt": "a red fox in snow"},
                headers=lambda i: {"Idempotency-Key": "together-1"},
            )
        )
        assert burst.errors() == []
        assert burst.statuses() == [201] * 20
        guids = {d["guid"] for d in burst.created()}
        assert len(guids) == 1
        assert upstream.stats()["requests"] == 2  # the sequential one, and one for all twenty

        # The same key with another body: a conflict, and nothing generated.
        conflict = client.post(
            "/image", json={"prompt": "a blue fox"}, headers={"Idempotency-Key": "together-1"}
        )
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == PROBLEM
        assert conflict.json()["type"] == "https://pixyproxy.dev/problems/idempotency-conflict"
        assert upstream.stats()["requests"] == 2

        records = all_records(server.base_url)
        assert sorted(r["guid"] for r in records) == sorted([first.json()["guid"], *guids])
        _assert_every_record_has_its_bytes(server, records)
    assert len(object_keys(moto, bucket)) == 2
    assert_no_orphans(run_gc(env))


# --- load -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_thousand_posts_store_a_thousand_images_and_nothing_else(
    upstream: FakeOpenAI, moto: MotoServer, mysql_url: str, tmp_path: Path
) -> None:
    bucket = new_bucket_name()
    env = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=bucket,
        data_dir=tmp_path / "data",
        fake=upstream,
        PIXYPROXY_MAX_CONCURRENT_GENERATIONS="64",
        PIXYPROXY_MYSQL_POOL_SIZE="20",
    )
    with running_server(env, tmp_path / "server.log") as server:
        burst = asyncio.run(post_burst(server.base_url, count=1000, concurrency=50, timeout_s=120))
        assert burst.errors() == []
        assert Counter(burst.statuses()) == {201: 1000}
        created = burst.created()
        assert len({d["guid"] for d in created}) == 1000

        records = all_records(server.base_url, limit=1000)
        guids = [r["guid"] for r in records]
        assert len(guids) == 1000
        assert len(set(guids)) == 1000
        assert set(guids) == {d["guid"] for d in created}
        assert {r["prompt"] for r in records} == {f"burst image {i}" for i in range(1000)}
        logs = server.logs()
    assert upstream.stats()["requests"] == 1000

    keys = object_keys(moto, bucket)
    assert len(keys) == 1000
    assert sorted(keys) == sorted(PREFIX + r["filename"] for r in records)
    digests = object_sha256s(moto, bucket, keys)
    assert {PREFIX + r["filename"]: r["sha256"] for r in records} == digests

    report = run_gc(env)
    assert_no_orphans(report)
    assert (report["records"], report["blobs"]) == (1000, 1000)
    assert_logs_clean(logs)


# --- a crash in the middle of a burst -------------------------------------------------------------


@pytest.mark.slow
def _wait_until_no_job_is_unfinished(server: RunningServer, timeout_s: float = 30) -> None:
    """The jobs a crash left queued or running are picked up again at start-up: let them finish."""
    deadline = time.monotonic() + timeout_s
    with server.client() as client:
        while time.monotonic() < deadline:
            unfinished = [
                job
                for status in ("queued", "running")
                for job in client.get("/jobs", params={"status": status, "limit": 1000}).json()
            ]
            if not unfinished:
                return
            time.sleep(0.2)
    raise AssertionError(f"jobs still unfinished after {timeout_s}s")


def test_sigkill_mid_burst_leaves_no_record_without_bytes(
    upstream: FakeOpenAI, moto: MotoServer, mysql_url: str, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=0.02)
    bucket = new_bucket_name()
    env = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=bucket,
        data_dir=tmp_path / "data",
        fake=upstream,
        # The jobs the kill cut short are taken again by the restarted server once their lease ends.
        PIXYPROXY_JOB_LEASE_S="3",
        PIXYPROXY_JOB_SWEEP_INTERVAL_S="0.5",
    )
    server = start_server(env, tmp_path / "server.log")
    killed_at: list[int] = []

    def kill_after_fifty(burst: Burst) -> None:
        if not killed_at and len(burst.outcomes) >= 50:
            killed_at.append(len(burst.outcomes))
            server.process.send_signal(signal.SIGKILL)

    try:
        burst = asyncio.run(
            post_burst(server.base_url, count=200, concurrency=20, on_outcome=kill_after_fifty, timeout_s=30)
        )
    finally:
        status = server.stop(signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert killed_at, "the burst ended before the server was killed"
    answered = [o for o in burst.outcomes if o.response is not None]
    assert {o.response.status_code for o in answered if o.response is not None} == {201}
    assert len(burst.errors()) > 0  # the kill really cut requests short
    created = {d["guid"] for d in burst.created()}

    # Restarted on the same settings (and another port): nothing that was confirmed is lost ...
    with running_server(env, tmp_path / "server-2.log") as again:
        _wait_until_no_job_is_unfinished(again)
        records = all_records(again.base_url)
        listed = {r["guid"] for r in records}
        assert created <= listed
        # ... and every record, confirmed or not, has its bytes.
        _assert_every_record_has_its_bytes(again, records)

        # Bytes stored just before the kill, whose record never came, are gc's to report and remove.
        keys = set(object_keys(moto, bucket))
        recorded = {PREFIX + r["filename"] for r in records}
        assert recorded <= keys
        report = run_gc(env)
        assert report["missing_blobs"] == []
        assert {PREFIX + key for key in report["orphan_blobs"]} == keys - recorded
        assert (report["records"], report["blobs"]) == (len(records), len(keys))

        deleted = run_gc(env, "--delete", "--grace-minutes", "0")
        assert sorted(deleted["deleted"]) == sorted(report["orphan_blobs"])
        assert_no_orphans(run_gc(env))
        assert set(object_keys(moto, bucket)) == recorded

        # And the restarted server works.
        with again.client() as client:
            after = client.post("/image", json={"prompt": "after the crash"})
            assert after.status_code == 201, after.text
