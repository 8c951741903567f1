"""MySQL/MariaDB webhook deliveries: the deliveries table beside the jobs, on the image repository's pool.

Every value travels as a `%(name)s` parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import pymysql
from pymysql.constants import ER

from pixyproxy.adapters.mysql.connection import error_number
from pixyproxy.adapters.mysql.repository import ROWS, MySqlImageRepository
from pixyproxy.adapters.sql_rows import DELIVERY_COLUMNS
from pixyproxy.domain.exceptions import RepositoryUnavailableError
from pixyproxy.domain.models import NewWebhookDelivery, WebhookDelivery, WebhookDeliveryStatus

_INSERT = (
    "INSERT INTO webhook_deliveries (id, job_id, event, url, body, status, created_at, next_attempt_at)"
    " VALUES (%(id)s, %(job_id)s, %(event)s, %(url)s, %(body)s, %(status)s, %(created_at)s,"
    " %(next_attempt_at)s)"
)
# A claim runs in one transaction: this locking read takes the due rows, oldest due first, skipping
# (not waiting for) rows another sender's claim has locked; the UPDATE below leases the rows taken,
# and COMMIT releases the locks. A locking read sees the latest committed rows, not the snapshot, so
# a row leased by a claim that committed first fails `lease_until < now` and is not taken again.
# Each row is therefore handed to one claim. SKIP LOCKED needs MariaDB 10.6+ or MySQL 8.0+; the
# (status, next_attempt_at) index keeps the scan, and so the locks, to the rows handed out.
_DUE = (
    "SELECT " + DELIVERY_COLUMNS + " FROM webhook_deliveries"  # noqa: S608  # constants only
    " WHERE status = 'pending' AND next_attempt_at <= %(now)s"
    " AND (lease_until IS NULL OR lease_until < %(now)s)"
    " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)
_LEASE = "UPDATE webhook_deliveries SET lease_until = %(lease_until)s WHERE id IN "
_RECORD = (
    "UPDATE webhook_deliveries SET status = %(status)s, attempts = attempts + 1,"
    " last_status = %(last_status)s, last_attempt_at = %(attempted_at)s,"
    " next_attempt_at = %(next_attempt_at)s, lease_until = NULL WHERE id = %(id)s"
)
_FOR_JOB = (
    "SELECT " + DELIVERY_COLUMNS + " FROM webhook_deliveries"  # noqa: S608  # constants only
    " WHERE job_id = %(job_id)s ORDER BY created_at, id"
)
_PURGE = "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < %(older_than)s"


class MySqlWebhookDeliveries:
    """Webhook deliveries in MySQL or MariaDB. A claim is one short transaction."""

    def __init__(self, images: MySqlImageRepository) -> None:
        self._db = images

    async def add(self, delivery: NewWebhookDelivery) -> None:
        """Record a pending delivery unless its id is known."""
        try:
            # Safe to resend on a lost connection: a first INSERT that had committed makes the
            # second a duplicate, which is the answer "already recorded".
            await self._db.execute(_INSERT, ROWS.delivery_to_row(delivery), retry_lost=True)
        except pymysql.err.IntegrityError as err:
            # Only a duplicate id is "known already"; any other refusal is an error (which is why
            # this is no INSERT IGNORE: that would turn those into warnings and a silent no-op).
            if error_number(err) != ER.DUP_ENTRY:
                raise RepositoryUnavailableError(
                    f"MySQL refused webhook delivery {delivery.id} (error {error_number(err)})"
                ) from err

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        """Lease the due, unleased pending deliveries, oldest due first (see _DUE)."""
        lease = ROWS.to_db_time(lease_until)

        async def claim(cursor: Any) -> list[WebhookDelivery]:
            await cursor.execute(_DUE, {"now": ROWS.to_db_time(now), "limit": limit})
            rows = list(await cursor.fetchall())
            if not rows:
                return []
            ids = {"id" + str(i): row["id"] for i, row in enumerate(rows)}
            placeholders = ", ".join("%(" + name + ")s" for name in ids)
            await cursor.execute(_LEASE + "(" + placeholders + ")", {"lease_until": lease, **ids})
            return [ROWS.row_to_delivery({**row, "lease_until": lease}) for row in rows]

        # Not resent on a lost connection: a claim that had committed would find its rows leased.
        return await self._db.transaction(claim)

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
        params = {
            "id": delivery_id,
            "status": status.value,
            "last_status": last_status,
            "attempted_at": ROWS.to_db_time(attempted_at),
            "next_attempt_at": ROWS.to_db_time(next_attempt_at),
        }
        # Not resent on a lost connection: an UPDATE that had committed would count the attempt twice.
        await self._db.execute(_RECORD, params, retry_lost=False)

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """One job's deliveries, oldest first."""
        rows = await self._db.fetch(_FOR_JOB, {"job_id": str(job_id)})
        return [ROWS.row_to_delivery(row) for row in rows]

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished deliveries created before `older_than`."""
        return await self._db.execute(_PURGE, {"older_than": ROWS.to_db_time(older_than)}, retry_lost=True)
