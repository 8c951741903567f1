"""The job use-cases against the in-memory fakes: what the job rows, images and bytes end up as."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.adapters.memory_jobs import InMemoryJobQueue, InMemoryJobRepository
from pixyproxy.app.jobs import JobService, JobTiming
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import (
    GeneratorUnavailableError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobFailedError,
    JobNotFoundError,
    JobQueueUnavailableError,
    PromptRejectedError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import JobStatus, utc_now


class DownQueue(InMemoryJobQueue):
    """A broker that cannot be reached, until told it is back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    @property
    def in_process(self) -> bool:
        return False

    async def publish(self, job_id):
        if self.down:
            raise JobQueueUnavailableError("connection refused")
        await super().publish(job_id)


@pytest.fixture
def generator() -> InMemoryImageGenerator:
    return InMemoryImageGenerator()


@pytest.fixture
def images() -> InMemoryImageRepository:
    return InMemoryImageRepository()


@pytest.fixture
def blobs() -> InMemoryBlobStore:
    return InMemoryBlobStore()


@pytest.fixture
def jobs() -> InMemoryJobRepository:
    return InMemoryJobRepository()


@pytest.fixture
def queue() -> InMemoryJobQueue:
    return InMemoryJobQueue()


def make_service(jobs, queue, images, blobs, generator, **timing) -> JobService:
    image_service = ImageService(repository=images, generator=generator, blob_store=blobs)
    defaults = {"lease": timedelta(seconds=30), "cancel_check_s": 0.02}
    return JobService(
        jobs=jobs, queue=queue, images=image_service, timing=JobTiming(**{**defaults, **timing})
    )


@pytest.fixture
def service(jobs, queue, images, blobs, generator) -> JobService:
    return make_service(jobs, queue, images, blobs, generator)


async def test_a_synchronous_generation_is_a_job_that_succeeded(service, jobs, images, blobs) -> None:
    detail = await service.generate_now({"prompt": "a fox"})
    [job] = jobs.jobs.values()
    assert job.status == JobStatus.SUCCEEDED
    assert job.image_guid == detail.guid
    assert job.attempts == 1
    assert job.started_at is not None
    assert job.finished_at is not None
    assert set(images.records) == {detail.guid}
    assert set(blobs.blobs) == {detail.filename}


async def test_a_synchronous_generation_run_in_the_request_reads_nothing_back(
    jobs, queue, images, blobs, generator, mocker
) -> None:
    # Its run knows the job's outcome and the image it made: reading either back would cost two more
    # database round trips per request for nothing (make bench figure 4-generate-p50).
    service = make_service(jobs, queue, images, blobs, generator)
    job_reads = mocker.spy(jobs, "get")
    image_reads = mocker.spy(images, "get")
    detail = await service.generate_now({"prompt": "a fox"})
    assert job_reads.call_count == 0
    assert image_reads.call_count == 0
    assert detail == await ImageService(repository=images, generator=generator, blob_store=blobs).get_detail(
        detail.guid
    )
    [job] = jobs.jobs.values()
    assert (job.status, job.image_guid) == (JobStatus.SUCCEEDED, detail.guid)


async def test_a_failed_synchronous_generation_raises_the_generators_error_kind(
    service, jobs, blobs, generator
) -> None:
    generator.fail_with = PromptRejectedError("content policy")
    with pytest.raises(JobFailedError) as caught:
        await service.generate_now({"prompt": "forbidden"})
    assert caught.value.kind == "PromptRejectedError"
    [job] = jobs.jobs.values()
    assert job.status == JobStatus.FAILED
    assert job.error is not None
    assert job.error.kind == "PromptRejectedError"
    assert blobs.blobs == {}


async def test_a_retry_hint_survives_the_job(service, jobs, generator) -> None:
    generator.fail_with = GeneratorUnavailableError("429", retry_after_s=20)
    with pytest.raises(JobFailedError) as caught:
        await service.generate_now({"prompt": "busy"})
    assert caught.value.retry_after_s == 20


async def test_an_async_job_is_queued_then_run_by_a_consumer(service, jobs, queue, images) -> None:
    job, created = await service.submit({"prompt": "later"})
    assert created
    assert job.status == JobStatus.QUEUED
    assert jobs.jobs[job.id].published
    consumer = asyncio.create_task(queue.consume(service.run_job, concurrency=2))
    try:
        finished = await service.wait(job.id, timeout_s=5)
    finally:
        consumer.cancel()
    assert finished.status == JobStatus.SUCCEEDED
    assert finished.image_guid in images.records


async def test_a_redelivered_message_never_runs_a_job_twice(service, jobs, generator, images) -> None:
    job, _ = await service.submit({"prompt": "once"})
    await asyncio.gather(service.run_job(job.id), service.run_job(job.id), service.run_job(job.id))
    assert generator.calls == ["once"]
    assert len(images.records) == 1
    assert jobs.jobs[job.id].attempts == 1


async def test_same_idempotency_key_and_body_is_the_same_job(service, jobs) -> None:
    first, created = await service.submit({"prompt": "a fox"}, idempotency_key="k1")
    again, created_again = await service.submit({"prompt": "a fox"}, idempotency_key="k1")
    assert created
    assert not created_again
    assert again.id == first.id
    assert len(jobs.jobs) == 1
    with pytest.raises(IdempotencyConflictError):
        await service.submit({"prompt": "a wolf"}, idempotency_key="k1")


async def test_an_idempotent_retry_of_a_failed_job_starts_a_new_one(service, jobs, generator) -> None:
    generator.fail_with = GeneratorUnavailableError("down")
    with pytest.raises(JobFailedError):
        await service.generate_now({"prompt": "a fox"}, idempotency_key="k2")
    generator.fail_with = None
    detail = await service.generate_now({"prompt": "a fox"}, idempotency_key="k2")
    assert len(jobs.jobs) == 2
    assert detail.prompt == "a fox"


async def test_an_unreachable_broker_still_accepts_and_the_sweep_publishes_later(
    jobs, images, blobs, generator
) -> None:
    queue = DownQueue()
    service = make_service(jobs, queue, images, blobs, generator)
    job, created = await service.submit({"prompt": "while down"})
    assert created
    assert not jobs.jobs[job.id].published
    assert await service.publish_stale() == 0
    queue.down = False
    assert await service.publish_stale() == 1
    assert jobs.jobs[job.id].published
    assert queue.pending == 1


async def test_cancel_of_a_queued_job_is_immediate_and_it_never_runs(service, jobs, generator) -> None:
    job, _ = await service.submit({"prompt": "never"})
    view = await service.cancel(job.id)
    assert view.job.status == JobStatus.CANCELED
    await service.run_job(job.id)
    assert generator.calls == []
    assert (await service.cancel(job.id)).job.status == JobStatus.CANCELED  # twice is harmless


async def test_cancel_of_a_running_job_abandons_the_upstream_call_and_stores_nothing(
    service, jobs, generator, images, blobs
) -> None:
    generator.delay_s = 30
    job, _ = await service.submit({"prompt": "slow"})
    running = asyncio.create_task(service.run_job(job.id))
    while jobs.jobs[job.id].status != JobStatus.RUNNING:
        await asyncio.sleep(0.01)
    await service.cancel(job.id)
    async with asyncio.timeout(5):
        await running
    assert jobs.jobs[job.id].status == JobStatus.CANCELED
    assert images.records == {}
    assert blobs.blobs == {}


async def test_a_job_whose_worker_died_is_taken_again_after_its_lease(
    service, jobs, generator, images
) -> None:
    job, _ = await service.submit({"prompt": "orphaned"})
    now = utc_now()
    # A worker claimed it and died: its lease ran out a moment ago.
    await jobs.claim(job.id, now=now, lease_until=now - timedelta(seconds=1), max_attempts=3)
    assert await service.publish_stale() == 1
    await service.run_job(job.id)
    finished = jobs.jobs[job.id]
    assert finished.status == JobStatus.SUCCEEDED
    assert finished.attempts == 2
    assert len(images.records) == 1


async def test_a_job_abandoned_as_often_as_it_may_be_tried_fails(service, jobs, generator) -> None:
    job, _ = await service.submit({"prompt": "cursed"})
    for _ in range(3):
        now = utc_now()
        await jobs.claim(job.id, now=now, lease_until=now - timedelta(seconds=1), max_attempts=3)
    await service.run_job(job.id)
    assert jobs.jobs[job.id].status == JobStatus.FAILED
    assert generator.calls == []


async def test_an_attempt_that_lost_its_lease_stops_and_a_later_one_makes_the_image(
    jobs, queue, images, blobs, generator
) -> None:
    generator.delay_s = 0.3
    service = make_service(jobs, queue, images, blobs, generator)
    job, _ = await service.submit({"prompt": "contested"})
    running = asyncio.create_task(service.run_job(job.id))
    while jobs.jobs[job.id].status != JobStatus.RUNNING:
        await asyncio.sleep(0.01)
    # Another worker took it over (as after an expired lease) while the first still works.
    jobs.jobs[job.id] = jobs.jobs[job.id].model_copy(update={"attempts": 2})
    async with asyncio.timeout(5):
        await running
    # The first attempt noticed it lost the job, abandoned its generation and stored nothing.
    assert images.records == {}
    assert blobs.blobs == {}
    assert jobs.jobs[job.id].status == JobStatus.RUNNING  # it may not record what attempt 2 holds
    # Attempt 2 dies too; attempt 3 makes the one image, under the job's id.
    generator.delay_s = 0
    now = utc_now()
    jobs.jobs[job.id] = jobs.jobs[job.id].model_copy(update={"lease_until": now - timedelta(seconds=1)})
    await service.run_job(job.id)
    assert jobs.jobs[job.id].status == JobStatus.SUCCEEDED
    assert jobs.jobs[job.id].image_guid == job.id
    assert set(images.records) == {job.id}
    assert list(blobs.blobs) == [f"{job.id}-3.png"]


async def test_an_attempt_that_loses_the_insert_race_adopts_the_image_and_keeps_no_bytes(
    service, jobs, images, blobs, generator
) -> None:
    job, _ = await service.submit({"prompt": "twice"})
    first = await jobs.claim(job.id, now=utc_now(), lease_until=utc_now(), max_attempts=3)
    assert first is not None
    # Attempt 1 made the image and died before recording it; attempt 2's check missed it by a hair.
    await service._images.generate({"prompt": "twice"}, guid=job.id, attempt=1)
    second = await jobs.claim(
        job.id, now=utc_now(), lease_until=utc_now() + timedelta(seconds=30), max_attempts=3
    )
    assert second is not None
    await service._execute(second.model_copy(update={"attempts": 2}))
    assert jobs.jobs[job.id].status == JobStatus.SUCCEEDED
    assert set(images.records) == {job.id}
    assert list(blobs.blobs) == [f"{job.id}.png"]


async def test_a_job_canceled_while_its_dead_worker_ran_it_ends_canceled(service, jobs, generator) -> None:
    job, _ = await service.submit({"prompt": "stop"})
    now = utc_now()
    await jobs.claim(job.id, now=now, lease_until=now - timedelta(seconds=1), max_attempts=3)
    await jobs.cancel(job.id, now=now)
    await service.run_job(job.id)
    assert jobs.jobs[job.id].status == JobStatus.CANCELED
    assert generator.calls == []


async def test_recover_publishes_every_unfinished_job(service, jobs, queue) -> None:
    for prompt in ("a", "b"):
        await service.submit({"prompt": prompt}, publish=False)
    assert await service.recover() == 2
    assert queue.pending == 2


async def test_listing_pages_newest_first_with_a_status_filter(service) -> None:
    for n in range(5):
        await service.generate_now({"prompt": f"p{n}"})
    queued, _ = await service.submit({"prompt": "queued"}, publish=False)
    first = await service.list_jobs(limit=3)
    second = await service.list_jobs(limit=3, cursor=first.next_cursor)
    prompts = [v.job.prompt for v in first.items + second.items]
    assert prompts == ["queued", "p4", "p3", "p2", "p1", "p0"]
    assert second.next_cursor is None
    only_queued = await service.list_jobs(status=JobStatus.QUEUED)
    assert [v.job.id for v in only_queued.items] == [queued.id]
    assert first.items[1].image is not None


async def test_purge_drops_finished_jobs_past_retention(jobs, queue, images, blobs, generator) -> None:
    service = make_service(jobs, queue, images, blobs, generator, retention=timedelta(seconds=0))
    await service.generate_now({"prompt": "old"})
    await service.submit({"prompt": "unfinished"}, publish=False)
    assert await service.purge() == 1
    assert [j.prompt for j in jobs.jobs.values()] == ["unfinished"]


async def test_an_unknown_or_malformed_job_id_is_not_found(service) -> None:
    with pytest.raises(JobNotFoundError):
        await service.get("3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b")
    with pytest.raises(JobNotFoundError):
        await service.cancel("nope")


async def test_concurrent_requests_with_one_key_generate_once(jobs, queue, images, blobs) -> None:
    generator = InMemoryImageGenerator(delay_s=0.05)
    service = make_service(jobs, queue, images, blobs, generator)
    results = await asyncio.gather(
        *(service.generate_now({"prompt": "a fox"}, idempotency_key="same") for _ in range(20))
    )
    assert len({r.guid for r in results}) == 1
    assert len(generator.calls) == 1
    assert len(images.records) == 1
    assert len(jobs.jobs) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_a_malformed_idempotency_key_is_invalid_and_records_nothing(service, jobs, key: str) -> None:
    with pytest.raises(InvalidRequestError):
        await service.submit({"prompt": "a fox"}, idempotency_key=key)
    assert jobs.jobs == {}


async def test_an_idempotency_key_past_its_retention_is_free_again(
    jobs, queue, images, blobs, generator
) -> None:
    service = make_service(jobs, queue, images, blobs, generator, idempotency_retention=timedelta(0))
    first = await service.generate_now({"prompt": "a fox"}, idempotency_key="old")
    second = await service.generate_now({"prompt": "a wolf"}, idempotency_key="old")
    assert first.guid != second.guid


async def test_a_synchronous_request_that_failed_leaves_no_job_for_the_sweep(
    jobs, queue, images, blobs, generator
) -> None:
    # A request that replays a job an earlier request left queued claims it, and the claim fails.
    class ClaimFails(InMemoryJobRepository):
        async def claim(self, job_id, *, now, lease_until, max_attempts):
            raise RepositoryUnavailableError("connection killed")

    failing = ClaimFails()
    service = make_service(failing, queue, images, blobs, generator)
    await service.submit({"prompt": "answered 503"}, idempotency_key="k1", publish=False)
    with pytest.raises(RepositoryUnavailableError):
        await service.generate_now({"prompt": "answered 503"}, idempotency_key="k1")
    [job] = failing.jobs.values()
    assert job.status == JobStatus.CANCELED
    assert await service.publish_stale() == 0
    assert queue.pending == 0
    assert generator.calls == []


async def test_a_synchronous_request_cancelled_mid_run_leaves_no_job_and_no_image(
    jobs, queue, images, blobs
) -> None:
    # Its job was recorded claimed by the request (running, attempt 1): the request's end ends it.
    slow = InMemoryImageGenerator(delay_s=5)
    service = make_service(jobs, queue, images, blobs, slow)
    request = asyncio.ensure_future(service.generate_now({"prompt": "client went away"}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if slow.calls:
            break
    [running] = jobs.jobs.values()
    assert (running.status, running.attempts, running.published) == (JobStatus.RUNNING, 1, True)
    assert running.started_at == running.created_at
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    [job] = jobs.jobs.values()
    assert job.status == JobStatus.CANCELED
    assert await service.publish_stale() == 0
    assert queue.pending == 0
    assert images.records == {}
    assert blobs.blobs == {}


async def test_bytes_left_by_an_attempt_killed_before_its_insert_are_swept_by_the_next(
    service, jobs, images, blobs, generator
) -> None:
    job, _ = await service.submit({"prompt": "killed mid-put"})
    now = utc_now()
    await jobs.claim(job.id, now=now, lease_until=now - timedelta(seconds=1), max_attempts=3)
    # Attempt 1 stored its bytes and died before inserting the record.
    await blobs.put(f"{job.id}.png", b"orphan", content_type="image/png")
    await service.run_job(job.id)
    assert jobs.jobs[job.id].status == JobStatus.SUCCEEDED
    assert set(images.records) == {job.id}
    assert list(blobs.blobs) == [f"{job.id}-2.png"]
