"""In-memory job adapters: the repository fake, and the queue of the embedded default (jobs run inside
`pixyproxy serve`, no broker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from uuid import UUID

from pixyproxy.domain.exceptions import JobNotFoundError
from pixyproxy.domain.models import Job, JobError, JobStatus, NewJob, PageKey
from pixyproxy.ports import JobHandler

log = logging.getLogger(__name__)


def _newest_first(job: Job) -> tuple[datetime, UUID]:
    return (job.created_at, job.id)


class InMemoryJobRepository:
    """Jobs in a dict; every transition is checked as the SQL adapters' conditional updates are."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, Job] = {}
        self._events_pending: set[UUID] = set()  # a column in the SQL adapters, not part of a Job

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        """Insert unless the idempotency key is held."""
        if job.idempotency_key is not None:
            for held in self.jobs.values():
                if held.idempotency_key == job.idempotency_key:
                    return held, False
        stored = job.as_added()
        self.jobs[job.id] = stored
        return stored, True

    async def get(self, job_id: UUID) -> Job:
        """The job with this id."""
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    async def list_page(
        self,
        *,
        limit: int,
        after: PageKey | None = None,
        status: JobStatus | None = None,
        owner: str | None = None,
    ) -> list[Job]:
        """Newest first, strictly after `after`, of one status and one owner if asked."""
        jobs = sorted(self.jobs.values(), key=_newest_first, reverse=True)
        if owner is not None:
            jobs = [j for j in jobs if j.owner == owner]
        if status is not None:
            jobs = [j for j in jobs if j.status == status]
        if after is not None:
            jobs = [j for j in jobs if _newest_first(j) < (after.created_at, after.guid)]
        return jobs[:limit]

    def _update(self, job: Job, **changes: object) -> Job:
        updated = job.model_copy(update=changes)
        self.jobs[job.id] = updated
        return updated

    async def claim(
        self, job_id: UUID, *, now: datetime, lease_until: datetime, max_attempts: int
    ) -> Job | None:
        """Queued, or running with an expired lease, and attempts left: now ours."""
        job = self.jobs.get(job_id)
        if job is None or job.attempts >= max_attempts:
            return None
        expired = job.status == JobStatus.RUNNING and job.lease_until is not None and job.lease_until < now
        if job.status != JobStatus.QUEUED and not expired:
            return None
        return self._update(
            job,
            status=JobStatus.RUNNING,
            attempts=job.attempts + 1,
            lease_until=lease_until,
            started_at=job.started_at or now,
        )

    async def renew(self, job_id: UUID, *, attempt: int, lease_until: datetime) -> Job | None:
        """Extend the lease if still held by `attempt`."""
        job = self.jobs.get(job_id)
        if job is None or job.status != JobStatus.RUNNING or job.attempts != attempt:
            return None
        return self._update(job, lease_until=lease_until)

    async def finish(
        self,
        job_id: UUID,
        *,
        attempt: int,
        status: JobStatus,
        now: datetime,
        image_guid: UUID | None = None,
        error: JobError | None = None,
    ) -> bool:
        """Finish the job if still held by `attempt`."""
        job = self.jobs.get(job_id)
        if job is None or job.status != JobStatus.RUNNING or job.attempts != attempt:
            return False
        self._update(
            job, status=status, finished_at=now, lease_until=None, image_guid=image_guid, error=error
        )
        self._mark_events_pending(job)
        return True

    async def cancel(self, job_id: UUID, *, now: datetime) -> Job:
        """Cancel a queued job; flag a running one."""
        job = await self.get(job_id)
        if job.status == JobStatus.QUEUED:
            self._mark_events_pending(job)
            return self._update(job, status=JobStatus.CANCELED, finished_at=now, cancel_requested=True)
        if job.status == JobStatus.RUNNING:
            return self._update(job, cancel_requested=True)
        return job

    def _mark_events_pending(self, job: Job) -> None:
        if job.webhook is not None:
            self._events_pending.add(job.id)

    async def list_events_pending(self, *, finished_before: datetime, limit: int) -> list[Job]:
        """Finished jobs whose final event is not yet recorded, oldest finish first."""
        pending = [
            job
            for job_id in self._events_pending
            if (job := self.jobs.get(job_id)) is not None
            and job.finished_at is not None
            and job.finished_at < finished_before
        ]
        return sorted(pending, key=lambda j: (j.finished_at, j.id))[:limit]

    async def clear_events_pending(self, job_id: UUID) -> None:
        """Forget the flag."""
        self._events_pending.discard(job_id)

    async def mark_published(self, job_id: UUID) -> None:
        """Note the message went out."""
        if (job := self.jobs.get(job_id)) is not None:
            self._update(job, published=True)

    async def list_stale(self, *, now: datetime, limit: int) -> list[UUID]:
        """Unpublished queued jobs and running ones whose lease expired."""
        stale = [
            j
            for j in self.jobs.values()
            if (j.status == JobStatus.QUEUED and not j.published)
            or (j.status == JobStatus.RUNNING and j.lease_until is not None and j.lease_until < now)
        ]
        return [j.id for j in sorted(stale, key=_newest_first)[:limit]]

    async def list_unfinished(self, *, limit: int) -> list[UUID]:
        """Queued and running jobs, oldest first."""
        unfinished = [j for j in self.jobs.values() if not j.status.finished]
        return [j.id for j in sorted(unfinished, key=_newest_first)[:limit]]

    async def release_idempotency_key(self, job_id: UUID) -> None:
        """Free the key of a finished job."""
        job = self.jobs.get(job_id)
        if job is not None and job.status.finished:
            self._update(job, idempotency_key=None)

    async def forget_idempotency_keys(self, *, older_than: datetime) -> int:
        """Free the keys of old jobs."""
        old = [j for j in self.jobs.values() if j.idempotency_key is not None and j.created_at < older_than]
        for job in old:
            self._update(job, idempotency_key=None)
        return len(old)

    async def purge_finished(self, *, older_than: datetime) -> int:
        """Drop jobs finished before `older_than`."""
        old = [
            j.id
            for j in self.jobs.values()
            if j.status.finished and j.finished_at is not None and j.finished_at < older_than
        ]
        for job_id in old:
            del self.jobs[job_id]
            self._events_pending.discard(job_id)
        return len(old)


class InMemoryJobQueue:
    """An asyncio queue inside one process: the embedded default's engine, with no broker.

    Messages live only in memory; the jobs table is the durable record, and the API re-publishes
    every unfinished job at start-up, so a crash loses none.
    """

    def __init__(self, *, delivery_limit: int = 5, redelivery_s: float = 1.0) -> None:
        self._queue: asyncio.Queue[UUID] = asyncio.Queue()
        self._delivery_limit = delivery_limit
        self._redelivery_s = redelivery_s
        self._deliveries: dict[UUID, int] = {}

    @property
    def in_process(self) -> bool:
        """Jobs run in this process."""
        return True

    @property
    def pending(self) -> int:
        """Messages not yet taken by a consumer."""
        return self._queue.qsize()

    async def publish(self, job_id: UUID) -> None:
        """Queue the id."""
        self._queue.put_nowait(job_id)

    async def consume(self, handler: JobHandler, *, concurrency: int) -> None:
        """Run `concurrency` consumers until cancelled. A handler that raises has its message handed back
        after a pause, as a broker would; after `delivery_limit` deliveries it is dropped (the job row
        stays unfinished, and the sweep or the next start publishes it again)."""

        async def consumer() -> None:
            while True:
                job_id = await self._queue.get()
                try:
                    await handler(job_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._redeliver_later(job_id)
                else:
                    self._deliveries.pop(job_id, None)

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(consumer())

    def _redeliver_later(self, job_id: UUID) -> None:
        deliveries = self._deliveries.get(job_id, 0) + 1
        if deliveries >= self._delivery_limit:
            self._deliveries.pop(job_id, None)
            log.exception("job %s failed in its handler %d times; dropping its message", job_id, deliveries)
            return
        self._deliveries[job_id] = deliveries
        log.exception("job %s failed in its handler; delivering it again in %gs", job_id, self._redelivery_s)
        asyncio.get_running_loop().call_later(self._redelivery_s, self._queue.put_nowait, job_id)

    async def ping(self) -> None:
        """Always up."""

    async def close(self) -> None:
        """Drop undelivered messages: their jobs are still `queued` in the repository."""
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._queue.get_nowait()
