"""Readiness: does each port this worker depends on answer right now?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pixyproxy.domain.exceptions import ImageGenerationException
from pixyproxy.ports import BlobStore, ImageRepository, JobQueue
from pixyproxy.ports.quota import QuotaGate


@dataclass(frozen=True)
class CheckResult:
    """One dependency's answer. `degraded`: it does not answer, but the worker serves on without it
    (a quota storage that fails open), so it does not make the worker unready."""

    name: str
    ok: bool
    detail: str
    latency_ms: float
    degraded: bool = False


class ReadinessChecker:
    """Pings the repository, the blob store, a broker if jobs go through one, and the quota storage
    if a quota is configured, concurrently, each within a time limit."""

    def __init__(
        self,
        *,
        repository: ImageRepository,
        blob_store: BlobStore,
        job_queue: JobQueue | None = None,
        quotas: Sequence[QuotaGate] = (),
        timeout_s: float = 3.0,
    ) -> None:
        self._checks = {"repository": repository.ping, "blob_store": blob_store.ping}
        if job_queue is not None and not job_queue.in_process:
            self._checks["job_queue"] = job_queue.ping
        # The quotas share one storage: one ping says for all of them.
        self._quota = next((quota for quota in quotas if quota.configured), None)
        if self._quota is not None:
            self._checks["quota_storage"] = self._quota.ping
        self._timeout_s = timeout_s

    async def check(self) -> list[CheckResult]:
        """Every check's result; a check that raises or overruns is not ok."""
        return list(await asyncio.gather(*(self._run(n, ping) for n, ping in self._checks.items())))

    async def _run(self, name: str, ping: Callable[[], Awaitable[None]]) -> CheckResult:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(ping(), self._timeout_s)
            ok, detail = True, "ok"
        except TimeoutError:
            ok, detail = False, f"no answer within {self._timeout_s:g}s"
        except ImageGenerationException as err:
            ok, detail = False, type(err).__name__
        degraded = not ok and name == "quota_storage" and self._quota is not None and self._quota.fails_open
        if degraded:
            detail += "; quotas are not enforced until it answers (PIXYPROXY_RATE_LIMIT_ON_ERROR=allow)"
        return CheckResult(name, ok, detail, round((time.perf_counter() - started) * 1000, 1), degraded)
