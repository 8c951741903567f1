"""A real `pixyproxy worker --metrics-port` reports the generations it ran, by owner, for Prometheus:
the API node that accepted the job never ran it, so only the worker can count it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.rabbitmq import delete_queues, new_queue_name, require_rabbitmq
from tests.support.real_parts import free_port
from tests.support.server import start_server, start_worker

TAG = uuid.uuid4().hex[:8]
KEY = f"sk-dora-SECRET-{TAG}"
OWNER = f"dora-{TAG}"


@pytest.fixture
def queue_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    url = asyncio.run(require_rabbitmq())
    queue = new_queue_name()
    yield {
        "PIXYPROXY_JOB_QUEUE": "rabbitmq",
        "PIXYPROXY_AMQP_URL": url,
        "PIXYPROXY_AMQP_QUEUE": queue,
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),  # one SQLite file and one image folder for both
        "PIXYPROXY_API_KEYS": f"{OWNER}:{KEY}",
    }
    asyncio.run(delete_queues(queue, queue + ".dead"))


def test_a_worker_serves_its_generations_by_owner(tmp_path: Path, queue_env: dict[str, str]) -> None:
    api = start_server(queue_env, tmp_path / "api.log")
    metrics_port = free_port()
    worker = None
    try:
        worker = start_worker(
            queue_env,
            tmp_path / "worker.log",
            concurrency=2,
            extra_args=["--metrics-port", str(metrics_port)],
        )
        with api.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            accepted = client.post(
                "/image", json={"prompt": "a lighthouse"}, headers={"Prefer": "respond-async"}
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            deadline = time.monotonic() + 30
            while client.get(f"/jobs/{job_id}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, client.get(f"/jobs/{job_id}").text
                time.sleep(0.1)
            api_metrics = client.get("/metrics").text
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert scraped.status_code == 200
        ran = rf'^pixyproxy_owner_generations_total\{{owner="{OWNER}",status="succeeded"\}} 1\.0$'
        assert re.search(ran, scraped.text, re.M), scraped.text
        assert re.search(
            r'^pixyproxy_generations_total\{generator="procedural",outcome="ok"\} 1\.0$', scraped.text, re.M
        )
        assert not re.search(ran, api_metrics, re.M)  # the API accepted it; the worker ran it
        assert f'pixyproxy_owner_requests_total{{owner="{OWNER}",status="202"}} 1.0' in api_metrics
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
    assert f"metrics served on http://127.0.0.1:{metrics_port}/metrics" in worker.logs()
