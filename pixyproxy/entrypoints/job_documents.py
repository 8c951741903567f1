"""The Job document: what GET /jobs/{id} answers and what every webhook event carries as `data`."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pixyproxy.app.jobs import JobView
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import ImageNotFoundError
from pixyproxy.domain.models import ImageDetail, Job, JobStatus, WebhookDelivery, WebhookDeliveryStatus
from pixyproxy.entrypoints.http.problems import job_problem


class DeliveryOut(BaseModel):
    """One webhook event's delivery, so a user can see why a webhook did not arrive."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The webhook-id the receiver sees on every attempt")
    event: str = Field(description="image.job.started, .succeeded, .failed or .canceled")
    status: WebhookDeliveryStatus = Field(description="pending, delivered or failed")
    attempts: int
    last_status: str | None = Field(description='What the last attempt met: "HTTP 500", "timeout", ...')
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When the next attempt is due, while pending")

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        """The document of a delivery."""
        pending = delivery.status == WebhookDeliveryStatus.PENDING
        return cls(
            id=delivery.id,
            event=delivery.event,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status=delivery.last_status,
            last_attempt_at=delivery.last_attempt_at,
            next_attempt_at=delivery.next_attempt_at if pending else None,
        )


class JobOut(BaseModel):
    """A generation job, as clients see it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    status: JobStatus = Field(description="queued, running, succeeded, failed or canceled")
    prompt: str
    size: str | None
    owner: str = Field(description="The name of the API key that asked for it (never the key)")
    created_at: datetime
    started_at: datetime | None = Field(description="When a worker first took the job")
    finished_at: datetime | None
    attempts: int = Field(description="How many times a worker has taken the job")
    image: ImageDetail | None = Field(description="The image, once the job has succeeded")
    error: dict[str, Any] | None = Field(description="The problem document, once the job has failed")
    webhook: str | None = Field(default=None, description="The URL told of the job's events")
    webhook_events_filter: list[str] | None = Field(default=None, description='"start" and/or "completed"')
    webhook_deliveries: list[DeliveryOut] | None = Field(
        default=None, description="Each event's delivery to the webhook (not in webhook payloads)"
    )

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        """The document of a job, with its webhook deliveries."""
        document = cls.of_job(view.job, view.image)
        if view.job.webhook is None:
            return document
        return document.model_copy(
            update={"webhook_deliveries": [DeliveryOut.of(d) for d in view.deliveries]}
        )

    @classmethod
    def of_job(cls, job: Job, image: ImageDetail | None) -> JobOut:
        """The document of a job and its image, without deliveries."""
        error = job_problem(job.error, instance=f"/jobs/{job.id}") if job.error is not None else None
        return cls(
            id=job.id,
            status=job.status,
            prompt=job.prompt,
            size=job.size,
            owner=job.owner,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            image=image,
            error=error,
            webhook=job.webhook,
            webhook_events_filter=list(job.webhook_events_filter) if job.webhook else None,
        )


class JobDocuments:
    """Renders a job for a webhook event's `data`: the same document GET /jobs/{id} answers."""

    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def __call__(self, job: Job) -> dict[str, Any]:
        """The job's document as JSON-ready data."""
        image = None
        if job.image_guid is not None:
            with contextlib.suppress(ImageNotFoundError):
                image = await self._images.get_detail(job.image_guid)
        return JobOut.of_job(job, image).model_dump(mode="json", exclude={"webhook_deliveries"})
