"""Webhooks for jobs: one delivery row per event and URL, sent and retried on a schedule.

The deliveries live in the database, so a restart or a crashed sender loses none; a sender leases
the ones it attempts, so two never send one at once. Every attempt is signed afresh under the same
webhook-id. Signing, HTTP and the SSRF guard are the WebhookSender's; the schedule is decided here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pixyproxy.domain.exceptions import ImageGenerationException, WebhookRefusedError
from pixyproxy.domain.models import (
    Job,
    JobStatus,
    NewWebhookDelivery,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEventFilter,
    WebhookEventType,
    utc_now,
)
from pixyproxy.ports import SendResult, WebhookDeliveries, WebhookSender

log = logging.getLogger(__name__)

# The public Job document of a job, as GET /jobs/{id} shows it: the `data` of every event.
JobRenderer = Callable[[Job], Awaitable[dict[str, Any]]]

DEFAULT_RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
FINISHED_EVENTS: dict[JobStatus, WebhookEventType] = {
    JobStatus.SUCCEEDED: "image.job.succeeded",
    JobStatus.FAILED: "image.job.failed",
    JobStatus.CANCELED: "image.job.canceled",
}
GONE = 410


class WebhookService:
    """Turns job events into deliveries (it is a JobEvents listener) and sends the due ones."""

    def __init__(
        self,
        *,
        deliveries: WebhookDeliveries,
        sender: WebhookSender,
        render: JobRenderer,
        retry_schedule_s: Sequence[float] = DEFAULT_RETRY_SCHEDULE_S,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 8,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._deliveries = deliveries
        self._sender = sender
        self._render = render
        self._schedule = tuple(retry_schedule_s)
        self._lease = lease
        self._slots = asyncio.Semaphore(concurrency)
        self._clock = clock

    async def check(self, url: str) -> None:
        """Refuse, at accept time, a webhook that could never be sent. Raises WebhookRefusedError."""
        if not self._sender.can_sign:
            raise WebhookRefusedError(
                url, "webhooks are off: the server has no signing secret (PIXYPROXY_WEBHOOK_SECRET)"
            )
        await self._sender.check_destination(url)

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """One job's deliveries, so a user can see why a webhook did not arrive."""
        return await self._deliveries.list_for_job(job_id)

    # JobEvents ----------------------------------------------------------------------------------

    async def started(self, job: Job) -> None:
        """Queue image.job.started, once per job, if the webhook asked for "start"."""
        await self._enqueue(job, "image.job.started", wanted="start")

    async def finished(self, job: Job) -> None:
        """Queue image.job.succeeded, .failed or .canceled, if the webhook asked for "completed"."""
        event = FINISHED_EVENTS.get(job.status)
        if event is not None:
            await self._enqueue(job, event, wanted="completed")

    async def _enqueue(self, job: Job, event: WebhookEventType, *, wanted: WebhookEventFilter) -> None:
        if job.webhook is None or wanted not in job.webhook_events_filter:
            return
        now = self._clock()
        body = json.dumps(
            {"type": event, "timestamp": now.isoformat(), "data": await self._render(job)},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        # One id per job and event: telling the same event twice (a retried finish, a second
        # attempt's start) adds nothing, and a receiver sees one webhook-id on every attempt.
        delivery_id = f"msg_{job.id.hex}_{event.rsplit('.', 1)[-1]}"
        await self._deliveries.add(
            NewWebhookDelivery(
                id=delivery_id,
                job_id=job.id,
                event=event,
                url=job.webhook,
                body=body,
                created_at=now,
                next_attempt_at=now,
            )
        )

    # Sending ------------------------------------------------------------------------------------

    async def deliver_due(self, *, limit: int = 50) -> int:
        """Attempt every due delivery (up to `limit`), each under a lease; how many were attempted."""
        now = self._clock()
        due = await self._deliveries.claim_due(now=now, lease_until=now + self._lease, limit=limit)
        # One job's events go one after another, in the order they were due (started before
        # succeeded); different jobs' go at once.
        by_job: dict[UUID, list[WebhookDelivery]] = {}
        for delivery in due:
            by_job.setdefault(delivery.job_id, []).append(delivery)
        await asyncio.gather(*(self._attempt_in_order(group) for group in by_job.values()))
        return len(due)

    async def _attempt_in_order(self, deliveries: list[WebhookDelivery]) -> None:
        for delivery in deliveries:
            await self._attempt(delivery)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        async with self._slots:
            attempted_at = self._clock()
            result = await self._sender.send(
                delivery.url, webhook_id=delivery.id, timestamp=attempted_at, body=delivery.body
            )
            status, next_attempt_at = self._next(delivery, result, attempted_at)
            try:
                await self._deliveries.record_attempt(
                    delivery.id,
                    status=status,
                    last_status=result.detail,
                    attempted_at=attempted_at,
                    next_attempt_at=next_attempt_at,
                )
            except ImageGenerationException as err:
                # The lease runs out and the delivery is attempted again: at least once, never lost.
                log.warning("webhook %s: could not record attempt (%s)", delivery.id, err)
                return
            log.info(
                "webhook %s (%s) attempt %d: %s -> %s",
                delivery.id,
                delivery.event,
                delivery.attempts + 1,
                result.detail,
                status.value,
            )

    def _next(
        self, delivery: WebhookDelivery, result: SendResult, attempted_at: datetime
    ) -> tuple[WebhookDeliveryStatus, datetime]:
        """The status after this attempt and when the next one is due."""
        code = result.status_code
        if code is not None and 200 <= code < 300:
            return WebhookDeliveryStatus.DELIVERED, attempted_at
        if code == GONE:
            return WebhookDeliveryStatus.FAILED, attempted_at  # the receiver wants no more
        done = delivery.attempts + 1
        if done > len(self._schedule):
            return WebhookDeliveryStatus.FAILED, attempted_at
        delay = self._schedule[done - 1]
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        return WebhookDeliveryStatus.PENDING, attempted_at + timedelta(seconds=delay)

    async def purge(self, *, older_than: datetime) -> int:
        """Delete finished deliveries created before `older_than`."""
        return await self._deliveries.purge(older_than=older_than)


class NoWebhooks:
    """The WebhookService's place when webhooks are not wired (unit tests of other use-cases)."""

    async def check(self, url: str) -> None:
        """Refuse every webhook."""
        raise WebhookRefusedError(url, "webhooks are off on this server")

    async def list_for_job(self, job_id: UUID) -> list[WebhookDelivery]:
        """None."""
        return []

    async def started(self, job: Job) -> None:
        """Nothing."""

    async def finished(self, job: Job) -> None:
        """Nothing."""
