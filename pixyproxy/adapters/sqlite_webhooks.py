"""SQLite webhook deliveries: the deliveries table beside the jobs, on the image repository's connection."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from uuid import UUID

from pixyproxy.adapters.sql_rows import DELIVERY_COLUMNS
from pixyproxy.adapters.sqlite import ROWS, SqliteImageRepository, _timestamp
from pixyproxy.domain.exceptions import RepositoryUnavailableError
from pixyproxy.domain.models import NewWebhookDelivery, WebhookDelivery, WebhookDeliveryStatus

_INSERT = (
    "INSERT INTO webhook_deliveries (id, job_id, event, url, body, status, created_at, next_attempt_at)"
    " VALUES (:id, :job_id, :event, :url, :body, :status, :created_at, :next_attempt_at)"
    " ON CONFLICT (id) DO NOTHING"
)
# One statement, so the choice and the lease are one write: SQLite takes its write lock before the
# subquery reads, and a second sender (another task on this connection, or another process on the
# file) waits for it and then finds these rows leased.
_CLAIM = (
    "UPDATE webhook_deliveries SET lease_until = :lease_until WHERE id IN ("  # noqa: S608  # constants only
    "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now"
    " AND (lease_until IS NULL OR lease_until < :now) ORDER BY next_attempt_at, id LIMIT :limit)"
    " RETURNING " + DELIVERY_COLUMNS
)
_RECORD = (
    "UPDATE webhook_deliveries SET status = :status, attempts = attempts + 1, last_status = :last_status,"
    " last_attempt_at = :attempted_at, next_attempt_at = :next_attempt_at, lease_until = NULL"
    " WHERE id = :id"
)
_FOR_JOB = (
    "SELECT " + DELIVERY_COLUMNS + " FROM webhook_deliveries"  # noqa: S608  # constants only
    " WHERE job_id = :job_id ORDER BY created_at, id"
)
_PURGE = "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < :older_than"


class SqliteWebhookDeliveries:
    """Webhook deliveries in the embedded SQLite file. A claim is one conditional UPDATE."""

    def __init__(self, database: SqliteImageRepository) -> None:
        self._db = database

    async def add(self, delivery: NewWebhookDelivery) -> None:
        """Record a pending delivery unless its id is known."""
        try:
            await self._db.execute(_INSERT, ROWS.delivery_to_row(delivery))
        except sqlite3.IntegrityError as err:  # not the id (that conflict does nothing): a bad row
            raise RepositoryUnavailableError(f"webhook delivery {delivery.id} refused: {err}") from err

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        """Lease the due, unleased pending deliveries, oldest due first."""
        rows = await self._db.fetch(
            _CLAIM, {"now": _timestamp(now), "lease_until": _timestamp(lease_until), "limit": limit}
        )
        # RETURNING answers in no promised order.
        return sorted((ROWS.row_to_delivery(row) for row in rows), key=lambda d: (d.next_attempt_at, d.id))

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: WebhookDeliveryStatus,
        last_status: str,
        attempted_at: datetime,
        next_attempt_at: datetime,
    ) -> None:
        """Count the attempt, store its outcome and release the lease."""
        await self._db.execute(
            _RECORD,
            {
                "id": delivery_id,
                "status": status.value,
                "last_status": last_status,
                "attempted_at": _timestamp(attempted_at),
                "next_attempt_at": _timestamp(next_attempt_at),
            },
        )

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """One job's deliveries, oldest first."""
        rows = await self._db.fetch(_FOR_JOB, {"job_id": str(job_id)})
        return [ROWS.row_to_delivery(row) for row in rows]

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished deliveries created before `older_than`."""
        return await self._db.execute(_PURGE, {"older_than": _timestamp(older_than)})
