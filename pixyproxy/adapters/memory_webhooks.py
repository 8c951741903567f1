"""In-memory webhook deliveries: the fake of the unit tests, and the store of a server with no database."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pixyproxy.domain.models import NewWebhookDelivery, WebhookDelivery, WebhookDeliveryStatus


class InMemoryWebhookDeliveries:
    """Deliveries in a dict; claims and attempts behave as the SQL adapters' conditional updates do."""

    def __init__(self) -> None:
        self.deliveries: dict[str, WebhookDelivery] = {}

    async def add(self, delivery: NewWebhookDelivery) -> None:
        """Record it unless its id is known."""
        self.deliveries.setdefault(delivery.id, WebhookDelivery(**delivery.model_dump()))

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        """Lease the due, unleased pending deliveries, oldest due first."""
        due = sorted(
            (
                d
                for d in self.deliveries.values()
                if d.status == WebhookDeliveryStatus.PENDING
                and d.next_attempt_at <= now
                and (d.lease_until is None or d.lease_until < now)
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )[:limit]
        claimed = [d.model_copy(update={"lease_until": lease_until}) for d in due]
        self.deliveries.update({d.id: d for d in claimed})
        return claimed

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: WebhookDeliveryStatus,
        last_status: str,
        attempted_at: datetime,
        next_attempt_at: datetime,
    ) -> None:
        """Count the attempt and release the lease."""
        delivery = self.deliveries[delivery_id]
        self.deliveries[delivery_id] = delivery.model_copy(
            update={
                "status": status,
                "attempts": delivery.attempts + 1,
                "last_status": last_status,
                "last_attempt_at": attempted_at,
                "next_attempt_at": next_attempt_at,
                "lease_until": None,
            }
        )

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """One job's deliveries, oldest first."""
        mine = [d for d in self.deliveries.values() if d.job_id == job_id]
        return sorted(mine, key=lambda d: (d.created_at, d.id))

    async def purge(self, *, older_than: datetime) -> int:
        """Drop finished deliveries created before `older_than`."""
        old = [
            d.id
            for d in self.deliveries.values()
            if d.status != WebhookDeliveryStatus.PENDING and d.created_at < older_than
        ]
        for delivery_id in old:
            del self.deliveries[delivery_id]
        return len(old)
