"""Prometheus metrics: requests, generations and stored bytes, via port decorators and middleware.

Under `pixyproxy serve --workers N` each worker writes its metrics to files in a directory shared
by all (prometheus_client's multiprocess mode, chosen by `PROMETHEUS_MULTIPROC_DIR` before the
worker imports prometheus_client), so whichever worker answers a scrape reports every worker's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Scope

from pixyproxy.domain.models import BlobInfo, GeneratedImage, GenerationOptions, Job
from pixyproxy.ports import BlobStore, ImageGenerator
from pixyproxy.ports.quota import QuotaDecision, QuotaGate

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# observe_request's remembered series; past this many, forgotten and looked up again.
MAX_REMEMBERED_SERIES = 1024
# A request's labelled series: its count by status, its latency, its count by owner.
_RequestChildren = tuple[Counter, Histogram, Counter]

log = logging.getLogger(__name__)


@contextmanager
def shared_between_workers(workers: int) -> Iterator[None]:
    """For the parent of several workers: a fresh directory they all write their metrics to.

    The workers inherit its path through the environment; it is removed once they have stopped.
    A directory the operator named in PROMETHEUS_MULTIPROC_DIR is used as it is and kept.
    """
    if workers < 2 or os.environ.get(SHARED_DIR_ENV):
        yield
        return
    shared_dir = tempfile.mkdtemp(prefix="pixyproxy-metrics-")
    os.environ[SHARED_DIR_ENV] = shared_dir
    log.info("metrics of %d workers are gathered in %s", workers, shared_dir)
    try:
        yield
    finally:
        del os.environ[SHARED_DIR_ENV]
        shutil.rmtree(shared_dir, ignore_errors=True)


@contextmanager
def serving_metrics(metrics: Metrics, host: str, port: int) -> Iterator[None]:
    """This process's metrics in Prometheus text on http://host:port/ (any path), from a thread, for
    a process with no HTTP API of its own (the worker); stopped when the block ends."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics served on http://%s:%d/metrics", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Metrics:
    """One registry per app, so tests and several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pixyproxy_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "pixyproxy_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generations = Counter(
            "pixyproxy_generations_total",
            "Generations by generator and outcome (ok or the error class).",
            ["generator", "outcome"],
            registry=self.registry,
        )
        self.generation_latency = Histogram(
            "pixyproxy_generation_duration_seconds",
            "Generation latency by generator.",
            ["generator"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generations_in_flight = Gauge(
            "pixyproxy_generations_in_flight",
            "Generations under way.",
            multiprocess_mode="livesum",  # under several workers: the sum over the live ones
            registry=self.registry,
        )
        self.jobs_started = Counter(
            "pixyproxy_jobs_started_total",
            "Job attempts taken by a worker (a retried job counts once per attempt).",
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "pixyproxy_jobs_finished_total",
            "Jobs finished, by status: succeeded, failed or canceled.",
            ["status"],
            registry=self.registry,
        )
        self.job_queue_wait = Histogram(
            "pixyproxy_job_queue_wait_seconds",
            "From a job's acceptance to a worker first taking it.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.job_run_time = Histogram(
            "pixyproxy_job_run_seconds",
            "From a worker first taking a job to its end, by status.",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Owners are API-key names: configured by the operator, never taken from a request, so
        # these labels stay few (plus `anonymous`, for requests without a valid key).
        self.owner_requests = Counter(
            "pixyproxy_owner_requests_total",
            "HTTP requests by owner (the API key's name) and status.",
            ["owner", "status"],
            registry=self.registry,
        )
        self.owner_generations = Counter(
            "pixyproxy_owner_generations_total",
            "Generation jobs finished by owner and status (counted where the job ran).",
            ["owner", "status"],
            registry=self.registry,
        )
        self.quota_refusals = Counter(
            "pixyproxy_quota_refusals_total",
            "Takes refused because the owner's quota was spent, by quota (requests, generations) and owner.",
            ["quota", "owner"],
            registry=self.registry,
        )
        self.quota_storage_errors = Counter(
            "pixyproxy_quota_storage_errors_total",
            "Quota takes decided without the storage (Redis unreachable), by quota and the policy's answer.",
            ["quota", "decision"],
            registry=self.registry,
        )
        self.bytes_stored = Counter(
            "pixyproxy_blob_bytes_stored_total",
            "Bytes written to the blob store.",
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int, str], _RequestChildren] = {}

    def observe_request(self, scope: Scope, status: int, elapsed_s: float, *, owner: str) -> None:
        """Count and time one request by its route template (never the raw path: GUIDs would
        explode the labels), and count it for its owner; the router has put the matched route in the
        scope by now."""
        route = getattr(scope.get("route"), "path", "unmatched")
        key = (scope["method"], route, status, owner)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children_of(key)
        count, latency, owner_count = children
        count.inc()
        latency.observe(elapsed_s)
        owner_count.inc()

    def _request_children_of(self, key: tuple[str, str, int, str]) -> _RequestChildren:
        """The labelled series of one (method, route, status, owner), looked up once and remembered:
        `.labels()` on every request cost more than the counting (make bench figure 1's profile)."""
        method, route, status, owner = key
        children = (
            self.requests.labels(method, route, str(status)),
            self.request_latency.labels(method, route),
            self.owner_requests.labels(owner, str(status)),
        )
        if len(self._request_children) >= MAX_REMEMBERED_SERIES:  # methods are the client's to invent
            self._request_children.clear()
        self._request_children[key] = children
        return children

    def exposition(self) -> bytes:
        """The Prometheus text: this process's metrics, or every worker's when they share a directory."""
        shared_dir = os.environ.get(SHARED_DIR_ENV)
        if not shared_dir:
            return generate_latest(self.registry)
        gathered = CollectorRegistry()
        MultiProcessCollector(gathered, path=shared_dir)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(gathered)

    def forget_this_process(self) -> None:
        """On a worker's exit: drop its live gauges from the shared files; its counts stay counted."""
        shared_dir = os.environ.get(SHARED_DIR_ENV)
        if shared_dir:
            mark_process_dead(os.getpid(), shared_dir)  # type: ignore[no-untyped-call]  # untyped upstream


class JobMetrics:
    """JobEvents that count and time jobs."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def started(self, job: Job) -> None:
        """Count the attempt; on the first, how long the job waited in the queue."""
        self._metrics.jobs_started.inc()
        if job.attempts == 1 and job.started_at is not None:
            self._metrics.job_queue_wait.observe((job.started_at - job.created_at).total_seconds())

    async def finished(self, job: Job) -> None:
        """Count the outcome, for its owner too, and time the run."""
        self._metrics.jobs_finished.labels(job.status.value).inc()
        self._metrics.owner_generations.labels(job.owner, job.status.value).inc()
        if job.started_at is not None and job.finished_at is not None:
            run_s = (job.finished_at - job.started_at).total_seconds()
            self._metrics.job_run_time.labels(job.status.value).observe(run_s)


class MeteredQuotaGate:
    """A QuotaGate that counts refusals by owner, and takes decided while its storage was down."""

    def __init__(self, inner: QuotaGate, *, metrics: Metrics, quota: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._quota = quota

    @property
    def configured(self) -> bool:
        """The wrapped gate's."""
        return self._inner.configured

    @property
    def fails_open(self) -> bool:
        """The wrapped gate's."""
        return self._inner.fails_open

    async def take(self, owner: str, cost: int = 1) -> QuotaDecision:
        """Take, then count what the decision says."""
        decision = await self._inner.take(owner, cost)
        self._observe(owner, decision)
        return decision

    async def peek(self, owner: str) -> QuotaDecision:
        """Pass through: a peek decides nothing, so it counts nothing."""
        return await self._inner.peek(owner)

    def _observe(self, owner: str, decision: QuotaDecision) -> None:
        if decision.degraded:
            verdict = "allowed" if decision.allowed else "refused"
            self._metrics.quota_storage_errors.labels(self._quota, verdict).inc()
        elif not decision.allowed:
            self._metrics.quota_refusals.labels(self._quota, owner).inc()

    async def ping(self) -> None:
        """Pass through."""
        await self._inner.ping()

    async def close(self) -> None:
        """Pass through."""
        await self._inner.close()


class MeteredImageGenerator:
    """An ImageGenerator that counts and times what the wrapped one does."""

    def __init__(self, inner: ImageGenerator, *, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @property
    def name(self) -> str:
        """The wrapped generator's name."""
        return self._inner.name

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Generate, recording outcome, latency and in-flight count."""
        started = time.perf_counter()
        outcome = "ok"
        self._metrics.generations_in_flight.inc()
        try:
            return await self._inner.generate(prompt, options=options)
        except BaseException as err:
            outcome = type(err).__name__
            raise
        finally:
            self._metrics.generations_in_flight.dec()
            self._metrics.generations.labels(self.name, outcome).inc()
            self._metrics.generation_latency.labels(self.name).observe(time.perf_counter() - started)

    async def close(self) -> None:
        """Close the wrapped generator."""
        await self._inner.close()


class MeteredBlobStore:
    """A BlobStore that counts the bytes the wrapped one stores."""

    def __init__(self, inner: BlobStore, *, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store, then count the bytes."""
        await self._inner.put(key, data, content_type=content_type)
        self._metrics.bytes_stored.inc(len(data))

    async def get(self, key: str) -> bytes:
        """Pass through."""
        return await self._inner.get(key)

    def read_chunks(self, key: str, *, chunk_bytes: int) -> AsyncIterator[bytes]:
        """Pass through."""
        return self._inner.read_chunks(key, chunk_bytes=chunk_bytes)

    async def delete(self, key: str) -> None:
        """Pass through."""
        await self._inner.delete(key)

    async def exists(self, key: str) -> bool:
        """Pass through."""
        return await self._inner.exists(key)

    async def list_blobs(self) -> list[BlobInfo]:
        """Pass through."""
        return await self._inner.list_blobs()

    async def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """Pass through."""
        return await self._inner.presigned_url(key, expires_s=expires_s)

    async def file_path(self, key: str) -> str | None:
        """Pass through."""
        return await self._inner.file_path(key)

    async def ping(self) -> None:
        """Pass through."""
        await self._inner.ping()

    async def close(self) -> None:
        """Pass through."""
        await self._inner.close()
