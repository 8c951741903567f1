"""The webhook use-cases against in-memory fakes: which events become deliveries, and the schedule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.adapters.memory_jobs import InMemoryJobQueue, InMemoryJobRepository
from pixyproxy.adapters.memory_webhooks import InMemoryWebhookDeliveries
from pixyproxy.app.jobs import JobService, JobTiming
from pixyproxy.app.service import ImageService
from pixyproxy.app.webhooks import WebhookService
from pixyproxy.domain.exceptions import InvalidRequestError, WebhookRefusedError
from pixyproxy.domain.models import Job, JobStatus, WebhookDeliveryStatus, utc_now
from pixyproxy.ports import SendResult

HOOK = "https://hooks.example.com/pixy"


class FakeSender:
    """Answers each send from a script; records every attempt."""

    def __init__(self, *results: SendResult, can_sign: bool = True) -> None:
        self.script = list(results)
        self.sent: list[dict[str, Any]] = []
        self._can_sign = can_sign

    @property
    def can_sign(self) -> bool:
        return self._can_sign

    async def check_destination(self, url: str) -> None:
        if "10.0.0.1" in url:
            raise WebhookRefusedError(url, "private")

    async def send(self, url: str, *, webhook_id: str, timestamp: datetime, body: str) -> SendResult:
        self.sent.append({"url": url, "id": webhook_id, "timestamp": timestamp, "body": body})
        return self.script.pop(0) if self.script else SendResult(204, "HTTP 204")

    async def close(self) -> None:
        pass


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def render(job: Job) -> dict[str, Any]:
    return {"id": str(job.id), "status": job.status.value}


def make(
    sender: FakeSender, clock: Clock, schedule: tuple[float, ...] = (5, 300)
) -> tuple[WebhookService, Any]:
    deliveries = InMemoryWebhookDeliveries()
    service = WebhookService(
        deliveries=deliveries, sender=sender, render=render, retry_schedule_s=schedule, clock=clock
    )
    return service, deliveries


def job_with(webhook: str | None = HOOK, events: tuple[Any, ...] = ("completed",), **changes: Any) -> Job:
    fields: dict[str, Any] = {"status": JobStatus.SUCCEEDED, **changes}
    return Job(
        id=uuid4(),
        prompt="a fox",
        size=None,
        created_at=utc_now(),
        webhook=webhook,
        webhook_events_filter=events,
        **fields,
    )


async def test_a_completed_job_becomes_one_signed_event_with_the_job_as_data() -> None:
    sender, clock = FakeSender(), Clock()
    service, _ = make(sender, clock)
    job = job_with()
    await service.started(job)  # "start" was not asked for
    await service.finished(job)
    await service.finished(job)  # told twice: still one delivery
    assert await service.deliver_due() == 1
    [sent] = sender.sent
    body = json.loads(sent["body"])
    assert body["type"] == "image.job.succeeded"
    assert body["data"] == {"id": str(job.id), "status": "succeeded"}
    assert datetime.fromisoformat(body["timestamp"])
    assert sent["id"].startswith("msg_")
    [delivery] = await service.list_for_job(job.id)
    assert delivery.status == WebhookDeliveryStatus.DELIVERED
    assert delivery.attempts == 1


@pytest.mark.parametrize(
    ("status", "event"),
    [(JobStatus.FAILED, "image.job.failed"), (JobStatus.CANCELED, "image.job.canceled")],
)
async def test_completed_covers_failed_and_canceled(status: JobStatus, event: str) -> None:
    sender, clock = FakeSender(), Clock()
    service, _ = make(sender, clock)
    await service.finished(job_with(status=status))
    await service.deliver_due()
    assert json.loads(sender.sent[0]["body"])["type"] == event


async def test_start_is_sent_only_when_asked_for() -> None:
    sender, clock = FakeSender(), Clock()
    service, _ = make(sender, clock)
    job = job_with(events=("start", "completed"), status=JobStatus.RUNNING)
    await service.started(job)
    await service.started(job.model_copy(update={"attempts": 2}))  # a second attempt: same event
    await service.deliver_due()
    assert [json.loads(s["body"])["type"] for s in sender.sent] == ["image.job.started"]
    await service.started(job_with(events=("completed",), status=JobStatus.RUNNING))
    assert await service.deliver_due() == 0


async def test_failures_are_retried_on_schedule_under_one_webhook_id() -> None:
    sender, clock = FakeSender(SendResult(500, "HTTP 500"), SendResult(None, "timeout")), Clock()
    service, _ = make(sender, clock, schedule=(5, 300))
    job = job_with()
    await service.finished(job)
    assert await service.deliver_due() == 1
    assert await service.deliver_due() == 0  # not due for 5 s
    clock.advance(5)
    assert await service.deliver_due() == 1
    clock.advance(299)
    assert await service.deliver_due() == 0
    clock.advance(1)
    assert await service.deliver_due() == 1
    assert len({s["id"] for s in sender.sent}) == 1
    assert [s["timestamp"] for s in sender.sent] == sorted({s["timestamp"] for s in sender.sent})
    [delivery] = await service.list_for_job(job.id)
    assert delivery.status == WebhookDeliveryStatus.DELIVERED
    assert delivery.attempts == 3


async def test_a_spent_schedule_fails_the_delivery() -> None:
    sender, clock = FakeSender(*[SendResult(503, "HTTP 503")] * 5), Clock()
    service, _ = make(sender, clock, schedule=(1, 1))
    job = job_with()
    await service.finished(job)
    for _ in range(4):
        await service.deliver_due()
        clock.advance(1)
    assert len(sender.sent) == 3
    [delivery] = await service.list_for_job(job.id)
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.last_status == "HTTP 503"


async def test_410_stops_at_once_and_a_longer_retry_after_is_honoured() -> None:
    sender, clock = FakeSender(SendResult(410, "HTTP 410")), Clock()
    service, _ = make(sender, clock)
    gone = job_with()
    await service.finished(gone)
    await service.deliver_due()
    clock.advance(10_000)
    await service.deliver_due()
    assert len(sender.sent) == 1
    assert (await service.list_for_job(gone.id))[0].status == WebhookDeliveryStatus.FAILED

    sender.script = [SendResult(429, "HTTP 429", retry_after_s=60)]
    busy = job_with()
    await service.finished(busy)
    await service.deliver_due()
    clock.advance(59)
    assert await service.deliver_due() == 0  # the schedule says 5 s; the receiver asked for 60
    clock.advance(1)
    assert await service.deliver_due() == 1


async def test_a_job_without_a_webhook_is_told_nothing() -> None:
    sender, clock = FakeSender(), Clock()
    service, deliveries = make(sender, clock)
    await service.finished(job_with(webhook=None))
    assert deliveries.deliveries == {}


async def test_accept_refuses_a_webhook_without_a_secret_or_to_a_private_address_and_records_nothing() -> (
    None
):
    jobs, clock = InMemoryJobRepository(), Clock()
    images = ImageService(
        repository=InMemoryImageRepository(),
        generator=InMemoryImageGenerator(),
        blob_store=InMemoryBlobStore(),
    )
    for sender, url, says in [
        (FakeSender(can_sign=False), HOOK, "PIXYPROXY_WEBHOOK_SECRET"),
        (FakeSender(), "http://10.0.0.1/hook", "private"),
    ]:
        webhooks, _ = make(sender, clock)
        service = JobService(
            jobs=jobs, queue=InMemoryJobQueue(), images=images, timing=JobTiming(), webhooks=webhooks
        )
        with pytest.raises(InvalidRequestError) as refused:
            await service.submit({"prompt": "a fox", "webhook": url})
        assert says in str(refused.value)
        assert refused.value.field == "webhook"
    assert jobs.jobs == {}


async def test_a_job_run_end_to_end_tells_its_webhook_and_shows_the_delivery() -> None:
    sender, clock = FakeSender(), Clock()
    webhooks, _ = make(sender, clock)
    images = ImageService(
        repository=InMemoryImageRepository(),
        generator=InMemoryImageGenerator(),
        blob_store=InMemoryBlobStore(),
    )
    service = JobService(
        jobs=InMemoryJobRepository(), queue=InMemoryJobQueue(), images=images, webhooks=webhooks
    )
    detail = await service.generate_now(
        {"prompt": "a fox", "webhook": HOOK, "webhook_events_filter": ["start", "completed"]}
    )
    await webhooks.deliver_due()
    assert [json.loads(s["body"])["type"] for s in sender.sent] == [
        "image.job.started",
        "image.job.succeeded",
    ]
    [view] = (await service.list_jobs()).items
    assert view.job.webhook == HOOK
    assert view.job.image_guid == detail.guid
    assert [d.status for d in view.deliveries] == [WebhookDeliveryStatus.DELIVERED] * 2


def jobs_and_webhooks(sender: FakeSender, clock: Clock) -> tuple[JobService, InMemoryJobRepository, Any]:
    webhooks, deliveries = make(sender, clock)
    images = ImageService(
        repository=InMemoryImageRepository(),
        generator=InMemoryImageGenerator(),
        blob_store=InMemoryBlobStore(),
    )
    jobs = InMemoryJobRepository()
    service = JobService(jobs=jobs, queue=InMemoryJobQueue(), images=images, webhooks=webhooks, clock=clock)
    return service, jobs, deliveries


async def test_an_event_lost_with_its_process_is_written_by_the_sweep_once() -> None:
    sender, clock = FakeSender(), Clock()
    service, jobs, deliveries = jobs_and_webhooks(sender, clock)
    job, _ = await service.submit({"prompt": "a fox", "webhook": HOOK}, run_here=True)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)  # recorded claimed by its request
    # The process finishes the job and dies before writing the webhook delivery.
    assert await jobs.finish(job.id, attempt=job.attempts, status=JobStatus.FAILED, now=clock())
    assert await deliveries.list_for_job(job.id) == []
    # Within the grace the normal path may still be writing it: the sweep leaves it.
    assert await service.record_missed_events() == 0
    clock.advance(31)
    assert await service.record_missed_events() == 1
    [delivery] = await deliveries.list_for_job(job.id)
    assert delivery.event == "image.job.failed"
    assert await service.record_missed_events() == 0  # written once
    clock.advance(3600)
    assert await service.record_missed_events() == 0


async def test_a_job_whose_event_was_written_is_left_alone_by_the_sweep() -> None:
    sender, clock = FakeSender(), Clock()
    service, jobs, deliveries = jobs_and_webhooks(sender, clock)
    plain = await service.generate_now({"prompt": "a fox"})
    hooked = await service.generate_now({"prompt": "a fox", "webhook": HOOK})
    clock.advance(3600)
    assert await jobs.list_events_pending(finished_before=clock(), limit=10) == []
    assert await service.record_missed_events() == 0
    assert len(await deliveries.list_for_job(hooked.guid)) == 1
    assert await deliveries.list_for_job(plain.guid) == []
