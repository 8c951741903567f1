"""The webhook ports: where deliveries are recorded (so none is lost or sent twice at once) and how
one is sent (signed, over HTTP, to an address that passed the SSRF guard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from pixyproxy.domain.models import NewWebhookDelivery, WebhookDelivery, WebhookDeliveryStatus


class WebhookDeliveries(Protocol):
    """Stores deliveries. Every method may raise RepositoryUnavailableError."""

    async def add(self, delivery: NewWebhookDelivery) -> None:
        """Record a pending delivery; adding one whose id exists changes nothing (an event is told once)."""
        ...

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        """Take up to `limit` pending deliveries due by `now` whose lease (if any) has expired, leasing
        each until `lease_until`, so no other sender attempts them meanwhile."""
        ...

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: WebhookDeliveryStatus,
        last_status: str,
        attempted_at: datetime,
        next_attempt_at: datetime,
    ) -> None:
        """Count one attempt and its outcome, release the lease, and set when the next one is due."""
        ...

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """Every delivery of one job's events, oldest first."""
        ...

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished deliveries created before `older_than`; return how many."""
        ...


@dataclass(frozen=True)
class SendResult:
    """What one attempt met: an HTTP status, or none (timeout, refused connection, refused address)."""

    status_code: int | None
    detail: str
    retry_after_s: float | None = None


class WebhookSender(Protocol):
    """Sends signed webhook requests."""

    @property
    def can_sign(self) -> bool:
        """Whether a signing secret is configured: without one, nothing is ever sent."""
        ...

    async def check_destination(self, url: str) -> None:
        """Refuse a URL whose host is or resolves to a loopback, private, link-local or multicast
        address (unless configured to allow them). Raises WebhookRefusedError."""
        ...

    async def send(self, url: str, *, webhook_id: str, timestamp: datetime, body: str) -> SendResult:
        """POST `body` signed for (`webhook_id`, `timestamp`); never follows a redirect; never raises
        for the receiver's failures (they are the SendResult)."""
        ...

    async def close(self) -> None:
        """Release the HTTP client."""
        ...
