"""JobService.generate_many, the use-case behind OpenAI's `n`: n jobs at once, all kept or none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.adapters.memory_jobs import InMemoryJobQueue, InMemoryJobRepository
from pixyproxy.app.jobs import JobService, JobTiming, derived_idempotency_key
from pixyproxy.app.requests import GenerateImageRequest, parse_idempotency_key
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import (
    IdempotencyConflictError,
    ImageNotFoundError,
    InvalidRequestError,
    JobFailedError,
    PromptRejectedError,
)
from pixyproxy.domain.models import GeneratedImage, GenerationOptions, JobStatus


class FailingOnce(InMemoryImageGenerator):
    """Fails the `fail_call`-th generation (1-based) at once; the others take `delay_s`."""

    def __init__(self, *, fail_call: int, delay_s: float) -> None:
        super().__init__()
        self.fail_call = fail_call
        self.slow_s = delay_s
        self.started = 0

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        self.started += 1
        if self.started == self.fail_call:
            self.fail_call = 0  # only once: a retry of the request succeeds
            raise PromptRejectedError("not that")
        await asyncio.sleep(self.slow_s)
        return await super().generate(prompt, options=options)


class BrokerQueue(InMemoryJobQueue):
    """An in-memory queue that behaves like a broker: jobs run on a separate consumer, not inline."""

    @property
    def in_process(self) -> bool:
        return False


class Stack:
    """The use-cases over in-memory fakes, and the fakes themselves to inspect."""

    def __init__(self, generator: InMemoryImageGenerator, queue: InMemoryJobQueue) -> None:
        self.generator = generator
        self.images = InMemoryImageRepository()
        self.blobs = InMemoryBlobStore()
        self.jobs = InMemoryJobRepository()
        self.queue = queue
        image_service = ImageService(repository=self.images, generator=generator, blob_store=self.blobs)
        self.image_service = image_service
        self.service = JobService(
            jobs=self.jobs,
            queue=queue,
            images=image_service,
            timing=JobTiming(lease=timedelta(seconds=30), cancel_check_s=0.02),
        )


REQUEST = GenerateImageRequest(prompt="a lighthouse at dusk")


@pytest.fixture
def stack() -> Stack:
    return Stack(InMemoryImageGenerator(), InMemoryJobQueue())


async def test_n_images_are_n_jobs_and_n_distinct_images(stack: Stack) -> None:
    details = await stack.service.generate_many(REQUEST, count=3)
    assert len({d.guid for d in details}) == 3
    assert set(stack.images.records) == {d.guid for d in details}
    assert len(stack.blobs.blobs) == 3
    statuses = [j.status for j in stack.jobs.jobs.values()]
    assert statuses == [JobStatus.SUCCEEDED] * 3
    # Each image is its job's: the GUID is the job's id.
    assert set(stack.jobs.jobs) == {d.guid for d in details}


async def test_one_failure_answers_its_error_and_keeps_none_of_the_images() -> None:
    stack = Stack(FailingOnce(fail_call=2, delay_s=0.05), InMemoryJobQueue())
    with pytest.raises(JobFailedError) as caught:
        await stack.service.generate_many(REQUEST, count=3)
    assert caught.value.kind == "PromptRejectedError"
    assert stack.images.records == {}
    assert stack.blobs.blobs == {}
    statuses = sorted(j.status for j in stack.jobs.jobs.values())
    assert statuses == sorted([JobStatus.FAILED, JobStatus.CANCELED, JobStatus.CANCELED])


async def test_images_finished_before_the_failure_are_deleted_too() -> None:
    # The third generation fails after the first two have finished and been stored.
    generator = FailingOnce(fail_call=3, delay_s=0.0)
    stack = Stack(generator, InMemoryJobQueue())

    original = generator.generate

    async def third_waits(prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        if generator.started == 2:  # the third call: let the first two finish first
            await asyncio.sleep(0.05)
        return await original(prompt, options=options)

    generator.generate = third_waits  # type: ignore[method-assign]
    with pytest.raises(JobFailedError):
        await stack.service.generate_many(REQUEST, count=3)
    assert stack.images.records == {}
    assert stack.blobs.blobs == {}
    succeeded = [j for j in stack.jobs.jobs.values() if j.status == JobStatus.SUCCEEDED]
    assert len(succeeded) == 2  # they did succeed; their images were then deleted
    for job in succeeded:
        with pytest.raises(ImageNotFoundError):
            await stack.image_service.get_detail(job.id)


async def test_a_retry_with_the_same_key_returns_the_same_images(stack: Stack) -> None:
    first = await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-1")
    again = await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-1")
    assert [d.guid for d in again] == [d.guid for d in first]
    assert len(stack.generator.calls) == 2
    keys = sorted(j.idempotency_key or "" for j in stack.jobs.jobs.values())
    assert keys == ["req-1#0", "req-1#1"]


async def test_a_retry_of_a_failed_request_generates_them_all_again() -> None:
    stack = Stack(FailingOnce(fail_call=1, delay_s=0.02), InMemoryJobQueue())
    with pytest.raises(JobFailedError):
        await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-2")
    details = await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-2")
    assert len({d.guid for d in details}) == 2
    assert set(stack.images.records) == {d.guid for d in details}
    assert len(stack.blobs.blobs) == 2


async def test_a_replayed_image_of_an_earlier_request_survives_a_later_failure() -> None:
    stack = Stack(FailingOnce(fail_call=2, delay_s=0.0), InMemoryJobQueue())
    (kept,) = await stack.service.generate_many(REQUEST, count=1, idempotency_key="req-3")
    with pytest.raises(JobFailedError):
        # Image 0 replays the first request's image; image 1 is new and fails.
        await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-3")
    assert await stack.image_service.get_detail(kept.guid) == kept


async def test_the_same_key_with_another_prompt_is_a_conflict(stack: Stack) -> None:
    await stack.service.generate_many(REQUEST, count=2, idempotency_key="req-4")
    other = GenerateImageRequest(prompt="something else")
    with pytest.raises(IdempotencyConflictError):
        await stack.service.generate_many(other, count=2, idempotency_key="req-4")
    assert len(stack.images.records) == 2


async def test_an_invalid_key_is_refused_before_anything_runs(stack: Stack) -> None:
    with pytest.raises(InvalidRequestError):
        await stack.service.generate_many(REQUEST, count=2, idempotency_key="has space")
    assert stack.jobs.jobs == {}


def test_derived_keys_stay_valid_keys_however_long_the_original() -> None:
    assert derived_idempotency_key("abc", 7) == "abc#7"
    longest = "k" * 255
    derived = [derived_idempotency_key(longest, i) for i in range(10)]
    assert len(set(derived)) == 10
    for key in derived:
        assert parse_idempotency_key(key) == key
    assert derived_idempotency_key("k" * 254, 1) != derived_idempotency_key("k" * 253, 1)


@pytest.fixture
async def broker_stack() -> AsyncIterator[Stack]:
    """Jobs run by a separate consumer, as RabbitMQ workers run them."""
    stack = Stack(FailingOnce(fail_call=1, delay_s=30), BrokerQueue())
    consumer = asyncio.create_task(stack.queue.consume(stack.service.run_job, concurrency=4))
    yield stack
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer


async def test_with_workers_the_other_running_jobs_are_canceled(broker_stack: Stack) -> None:
    stack = broker_stack
    with pytest.raises(JobFailedError):
        await asyncio.wait_for(stack.service.generate_many(REQUEST, count=3), timeout=10)
    statuses = sorted(j.status for j in stack.jobs.jobs.values())
    assert statuses == sorted([JobStatus.FAILED, JobStatus.CANCELED, JobStatus.CANCELED])
    assert stack.images.records == {}
    assert stack.blobs.blobs == {}
