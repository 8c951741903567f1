"""Webhooks from a real `pixyproxy serve` (the embedded default) to a real receiver that verifies
every delivery with `standardwebhooks`: retries under one webhook-id, 410, and a crash in between."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, start_server
from tests.support.webhook_receiver import TEST_SECRET, webhook_receiver

ASYNC = {"Prefer": "respond-async"}


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PIXYPROXY_DATA_DIR": str(data_dir),
        "PIXYPROXY_PROCEDURAL_SIZE": "32x32",
        "PIXYPROXY_WEBHOOK_SECRET": TEST_SECRET,
        "PIXYPROXY_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
        "PIXYPROXY_WEBHOOK_RETRY_SCHEDULE_S": "0.3,0.3,0.3",
        "PIXYPROXY_WEBHOOK_POLL_INTERVAL_S": "0.1",
        **extra,
    }


def _job(server: RunningServer, job_id: str) -> dict[str, Any]:
    with server.client() as client:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job


def _wait_delivery_state(
    server: RunningServer, job_id: str, state: str, timeout_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _job(server, job_id)
        if job["webhook_deliveries"] and all(d["status"] == state for d in job["webhook_deliveries"]):
            return job
        time.sleep(0.1)
    raise AssertionError(f"deliveries of {job_id} never all {state}: {_job(server, job_id)}")


def test_a_receiver_failing_twice_gets_the_third_attempt_under_one_webhook_id(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.statuses = [500, 500]
        server = start_server(_env(tmp_path / "data"), tmp_path / "server.log")
        try:
            with server.client() as client:
                accepted = client.post(
                    "/image", json={"prompt": "a fox", "webhook": receiver.url}, headers=ASYNC
                )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            job = _wait_delivery_state(server, job_id, "delivered")
        finally:
            server.stop()
        deliveries = receiver.deliveries()
    assert len(deliveries) == 3
    assert all(d.verified for d in deliveries)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert len({d.headers["webhook-signature"] for d in deliveries}) >= 1
    payload = deliveries[-1].payload
    assert payload is not None
    assert payload["type"] == "image.job.succeeded"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["image"]["guid"] == job["image"]["guid"]
    [shown] = job["webhook_deliveries"]
    assert shown["attempts"] == 3
    assert shown["last_status"] == "HTTP 204"
    assert TEST_SECRET not in server.logs()


def test_410_stops_the_retries(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.default_status = 410
        server = start_server(_env(tmp_path / "data"), tmp_path / "server.log")
        try:
            with server.client() as client:
                job_id = client.post(
                    "/image", json={"prompt": "gone", "webhook": receiver.url}, headers=ASYNC
                ).json()["id"]
            job = _wait_delivery_state(server, job_id, "failed")
            time.sleep(1.0)  # three retry delays' worth: nothing more arrives
        finally:
            server.stop()
        assert len(receiver.deliveries()) == 1
    assert job["webhook_deliveries"][0]["last_status"] == "HTTP 410"


def test_start_and_completed_each_arrive_once_in_order(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        server = start_server(_env(tmp_path / "data"), tmp_path / "server.log")
        try:
            with server.client() as client:
                created = client.post(
                    "/image",
                    json={
                        "prompt": "both",
                        "webhook": receiver.url,
                        "webhook_events_filter": ["start", "completed"],
                    },
                )
            assert created.status_code == 201, created.text
            deliveries = receiver.wait_for(2)
            time.sleep(0.5)
        finally:
            server.stop()
    kinds = [d.payload["type"] for d in receiver.deliveries() if d.payload]
    assert Counter(kinds) == {"image.job.started": 1, "image.job.succeeded": 1}
    assert deliveries[0].payload is not None
    assert deliveries[0].payload["data"]["status"] == "running"


def test_a_delivery_survives_the_receiver_down_and_the_server_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with webhook_receiver() as receiver:
        port, url = receiver.port, receiver.url
    # The receiver is down now: the first attempts are refused connections.
    env = _env(data_dir, PIXYPROXY_WEBHOOK_RETRY_SCHEDULE_S="0.5,0.5,1,1,2,2,5")
    server = start_server(env, tmp_path / "first.log")
    try:
        with server.client() as client:
            job_id = client.post("/image", json={"prompt": "patience", "webhook": url}, headers=ASYNC).json()[
                "id"
            ]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            shown = _job(server, job_id).get("webhook_deliveries") or []
            if shown and shown[0]["attempts"] >= 1:
                break
            time.sleep(0.1)
        assert shown[0]["status"] == "pending"
        assert shown[0]["last_status"].startswith("connection failed")
    finally:
        server.stop(signal.SIGKILL)
    with webhook_receiver(port=port) as receiver:
        restarted = start_server(env, tmp_path / "second.log")
        try:
            _wait_delivery_state(restarted, job_id, "delivered")
            time.sleep(1.0)
        finally:
            restarted.stop()
        deliveries = receiver.deliveries()
    assert len(deliveries) == 1
    assert deliveries[0].verified
    payload = json.loads(deliveries[0].body)
    assert payload["data"]["id"] == job_id


@pytest.mark.parametrize(
    ("extra", "body", "says"),
    [
        (
            {"PIXYPROXY_WEBHOOK_SECRET": ""},
            {"webhook": "https://hooks.example.com/x"},
            "PIXYPROXY_WEBHOOK_SECRET",
        ),
        ({"PIXYPROXY_WEBHOOK_ALLOW_PRIVATE": "false"}, {"webhook": "http://127.0.0.1:9/x"}, "loopback"),
        ({}, {"webhook": "ftp://example.com/x"}, "absolute http or https URL"),
    ],
)
def test_a_webhook_that_could_never_be_sent_is_refused_at_accept(
    tmp_path: Path, extra: dict[str, str], body: dict[str, Any], says: str
) -> None:
    server = start_server(_env(tmp_path / "data", **extra), tmp_path / "server.log")
    try:
        with server.client() as client:
            refused = client.post("/image", json={"prompt": "no", **body}, headers=ASYNC)
            assert refused.status_code == 422, refused.text
            assert says in refused.json()["detail"]
            assert client.get("/jobs").json() == []
    finally:
        server.stop()
