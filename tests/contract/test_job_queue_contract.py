"""The JobQueue contract, run against every job-queue adapter: in-memory and RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest

from pixyproxy.adapters.memory_jobs import InMemoryJobQueue
from pixyproxy.ports import JobQueue
from tests.support.queues import consuming
from tests.support.rabbitmq import fresh_rabbitmq_queue

# Every wait is bounded by this; the suite's tests each finish in well under a second when all is well.
WAIT_S = 10


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def job_queue(request: pytest.FixtureRequest) -> AsyncIterator[JobQueue]:
    """Every JobQueue adapter, each on a queue of its own (RabbitMQ: deleted afterwards)."""
    if request.param == "memory":
        memory = InMemoryJobQueue()
        try:
            yield memory
        finally:
            await memory.close()
        return
    async with fresh_rabbitmq_queue() as rabbit:
        yield rabbit


async def wait_for(event: asyncio.Event, consumer: asyncio.Task[None], *, timeout_s: float = WAIT_S) -> None:
    """Wait for the event, failing at once if consume() ended: it must run until cancelled."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.wait({waiter, consumer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if consumer.done():
        consumer.result()  # raises what consume() raised, if anything
        pytest.fail("consume() returned before it was cancelled")


async def test_ping_answers(job_queue: JobQueue) -> None:
    await job_queue.ping()


async def test_every_published_id_reaches_the_handler(job_queue: JobQueue) -> None:
    ids = {uuid4() for _ in range(50)}
    before, after = list(ids)[:25], list(ids)[25:]
    seen: set[UUID] = set()
    all_seen = asyncio.Event()

    async def handler(job_id: UUID) -> None:
        seen.add(job_id)
        if seen >= ids:
            all_seen.set()

    for job_id in before:  # waiting in the queue before anyone consumes
        await job_queue.publish(job_id)
    async with consuming(job_queue, handler, concurrency=4) as consumer:
        for job_id in after:  # published while a consumer runs
            await job_queue.publish(job_id)
        await wait_for(all_seen, consumer)
    assert seen == ids


async def test_concurrency_bound_is_respected_and_reached(job_queue: JobQueue) -> None:
    concurrency = 3
    ids = [uuid4() for _ in range(4 * concurrency)]
    in_flight = 0
    most_in_flight = 0
    done: list[UUID] = []
    all_done = asyncio.Event()

    async def handler(job_id: UUID) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            in_flight -= 1
        done.append(job_id)
        if len(done) == len(ids):
            all_done.set()

    for job_id in ids:
        await job_queue.publish(job_id)
    async with consuming(job_queue, handler, concurrency=concurrency) as consumer:
        await wait_for(all_done, consumer)
    assert most_in_flight == concurrency
    assert sorted(done) == sorted(ids)


async def test_a_handler_that_raises_gets_its_message_again(
    job_queue: JobQueue, request: pytest.FixtureRequest
) -> None:
    job_id = uuid4()
    attempts: list[UUID] = []
    retried = asyncio.Event()

    async def handler(received: UUID) -> None:
        attempts.append(received)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")
        retried.set()

    await job_queue.publish(job_id)
    async with consuming(job_queue, handler, concurrency=1) as consumer:
        await wait_for(retried, consumer, timeout_s=2)
    assert attempts[:2] == [job_id, job_id]


async def test_consume_stops_when_cancelled_and_cancels_running_handlers(job_queue: JobQueue) -> None:
    first, second = uuid4(), uuid4()
    first_done = asyncio.Event()
    second_started = asyncio.Event()
    second_cancelled = asyncio.Event()

    async def handler(job_id: UUID) -> None:
        if job_id == first:
            first_done.set()
            return
        second_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            second_cancelled.set()
            raise

    consumer = asyncio.create_task(job_queue.consume(handler, concurrency=1))
    try:
        await job_queue.publish(first)
        await wait_for(first_done, consumer)
        await job_queue.publish(second)
        await wait_for(second_started, consumer)
    finally:
        consumer.cancel()
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(consumer, return_exceptions=True)
    assert consumer.cancelled()
    assert second_cancelled.is_set()
