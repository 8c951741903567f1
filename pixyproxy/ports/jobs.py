"""The job ports: where generation jobs are recorded (the source of truth) and how workers are woken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol
from uuid import UUID

from pixyproxy.domain.models import Job, JobError, JobStatus, NewJob, PageKey


class JobRepository(Protocol):
    """Stores jobs. Every state change is a conditional update, so redelivered messages and racing
    workers are settled here. Every method may raise RepositoryUnavailableError."""

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        """Insert a `queued` job, or, with a `lease_until`, one already claimed (NewJob.as_added);
        (the job, True). If its idempotency key is held by another job, nothing is inserted: (that
        job, False)."""
        ...

    async def get(self, job_id: UUID) -> Job:
        """The job with this id. Raises JobNotFoundError."""
        ...

    async def list_page(
        self,
        *,
        limit: int,
        after: PageKey | None = None,
        status: JobStatus | None = None,
        owner: str | None = None,
    ) -> list[Job]:
        """Up to `limit` jobs, newest first by (created_at, id), strictly after `after`, of one
        status and one owner where given."""
        ...

    async def claim(
        self, job_id: UUID, *, now: datetime, lease_until: datetime, max_attempts: int
    ) -> Job | None:
        """Move a job to `running` (attempts + 1, leased until `lease_until`) if it is `queued`, or
        `running` with a lease that expired before `now`, and has had fewer than `max_attempts`.
        The claimed job, or None when it was not claimable."""
        ...

    async def renew(self, job_id: UUID, *, attempt: int, lease_until: datetime) -> Job | None:
        """Extend the lease of the job if `attempt` still holds it; the job, or None if lost."""
        ...

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
        """Move a `running` job held by `attempt` to a finished status; False if it was not held.
        A job with a webhook becomes events-pending in the same write (see list_events_pending)."""
        ...

    async def cancel(self, job_id: UUID, *, now: datetime) -> Job:
        """Cancel a `queued` job at once, or ask its worker to stop a `running` one; the job after.
        A queued job with a webhook becomes events-pending in the same write. Raises JobNotFoundError."""
        ...

    async def list_events_pending(self, *, finished_before: datetime, limit: int) -> list[Job]:
        """Finished jobs with a webhook whose final event was not yet recorded as delivered-to-be
        (clear_events_pending), finished before `finished_before`, oldest finish first: the outbox
        of a process that died between finishing a job and writing its webhook delivery."""
        ...

    async def clear_events_pending(self, job_id: UUID) -> None:
        """Record that the job's final event has its webhook delivery; unknown jobs are no error."""
        ...

    async def mark_published(self, job_id: UUID) -> None:
        """Record that the job's message reached the queue."""
        ...

    async def list_stale(self, *, now: datetime, limit: int) -> list[UUID]:
        """Jobs that need a message: `queued` ones never published, and `running` ones whose lease
        expired before `now` (their worker died)."""
        ...

    async def list_unfinished(self, *, limit: int) -> list[UUID]:
        """Every `queued` or `running` job, oldest first: what an in-process queue must pick up again."""
        ...

    async def release_idempotency_key(self, job_id: UUID) -> None:
        """Free the idempotency key a finished job holds, so a retry may start a new job."""
        ...

    async def forget_idempotency_keys(self, *, older_than: datetime) -> int:
        """Free the keys of jobs created before `older_than`; return how many."""
        ...

    async def purge_finished(self, *, older_than: datetime) -> int:
        """Delete finished jobs that finished before `older_than`; return how many."""
        ...


JobHandler = Callable[[UUID], Awaitable[None]]


class JobQueue(Protocol):
    """Carries job ids from the API to workers. A message is only a wake-up call: the job row decides.

    Every method raises JobQueueUnavailableError when the broker cannot be reached.
    """

    @property
    def in_process(self) -> bool:
        """True when jobs run in the publishing process (no broker): the API runs them itself."""
        ...

    async def publish(self, job_id: UUID) -> None:
        """Send the job's id to a worker; returns once the queue holds it durably."""
        ...

    async def consume(self, handler: JobHandler, *, concurrency: int) -> None:
        """Run `handler(job_id)` for each message, up to `concurrency` at once, until cancelled.

        A message is acknowledged when its handler returns and handed back for redelivery when the
        handler raises; the broker dead-letters one that keeps failing, rather than looping on it.
        """
        ...

    async def ping(self) -> None:
        """Check the queue answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class JobEvents(Protocol):
    """Told when a job starts running and when it finishes (metrics, webhooks). Must not raise."""

    async def started(self, job: Job) -> None:
        """A worker has claimed the job (any attempt)."""
        ...

    async def finished(self, job: Job) -> None:
        """The job has reached succeeded, failed or canceled."""
        ...
