"""Jobs across processes on real parts: two `pixyproxy serve` and two `pixyproxy worker` sharing
MariaDB, an S3 server and RabbitMQ, against the OpenAI-compatible fake answering after a delay.

Nothing accepted is lost, nothing runs twice, no bytes are left without a record: after a worker is
SIGKILLed, after the broker drops every connection, and when the broker is unreachable at accept.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiormq
import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.rabbitmq import (
    admin_channel,
    close_all_connections,
    delete_queues,
    new_queue_name,
    require_rabbitmq,
)
from tests.support.server import RunningServer, RunningWorker, start_server, start_worker
from tests.support.stack import (
    all_records,
    assert_logs_clean,
    assert_no_orphans,
    object_keys,
    run_gc,
    stack_env,
)
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from tests.support.webhook_receiver import TEST_SECRET, webhook_receiver

pytestmark = [pytest.mark.mysql, pytest.mark.s3, pytest.mark.slow]

CONCURRENCY = 4  # per worker
ASYNC = {"Prefer": "respond-async"}
FINISHED = {"succeeded", "failed", "canceled"}


@dataclass
class Cluster:
    """Two API servers and two workers on one database, bucket and queue."""

    env: dict[str, str]
    apis: list[RunningServer]
    workers: list[RunningWorker]
    bucket: str
    moto: MotoServer

    def logs(self) -> str:
        processes: list[RunningServer | RunningWorker] = [*self.apis, *self.workers]
        return "\n".join(p.logs() for p in processes)


def _amqp_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


@pytest.fixture
def cluster_env(
    mysql_url: str, moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> Iterator[dict[str, str]]:
    url = asyncio.run(require_rabbitmq())
    queue = new_queue_name()
    env = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=new_bucket_name(),
        data_dir=tmp_path / "data",
        fake=upstream,
        PIXYPROXY_JOB_QUEUE="rabbitmq",
        PIXYPROXY_AMQP_URL=url,
        PIXYPROXY_AMQP_QUEUE=queue,
        PIXYPROXY_JOB_LEASE_S="3",
        PIXYPROXY_JOB_SWEEP_INTERVAL_S="0.5",
    )
    yield env
    asyncio.run(delete_queues(queue, queue + ".dead"))


def _start_cluster(
    env: dict[str, str],
    moto: MotoServer,
    tmp_path: Path,
    stack: ExitStack,
    *,
    api_env: dict[str, str] | None = None,
) -> Cluster:
    apis = []
    for name in ("api-a", "api-b"):
        server = start_server({**env, **(api_env or {})}, tmp_path / f"{name}.log")
        stack.callback(server.stop)
        apis.append(server)
    workers = []
    for name in ("worker-a", "worker-b"):
        worker = start_worker(env, tmp_path / f"{name}.log", concurrency=CONCURRENCY)
        stack.callback(worker.stop)
        workers.append(worker)
    return Cluster(env=env, apis=apis, workers=workers, bucket=env["PIXYPROXY_S3_BUCKET"], moto=moto)


async def _submit(
    cluster: Cluster, count: int, *, prefix: str, extra: dict[str, Any] | None = None
) -> list[str]:
    """POST `count` async jobs spread over both APIs; their ids."""
    limits = httpx.Limits(max_connections=10)
    clients = [httpx.AsyncClient(base_url=api.base_url, timeout=30, limits=limits) for api in cluster.apis]
    slots = asyncio.Semaphore(20)

    async def one(i: int) -> str:
        async with slots:
            body = {"prompt": f"{prefix} {i}", **(extra or {})}
            response = await clients[i % 2].post("/image", json=body, headers=ASYNC)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.aclose()


def _jobs(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=cluster.apis[0].base_url, timeout=30) as client:
        return {job_id: client.get(f"/jobs/{job_id}").json() for job_id in ids}


def _wait_all_finished(
    cluster: Cluster, ids: list[str], *, timeout_s: float = 90
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    pending = set(ids)
    with httpx.Client(base_url=cluster.apis[1].base_url, timeout=30) as client:
        while pending and time.monotonic() < deadline:
            listed = client.get("/jobs", params={"limit": 1000}).json()
            pending -= {job["id"] for job in listed if job["status"] in FINISHED}
            if pending:
                time.sleep(0.25)
    assert not pending, f"{len(pending)} jobs unfinished after {timeout_s}s"
    return _jobs(cluster, ids)


def _assert_each_made_one_image(cluster: Cluster, jobs: dict[str, dict[str, Any]]) -> None:
    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    guids = {job["image"]["guid"] for job in jobs.values()}
    assert len(guids) == len(jobs)
    records = all_records(cluster.apis[0].base_url)
    assert {r["guid"] for r in records} == guids  # exactly one image per job, nothing else
    assert len(object_keys(cluster.moto, cluster.bucket)) == len(jobs)
    assert_no_orphans(run_gc(cluster.env))


def test_two_apis_and_two_workers_finish_every_job_once_within_the_global_bound(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=0.3)
    with ExitStack() as stack:
        cluster = _start_cluster(cluster_env, moto, tmp_path, stack)
        ids = asyncio.run(_submit(cluster, 200, prefix="burst"))
        jobs = _wait_all_finished(cluster, ids)
        _assert_each_made_one_image(cluster, jobs)
        stats = upstream.stats()
        assert stats["requests"] == 200  # never generated twice
        assert stats["max_in_flight"] <= 2 * CONCURRENCY  # the bound is global: workers x concurrency
        assert stats["max_in_flight"] > CONCURRENCY  # and both workers did share the work
        # The APIs only accepted and published: the upstream was called by the workers alone.
        assert all("generated image" not in api.logs() for api in cluster.apis)
        assert_logs_clean(cluster.logs())


def test_a_worker_killed_mid_burst_loses_no_job_and_none_runs_twice(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=1.0)
    with ExitStack() as stack:
        cluster = _start_cluster(cluster_env, moto, tmp_path, stack)
        ids = asyncio.run(_submit(cluster, 40, prefix="killed"))
        deadline = time.monotonic() + 30
        while upstream.stats()["requests"] < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.workers[0].stop(signal.SIGKILL)  # mid-job: its generations are in flight upstream
        jobs = _wait_all_finished(cluster, ids)
        _assert_each_made_one_image(cluster, jobs)
        assert any(job["attempts"] == 2 for job in jobs.values())  # the killed worker's jobs ran again


def test_the_broker_dropping_every_connection_under_load_is_survived_without_a_restart(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=0.5)
    with ExitStack() as stack:
        cluster = _start_cluster(cluster_env, moto, tmp_path, stack)
        ids = asyncio.run(_submit(cluster, 30, prefix="before"))
        time.sleep(1.0)
        close_all_connections("pixyproxy test")
        ids += asyncio.run(_submit(cluster, 30, prefix="after"))
        jobs = _wait_all_finished(cluster, ids)
        _assert_each_made_one_image(cluster, jobs)
        assert all(api.process.poll() is None for api in cluster.apis)
        assert all(worker.process.poll() is None for worker in cluster.workers)


def test_a_job_accepted_while_the_broker_is_unreachable_is_published_by_the_api_once_it_is_back(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        broker = _amqp_target(cluster_env["PIXYPROXY_AMQP_URL"])
        proxy: TcpProxy = stack.enter_context(tcp_proxy(broker))
        through_proxy = cluster_env["PIXYPROXY_AMQP_URL"].replace(f":{broker[1]}/", f":{proxy.port}/")
        # The APIs reach the broker through the proxy. No worker runs yet: workers sweep too, and
        # this test is about the API's own outbox.
        api = start_server({**cluster_env, "PIXYPROXY_AMQP_URL": through_proxy}, tmp_path / "api.log")
        stack.callback(api.stop)
        proxy.cut()
        with api.client() as client:
            started = time.monotonic()
            accepted = client.post("/image", json={"prompt": "while the broker is away"}, headers=ASYNC)
            assert accepted.status_code == 202, accepted.text
            assert time.monotonic() - started < 15
            job_id = accepted.json()["id"]
            time.sleep(1.0)
            assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
        assert "stays queued until the broker is back" in api.logs()
        proxy.restore()
        queue = cluster_env["PIXYPROXY_AMQP_QUEUE"]
        deadline = time.monotonic() + 30
        while asyncio.run(_ready_messages(queue)) < 1 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert asyncio.run(_ready_messages(queue)) == 1  # the API's sweep published it
        worker = start_worker(cluster_env, tmp_path / "worker.log", concurrency=CONCURRENCY)
        stack.callback(worker.stop)
        cluster = Cluster(
            env=cluster_env,
            apis=[api, api],
            workers=[worker],
            bucket=cluster_env["PIXYPROXY_S3_BUCKET"],
            moto=moto,
        )
        jobs = _wait_all_finished(cluster, [job_id], timeout_s=60)
        _assert_each_made_one_image(cluster, jobs)


async def _ready_messages(queue: str) -> int:
    """Messages waiting in the queue; 0 while nobody has declared it yet."""
    try:
        async with admin_channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0


def test_cancel_of_a_queued_and_of_a_running_job(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=30)
    with ExitStack() as stack:
        cluster = _start_cluster(cluster_env, moto, tmp_path, stack)
        running_ids = asyncio.run(_submit(cluster, 2 * CONCURRENCY, prefix="busy"))
        deadline = time.monotonic() + 15
        while upstream.stats()["in_flight"] < 2 * CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.05)
        [queued_id] = asyncio.run(_submit(cluster, 1, prefix="waiting"))
        with cluster.apis[1].client() as client:
            canceled = client.post(f"/jobs/{queued_id}/cancel").json()
            assert canceled["status"] == "canceled"
            answer = client.post(f"/jobs/{running_ids[0]}/cancel")
            assert answer.json()["status"] in {"running", "canceled"}
        done = _wait_all_finished(cluster, [running_ids[0]], timeout_s=15)[running_ids[0]]
        assert done["status"] == "canceled"
        deadline = time.monotonic() + 5
        while upstream.stats()["disconnected"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.stats()["disconnected"] >= 1  # the upstream saw its connection closed
        assert all_records(cluster.apis[0].base_url) == []  # nothing stored
        assert upstream.stats()["requests"] == 2 * CONCURRENCY  # the queued one never ran
        # Free the upstream: cancel the rest so the workers stop quickly.
        with cluster.apis[0].client() as client:
            for job_id in running_ids[1:]:
                client.post(f"/jobs/{job_id}/cancel")
        _wait_all_finished(cluster, running_ids, timeout_s=15)


def test_with_two_workers_each_webhook_event_is_delivered_once(
    cluster_env: dict[str, str], moto: MotoServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("ok", delay_s=0.2)
    env = {
        **cluster_env,
        "PIXYPROXY_WEBHOOK_SECRET": TEST_SECRET,
        "PIXYPROXY_WEBHOOK_ALLOW_PRIVATE": "true",
        "PIXYPROXY_WEBHOOK_POLL_INTERVAL_S": "0.1",
    }
    with webhook_receiver() as receiver, ExitStack() as stack:
        cluster = _start_cluster(env, moto, tmp_path, stack)
        body = {"webhook": receiver.url, "webhook_events_filter": ["start", "completed"]}
        ids = asyncio.run(_submit(cluster, 20, prefix="hooked", extra=body))
        _wait_all_finished(cluster, ids)
        deliveries = receiver.wait_for(40, timeout_s=30)
        time.sleep(1.0)  # a duplicate would arrive meanwhile
        deliveries = receiver.deliveries()
    assert all(d.verified for d in deliveries)
    told = Counter((d.payload["data"]["id"], d.payload["type"]) for d in deliveries if d.payload)
    assert set(told.values()) == {1}
    assert len(told) == 40
    assert {job_id for job_id, _ in told} == set(ids)
