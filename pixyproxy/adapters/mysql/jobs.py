"""MySQL/MariaDB job repository: the jobs table beside the images, on the image repository's pool.

MariaDB has no UPDATE ... RETURNING, so a transition is a conditional UPDATE, its affected-row
count, then a SELECT of the row. Every value travels as a `%(name)s` parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import pymysql
from pymysql.constants import ER

from pixyproxy.adapters.mysql.connection import error_number
from pixyproxy.adapters.mysql.repository import ROWS, MySqlImageRepository
from pixyproxy.adapters.sql_rows import JOB_COLUMNS
from pixyproxy.adapters.sqlite_jobs import _finish_params
from pixyproxy.domain.exceptions import JobNotFoundError, RepositoryUnavailableError
from pixyproxy.domain.models import Job, JobError, JobStatus, NewJob, PageKey

_SELECT = "SELECT " + JOB_COLUMNS + " FROM jobs"  # noqa: S608  # constants only; values are %(named)s
_BY_ID = _SELECT + " WHERE id = %(id)s"
_INSERT = (
    "INSERT INTO jobs (id, prompt, size, status, attempts, created_at, started_at, lease_until, idem_key,"
    " request_hash, published, webhook, webhook_events, owner) VALUES (%(id)s, %(prompt)s, %(size)s,"
    " %(status)s, %(attempts)s, %(created_at)s, %(started_at)s, %(lease_until)s, %(idem_key)s,"
    " %(request_hash)s, %(published)s, %(webhook)s, %(webhook_events)s, %(owner)s)"
)
# Our own row (a retried INSERT that had committed) or the holder of the key; a NULL key matches none.
_OURS_OR_HOLDER = _SELECT + " WHERE id = %(id)s OR idem_key = %(idem_key)s"
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
# Spelled out rather than as a row comparison, so MySQL uses the (created_at, id) indexes.
_BEFORE_KEY = "(created_at < %(created_at)s OR (created_at = %(created_at)s AND id < %(after_id)s))"
_OF_STATUS = "status = %(status)s"
_CLAIM = (
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = %(lease_until)s,"
    " started_at = COALESCE(started_at, %(now)s)"
    " WHERE id = %(id)s AND attempts < %(max_attempts)s"
    " AND (status = 'queued' OR (status = 'running' AND lease_until < %(now)s))"
)
_RENEW = (
    "UPDATE jobs SET lease_until = %(lease_until)s"
    " WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s"
)
_FINISH = (
    "UPDATE jobs SET status = %(status)s, finished_at = %(now)s, lease_until = NULL,"
    " image_guid = %(image_guid)s, error = %(error)s, events_pending = webhook IS NOT NULL"
    " WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s"
)
# MySQL evaluates SET assignments left to right, each seeing the ones before it (SQLite sees the
# old row throughout): finished_at must test the status before status is overwritten.
_CANCEL = (
    "UPDATE jobs SET finished_at = CASE WHEN status = 'queued' THEN %(now)s ELSE finished_at END,"
    " events_pending = CASE WHEN status = 'queued' THEN webhook IS NOT NULL ELSE events_pending END,"
    " status = CASE WHEN status = 'queued' THEN 'canceled' ELSE status END,"
    " cancel_requested = 1 WHERE id = %(id)s AND status IN ('queued', 'running')"
)
_EVENTS_PENDING = (
    _SELECT
    + " WHERE events_pending = 1 AND finished_at < %(before)s ORDER BY finished_at, id LIMIT %(limit)s"
)
_STALE = (
    "SELECT id FROM jobs WHERE (status = 'queued' AND published = 0)"
    " OR (status = 'running' AND lease_until < %(now)s) ORDER BY created_at, id LIMIT %(limit)s"
)
_UNFINISHED = (
    "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id LIMIT %(limit)s"
)
_ADD_ATTEMPTS = 5


class MySqlJobRepository:
    """Jobs in MySQL or MariaDB. Each transition is one conditional UPDATE."""

    def __init__(self, images: MySqlImageRepository) -> None:
        self._db = images

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        """Insert unless the idempotency key is held; then the holder."""
        row = ROWS.job_to_row(job)
        for _ in range(_ADD_ATTEMPTS):
            try:
                # Safe to resend on a lost connection: if the first INSERT had committed, the
                # second meets our own row's keys, and the look-up below recognises it by id.
                await self._db.execute(_INSERT, row, retry_lost=True)
            except pymysql.err.IntegrityError as err:
                if error_number(err) != ER.DUP_ENTRY:
                    raise RepositoryUnavailableError(
                        f"MySQL refused job {job.id} (error {error_number(err)})"
                    ) from err
            else:
                return job.as_added(), True
            found = [ROWS.row_to_job(r) for r in await self._db.fetch(_OURS_OR_HOLDER, row)]
            for held in found:
                if held.id == job.id:
                    return held, True
            if found:
                return found[0], False
            # The holder released its key between our two statements: insert again.
        raise RepositoryUnavailableError(f"idempotency key of job {job.id} kept changing hands")

    async def get(self, job_id: UUID) -> Job:
        """The job with this id."""
        rows = await self._db.fetch(_BY_ID, {"id": str(job_id)})
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
            where.append("owner = %(owner)s")
            params["owner"] = owner
        if status is not None:
            where.append(_OF_STATUS)
            params["status"] = status.value
        if after is not None:
            where.append(_BEFORE_KEY)
            params.update(created_at=ROWS.to_db_time(after.created_at), after_id=str(after.guid))
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + _NEWEST_FIRST
        return [ROWS.row_to_job(row) for row in await self._db.fetch(sql, params)]

    async def claim(
        self, job_id: UUID, *, now: datetime, lease_until: datetime, max_attempts: int
    ) -> Job | None:
        """Queued, or running with an expired lease, and attempts left: now ours."""
        lease = ROWS.to_db_time(lease_until)
        params = {
            "id": str(job_id),
            "now": ROWS.to_db_time(now),
            "lease_until": lease,
            "max_attempts": max_attempts,
        }
        # Not resent on a lost connection: a claim that had committed would then find the job
        # leased (to us) and answer None, stranding it until the lease expires.
        if await self._db.execute(_CLAIM, params, retry_lost=False) == 0:
            return None
        job = await self._read(job_id)
        # Our fresh lease keeps other claimers out, so this is the row we claimed (perhaps flagged
        # for cancelling since). Should the lease have been taken over already, the claim is lost.
        if job is None or job.status != JobStatus.RUNNING or job.lease_until != lease_until:
            return None
        return job

    async def renew(self, job_id: UUID, *, attempt: int, lease_until: datetime) -> Job | None:
        """Extend the lease if `attempt` still holds it."""
        params = {"id": str(job_id), "attempt": attempt, "lease_until": ROWS.to_db_time(lease_until)}
        # Setting the lease again is harmless; and the count is not the answer, because MySQL
        # counts changed rows and a renewal to the same instant changes none.
        await self._db.execute(_RENEW, params, retry_lost=True)
        job = await self._read(job_id)
        # attempts only grow and a finished job never runs again: if `attempt` holds the job now,
        # it held it when the UPDATE ran.
        if job is None or job.status != JobStatus.RUNNING or job.attempts != attempt:
            return None
        return job

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
        params = _finish_params(
            job_id,
            attempt=attempt,
            status=status,
            now=ROWS.to_db_time(now),
            image_guid=image_guid,
            error=error,
        )
        # Not resent on a lost connection: a finish that had committed would match nothing the
        # second time and be reported as lost.
        return await self._db.execute(_FINISH, params, retry_lost=False) > 0

    async def cancel(self, job_id: UUID, *, now: datetime) -> Job:
        """Cancel a queued job at once; flag a running one for its worker."""
        # Resending is harmless: a job canceled by the first statement is left alone by the second.
        await self._db.execute(_CANCEL, {"id": str(job_id), "now": ROWS.to_db_time(now)}, retry_lost=True)
        return await self.get(job_id)

    async def list_events_pending(self, *, finished_before: datetime, limit: int) -> list[Job]:
        """Finished jobs whose final event is not yet recorded, oldest finish first."""
        rows = await self._db.fetch(
            _EVENTS_PENDING, {"before": ROWS.to_db_time(finished_before), "limit": limit}
        )
        return [ROWS.row_to_job(row) for row in rows]

    async def clear_events_pending(self, job_id: UUID) -> None:
        """Forget the flag (resending is harmless)."""
        await self._db.execute(
            "UPDATE jobs SET events_pending = 0 WHERE id = %(id)s", {"id": str(job_id)}, retry_lost=True
        )

    async def mark_published(self, job_id: UUID) -> None:
        """Note the message went out."""
        await self._db.execute(
            "UPDATE jobs SET published = 1 WHERE id = %(id)s", {"id": str(job_id)}, retry_lost=True
        )

    async def list_stale(self, *, now: datetime, limit: int) -> list[UUID]:
        """Unpublished queued jobs, and running ones whose lease expired."""
        rows = await self._db.fetch(_STALE, {"now": ROWS.to_db_time(now), "limit": limit})
        return [UUID(row["id"]) for row in rows]

    async def list_unfinished(self, *, limit: int) -> list[UUID]:
        """Queued and running jobs, oldest first."""
        rows = await self._db.fetch(_UNFINISHED, {"limit": limit})
        return [UUID(row["id"]) for row in rows]

    async def release_idempotency_key(self, job_id: UUID) -> None:
        """Free the key of a finished job."""
        await self._db.execute(
            "UPDATE jobs SET idem_key = NULL"
            " WHERE id = %(id)s AND status IN ('succeeded', 'failed', 'canceled')",
            {"id": str(job_id)},
            retry_lost=True,
        )

    async def forget_idempotency_keys(self, *, older_than: datetime) -> int:
        """Free the keys of jobs created before `older_than`."""
        return await self._db.execute(
            "UPDATE jobs SET idem_key = NULL WHERE idem_key IS NOT NULL AND created_at < %(older_than)s",
            {"older_than": ROWS.to_db_time(older_than)},
            retry_lost=True,
        )

    async def purge_finished(self, *, older_than: datetime) -> int:
        """Delete jobs finished before `older_than`."""
        return await self._db.execute(
            "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled')"
            " AND finished_at < %(older_than)s",
            {"older_than": ROWS.to_db_time(older_than)},
            retry_lost=True,
        )

    async def _read(self, job_id: UUID) -> Job | None:
        rows = await self._db.fetch(_BY_ID, {"id": str(job_id)})
        return ROWS.row_to_job(rows[0]) if rows else None
