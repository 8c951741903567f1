"""SQLite job repository: the jobs table beside the images, on the image repository's connection."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any
from uuid import UUID

from pixyproxy.adapters.sql_rows import JOB_COLUMNS
from pixyproxy.adapters.sqlite import ROWS, SqliteImageRepository, _timestamp
from pixyproxy.domain.exceptions import JobNotFoundError, RepositoryUnavailableError
from pixyproxy.domain.models import Job, JobError, JobStatus, NewJob, PageKey

_SELECT = "SELECT " + JOB_COLUMNS + " FROM jobs"  # noqa: S608  # constants only; values are :named
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC LIMIT :limit"
_INSERT = (
    "INSERT INTO jobs (id, prompt, size, status, attempts, created_at, started_at, lease_until, idem_key,"  # noqa: S608
    " request_hash, published, webhook, webhook_events, owner) VALUES (:id, :prompt, :size, :status,"
    " :attempts, :created_at, :started_at, :lease_until, :idem_key, :request_hash, :published, :webhook,"
    " :webhook_events, :owner) RETURNING " + JOB_COLUMNS
)
_FINISHED = "('succeeded', 'failed', 'canceled')"
_CLAIMABLE = (
    " WHERE id = :id AND attempts < :max_attempts"
    " AND (status = 'queued' OR (status = 'running' AND lease_until < :now))"
)


class SqliteJobRepository:
    """Jobs in the embedded SQLite file. Each transition is one conditional UPDATE."""

    def __init__(self, database: SqliteImageRepository) -> None:
        self._db = database

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        """Insert unless the idempotency key is held; then the holder."""
        for _ in range(5):
            try:
                rows = await self._db.fetch(
                    _INSERT,
                    ROWS.job_to_row(job),
                )
                return ROWS.row_to_job(rows[0]), True
            except sqlite3.IntegrityError as err:
                if job.idempotency_key is None:
                    raise RepositoryUnavailableError(f"job {job.id} refused: {err}") from err
            held = await self._db.fetch(_SELECT + " WHERE idem_key = :key", {"key": job.idempotency_key})
            if held:
                return ROWS.row_to_job(held[0]), False
            # The holder freed its key between our two statements: insert again.
        raise RepositoryUnavailableError(f"idempotency key {job.idempotency_key!r} kept changing hands")

    async def get(self, job_id: UUID) -> Job:
        """The job with this id."""
        rows = await self._db.fetch(_SELECT + " WHERE id = :id", {"id": str(job_id)})
        if not rows:
            raise JobNotFoundError(job_id)
        return ROWS.row_to_job(rows[0])

    async def list_page(
        self,
        *,
        limit: int,
        after: PageKey | None = None,
        status: JobStatus | None = None,
        owner: str | None = None,
    ) -> list[Job]:
        """Newest first by (created_at, id), keyset-paged, of one status and one owner if asked."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if owner is not None:
            where.append("owner = :owner")
            params["owner"] = owner
        if status is not None:
            where.append("status = :status")
            params["status"] = status.value
        if after is not None:
            where.append("(created_at, id) < (:created_at, :after_id)")
            params.update(created_at=_timestamp(after.created_at), after_id=str(after.guid))
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _NEWEST_FIRST
        return [ROWS.row_to_job(row) for row in await self._db.fetch(sql, params)]

    async def claim(
        self, job_id: UUID, *, now: datetime, lease_until: datetime, max_attempts: int
    ) -> Job | None:
        """Queued, or running with an expired lease, and attempts left: now ours."""
        rows = await self._db.fetch(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = :lease_until,"  # noqa: S608
            " started_at = COALESCE(started_at, :now)" + _CLAIMABLE + " RETURNING " + JOB_COLUMNS,
            {
                "id": str(job_id),
                "now": _timestamp(now),
                "lease_until": _timestamp(lease_until),
                "max_attempts": max_attempts,
            },
        )
        return ROWS.row_to_job(rows[0]) if rows else None

    async def renew(self, job_id: UUID, *, attempt: int, lease_until: datetime) -> Job | None:
        """Extend the lease if `attempt` still holds it."""
        rows = await self._db.fetch(
            "UPDATE jobs SET lease_until = :lease_until"  # noqa: S608  # constants only; values are :named
            " WHERE id = :id AND status = 'running' AND attempts = :attempt RETURNING " + JOB_COLUMNS,
            {"id": str(job_id), "attempt": attempt, "lease_until": _timestamp(lease_until)},
        )
        return ROWS.row_to_job(rows[0]) if rows else None

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
        """Finish the job if `attempt` still holds it."""
        changed = await self._db.execute(
            "UPDATE jobs SET status = :status, finished_at = :now, lease_until = NULL,"
            " image_guid = :image_guid, error = :error, events_pending = webhook IS NOT NULL"
            " WHERE id = :id AND status = 'running' AND attempts = :attempt",
            _finish_params(
                job_id,
                attempt=attempt,
                status=status,
                now=_timestamp(now),
                image_guid=image_guid,
                error=error,
            ),
        )
        return changed > 0

    async def cancel(self, job_id: UUID, *, now: datetime) -> Job:
        """Cancel a queued job at once; flag a running one for its worker."""
        await self._db.execute(
            "UPDATE jobs SET status = CASE WHEN status = 'queued' THEN 'canceled' ELSE status END,"
            " finished_at = CASE WHEN status = 'queued' THEN :now ELSE finished_at END,"
            " events_pending = CASE WHEN status = 'queued' THEN webhook IS NOT NULL ELSE events_pending END,"
            " cancel_requested = 1 WHERE id = :id AND status IN ('queued', 'running')",
            {"id": str(job_id), "now": _timestamp(now)},
        )
        return await self.get(job_id)

    async def list_events_pending(self, *, finished_before: datetime, limit: int) -> list[Job]:
        """Finished jobs whose final event is not yet recorded, oldest finish first (a partial index)."""
        rows = await self._db.fetch(
            _SELECT
            + " WHERE events_pending = 1 AND finished_at < :before ORDER BY finished_at, id LIMIT :limit",
            {"before": _timestamp(finished_before), "limit": limit},
        )
        return [ROWS.row_to_job(row) for row in rows]

    async def clear_events_pending(self, job_id: UUID) -> None:
        """Forget the flag."""
        await self._db.execute("UPDATE jobs SET events_pending = 0 WHERE id = :id", {"id": str(job_id)})

    async def mark_published(self, job_id: UUID) -> None:
        """Note the message went out."""
        await self._db.execute("UPDATE jobs SET published = 1 WHERE id = :id", {"id": str(job_id)})

    async def list_stale(self, *, now: datetime, limit: int) -> list[UUID]:
        """Unpublished queued jobs, and running ones whose lease expired."""
        rows = await self._db.fetch(
            "SELECT id FROM jobs WHERE (status = 'queued' AND published = 0)"
            " OR (status = 'running' AND lease_until < :now) ORDER BY created_at, id LIMIT :limit",
            {"now": _timestamp(now), "limit": limit},
        )
        return [UUID(row["id"]) for row in rows]

    async def list_unfinished(self, *, limit: int) -> list[UUID]:
        """Queued and running jobs, oldest first."""
        rows = await self._db.fetch(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id LIMIT :limit",
            {"limit": limit},
        )
        return [UUID(row["id"]) for row in rows]

    async def release_idempotency_key(self, job_id: UUID) -> None:
        """Free the key of a finished job."""
        await self._db.execute(
            "UPDATE jobs SET idem_key = NULL WHERE id = :id AND status IN " + _FINISHED,  # noqa: S608
            {"id": str(job_id)},
        )

    async def forget_idempotency_keys(self, *, older_than: datetime) -> int:
        """Free the keys of jobs created before `older_than`."""
        return await self._db.execute(
            "UPDATE jobs SET idem_key = NULL WHERE idem_key IS NOT NULL AND created_at < :older_than",
            {"older_than": _timestamp(older_than)},
        )

    async def purge_finished(self, *, older_than: datetime) -> int:
        """Delete jobs finished before `older_than`."""
        return await self._db.execute(
            "DELETE FROM jobs WHERE status IN " + _FINISHED + " AND finished_at < :older_than",  # noqa: S608
            {"older_than": _timestamp(older_than)},
        )


def _finish_params(
    job_id: UUID,
    *,
    attempt: int,
    status: JobStatus,
    now: Any,
    image_guid: UUID | None,
    error: JobError | None,
) -> dict[str, Any]:
    """The parameters of a finishing UPDATE, shared by the SQL job repositories."""
    return {
        "id": str(job_id),
        "attempt": attempt,
        "status": status.value,
        "now": now,
        "image_guid": str(image_guid) if image_guid else None,
        "error": error.model_dump_json() if error else None,
    }
