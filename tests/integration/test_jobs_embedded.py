"""Jobs on the embedded default as a real `pixyproxy serve` (SQLite, local disk, in-process queue),
against the OpenAI-compatible fake answering slowly: crash recovery, cancel, and nothing lost."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.support.fake_openai import FakeOpenAI
from tests.support.server import RunningServer, start_server
from tests.support.stack import openai_env

ASYNC = {"Prefer": "respond-async"}


def _env(upstream: FakeOpenAI, data_dir: Path) -> dict[str, str]:
    return {
        **openai_env(upstream, api_key="sk-test-jobs", timeout_s=30),
        "PIXYPROXY_DATA_DIR": str(data_dir),
        "PIXYPROXY_JOB_LEASE_S": "3",
        "PIXYPROXY_JOB_SWEEP_INTERVAL_S": "0.5",
    }


def _wait_finished(server: RunningServer, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with server.client() as client:
        while time.monotonic() < deadline:
            job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
            if job["status"] in {"succeeded", "failed", "canceled"}:
                return job
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s}s: {job}")


def _count(data_dir: Path, sql: str) -> int:
    with sqlite3.connect(data_dir / "pixyproxy.sqlite3") as db:
        (count,) = db.execute(sql).fetchone()
        return int(count)


def test_jobs_left_by_a_crash_are_finished_after_a_restart_exactly_once(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=2)
    data_dir = tmp_path / "data"
    server = start_server(_env(upstream, data_dir), tmp_path / "first.log")
    try:
        with server.client() as client:
            ids = [
                client.post("/image", json={"prompt": f"crash {n}"}, headers=ASYNC).json()["id"]
                for n in range(4)
            ]
        time.sleep(0.5)  # some are running upstream now
    finally:
        server.stop(signal.SIGKILL)
    upstream.set_mode("ok", delay_s=0.2)
    restarted = start_server(_env(upstream, data_dir), tmp_path / "second.log")
    try:
        jobs = [_wait_finished(restarted, job_id) for job_id in ids]
    finally:
        restarted.stop()
    assert [job["status"] for job in jobs] == ["succeeded"] * 4
    assert len({job["image"]["guid"] for job in jobs}) == 4
    assert _count(data_dir, "SELECT COUNT(*) FROM images") == 4
    assert len(list((data_dir / "images").iterdir())) == 4
    assert "picked up 4 unfinished jobs" in restarted.logs()


def test_cancel_of_a_running_job_closes_the_upstream_connection_and_stores_nothing(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=20)
    data_dir = tmp_path / "data"
    server = start_server(_env(upstream, data_dir), tmp_path / "server.log")
    try:
        with server.client() as client:
            job = client.post("/image", json={"prompt": "never mind"}, headers=ASYNC).json()
            deadline = time.monotonic() + 10
            while upstream.stats()["in_flight"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            answer = client.post(f"/jobs/{job['id']}/cancel")
            assert answer.status_code == 200
            assert answer.json()["status"] in {"running", "canceled"}
        done = _wait_finished(server, job["id"], timeout_s=10)
        assert done["status"] == "canceled"
        deadline = time.monotonic() + 5
        while upstream.stats()["disconnected"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.stats()["disconnected"] == 1
    finally:
        server.stop()
    assert _count(data_dir, "SELECT COUNT(*) FROM images") == 0
    assert not any((data_dir / "images").glob("*")) if (data_dir / "images").exists() else True


def test_a_synchronous_post_still_answers_201_and_is_listed_as_a_job(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    server = start_server(_env(upstream, tmp_path / "data"), tmp_path / "server.log")
    try:
        with server.client() as client:
            created = client.post("/image", json={"prompt": "now"})
            assert created.status_code == 201, created.text
            [job] = client.get("/jobs").json()
            assert job["image"]["guid"] == created.json()["guid"]
            upstream.set_mode("content_policy")
            refused = client.post("/image", json={"prompt": "forbidden"})
            assert refused.status_code == 422
            assert refused.json()["type"].endswith("/prompt-rejected")
    finally:
        server.stop()
