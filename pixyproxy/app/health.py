"""Readiness: does each port this worker depends on answer right now?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pixyproxy.domain.exceptions import ImageGenerationException
from pixyproxy.ports import BlobStore, ImageRepository, JobQueue
from pixyproxy.ports.quota import QuotaGate

Ping = Callable[[], Awaitable[None]]


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
        # Each check's ping, and for one the worker can serve without, what its failure means.
        self._checks: dict[str, tuple[Ping, str | None]] = {
            "repository": (repository.ping, None),
            "blob_store": (blob_store.ping, None),
        }
        if job_queue is not None and not job_queue.in_process:
            self._checks["job_queue"] = (job_queue.ping, None)
        # The quotas share one storage: one ping says for all of them.
        quota = next((quota for quota in quotas if quota.configured), None)
        if quota is not None:
            unenforced = "quotas are not enforced until it answers (PIXYPROXY_RATE_LIMIT_ON_ERROR=allow)"
            self._checks["quota_storage"] = (quota.ping, unenforced if quota.fails_open else None)
        self._timeout_s = timeout_s

    async def check(self) -> list[CheckResult]:
        """Every check's result; a check that raises or overruns is not ok."""
        return list(await asyncio.gather(*(self._run(name, *check) for name, check in self._checks.items())))

    async def _run(self, name: str, ping: Ping, degraded_note: str | None) -> CheckResult:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(ping(), self._timeout_s)
            ok, detail = True, "ok"
        except TimeoutError:
            ok, detail = False, f"no answer within {self._timeout_s:g}s"
        except ImageGenerationException as err:
            ok, detail = False, type(err).__name__
        degraded = not ok and degraded_note is not None
        if degraded:
            detail += f"; {degraded_note}"
        return CheckResult(name, ok, detail, round((time.perf_counter() - started) * 1000, 1), degraded)
