"""RabbitMqJobQueue against a real broker: dead-lettering, redelivery, reconnection, an absent broker."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import time
from collections.abc import Callable
from uuid import UUID, uuid4

import pytest
from yarl import URL

from pixyproxy.adapters.rabbitmq import RabbitMqJobQueue
from pixyproxy.domain.exceptions import JobQueueUnavailableError
from tests.support.queues import consuming
from tests.support.rabbitmq import (
    TEST_RECONNECT_INTERVAL_S,
    close_all_connections,
    dead_letters,
    delete_queues,
    fresh_rabbitmq_queue,
    new_queue_name,
    publish_raw,
    require_rabbitmq,
)
from tests.support.real_parts import free_port
from tests.support.tcp_proxy import tcp_proxy

WAIT_S = 10


async def eventually(check: Callable[[], object], *, timeout_s: float = WAIT_S) -> None:
    """Poll until `check()` is truthy (awaiting it if it is a coroutine), within the timeout."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


@pytest.mark.rabbitmq
async def test_a_message_that_always_fails_is_dead_lettered_after_the_delivery_limit() -> None:
    async with fresh_rabbitmq_queue(delivery_limit=2) as queue:
        job_id = uuid4()
        attempts: list[UUID] = []

        async def handler(received: UUID) -> None:
            attempts.append(received)
            raise RuntimeError("poison")

        await queue.publish(job_id)
        async with consuming(queue, handler):
            await eventually(lambda: queue.queue_depth(dead_letters=True))
            await asyncio.sleep(0.3)  # a message that kept looping would show up here
        # The first delivery plus `delivery_limit` redeliveries, then the broker gives up on it.
        assert attempts == [job_id] * 3
        (dead,) = await dead_letters(queue)
        assert dead.body == str(job_id).encode()
        assert dead.headers["x-first-death-reason"] == "delivery_limit"
        assert await queue.queue_depth() == 0


@pytest.mark.rabbitmq
async def test_a_body_that_is_not_a_job_id_is_dead_lettered_at_once() -> None:
    async with fresh_rabbitmq_queue() as queue:
        await queue.ping()  # declares the queue, so the raw message has somewhere to go
        await publish_raw(queue.queue_name, b"not-a-job-id \xff")
        good = uuid4()
        seen: list[UUID] = []
        good_seen = asyncio.Event()

        async def handler(job_id: UUID) -> None:
            seen.append(job_id)
            good_seen.set()

        async with consuming(queue, handler):
            await queue.publish(good)
            async with asyncio.timeout(WAIT_S):
                await good_seen.wait()
            await eventually(lambda: queue.queue_depth(dead_letters=True))
        assert seen == [good]
        (dead,) = await dead_letters(queue)
        assert dead.body == b"not-a-job-id \xff"
        assert dead.headers["x-first-death-reason"] == "rejected"


# A worker process that takes one message, says which, and hangs without acknowledging it.
_HANGING_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pixyproxy.adapters.rabbitmq import RabbitMqJobQueue

    async def main():
        queue = RabbitMqJobQueue(sys.argv[1], queue_name=sys.argv[2])

        async def handler(job_id):
            print(job_id, flush=True)
            await asyncio.sleep(3600)

        await queue.consume(handler, concurrency=1)

    asyncio.run(main())
    """
)


@pytest.mark.rabbitmq
async def test_messages_survive_a_consumer_killed_without_acknowledging() -> None:
    async with fresh_rabbitmq_queue() as queue:
        ids = [uuid4() for _ in range(3)]
        for job_id in ids:
            await queue.publish(job_id)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HANGING_WORKER,
            queue._url,
            queue.queue_name,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert worker.stdout is not None
            async with asyncio.timeout(WAIT_S):
                taken = UUID((await worker.stdout.readline()).decode().strip())
            assert taken in ids
        finally:
            worker.kill()  # SIGKILL: no clean-up, no ack, the socket just goes away
            async with asyncio.timeout(WAIT_S):
                await worker.wait()

        seen: set[UUID] = set()
        all_seen = asyncio.Event()

        async def handler(job_id: UUID) -> None:
            seen.add(job_id)
            if seen == set(ids):
                all_seen.set()

        async with consuming(queue, handler, concurrency=2):
            async with asyncio.timeout(WAIT_S):
                await all_seen.wait()
        assert seen == set(ids)


@pytest.mark.rabbitmq
async def test_recovers_from_the_broker_dropping_every_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pixyproxy.adapters.rabbitmq")
    async with fresh_rabbitmq_queue() as queue:
        before, during, after = uuid4(), uuid4(), uuid4()
        seen: list[UUID] = []
        during_started = asyncio.Event()
        release = asyncio.Event()

        async def handler(job_id: UUID) -> None:
            seen.append(job_id)
            if job_id == during and seen.count(during) == 1:
                # Still running when the connection goes: its ack will find the channel gone.
                during_started.set()
                await release.wait()

        async with consuming(queue, handler, concurrency=2) as consumer:
            await queue.publish(before)
            await eventually(lambda: before in seen)
            await queue.publish(during)
            async with asyncio.timeout(WAIT_S):
                await during_started.wait()

            await asyncio.to_thread(close_all_connections, "test")
            release.set()

            await _publish_once_reconnected(queue, after)
            await eventually(lambda: after in seen)
            # The ack of the handler that outlived its channel was lost: the broker redelivers.
            await eventually(lambda: seen.count(during) >= 2)
            await queue.ping()
            assert not consumer.done()
        ours = [r.getMessage() for r in caplog.records if r.name == "pixyproxy.adapters.rabbitmq"]
        assert any(f"could not ack job {during}" in message for message in ours)
        assert await queue.queue_depth() == 0


@pytest.mark.rabbitmq
async def test_a_broker_that_goes_away_fails_calls_in_bounded_time_and_is_reconnected_to() -> None:
    url = await require_rabbitmq()
    target = URL(url)
    name = new_queue_name()
    with tcp_proxy((target.host or "127.0.0.1", target.port or 5672)) as proxy:
        queue = RabbitMqJobQueue(
            str(target.with_port(proxy.port)),
            queue_name=name,
            publish_timeout_s=2,
            reconnect_interval_s=TEST_RECONNECT_INTERVAL_S,
        )
        seen: list[UUID] = []

        async def handler(job_id: UUID) -> None:
            seen.append(job_id)

        try:
            async with consuming(queue, handler) as consumer:
                first = uuid4()
                await queue.publish(first)
                await eventually(lambda: first in seen)

                proxy.cut()
                started = time.monotonic()
                with pytest.raises(JobQueueUnavailableError):
                    await queue.publish(uuid4())
                assert time.monotonic() - started < 3
                started = time.monotonic()
                with pytest.raises(JobQueueUnavailableError):
                    await queue.ping()
                assert time.monotonic() - started < 4

                proxy.restore()
                second = uuid4()
                await _publish_once_reconnected(queue, second)
                await eventually(lambda: second in seen)  # the consumer was restored too
                assert not consumer.done()

                proxy.cut()  # and a consumer cancelled while the broker is away still stops
                started = time.monotonic()
                consumer.cancel()
                async with asyncio.timeout(WAIT_S):
                    await asyncio.gather(consumer, return_exceptions=True)
                assert time.monotonic() - started < 4
        finally:
            await queue.close()
            await delete_queues(name, name + ".dead")


@pytest.mark.rabbitmq
async def test_publish_declares_a_deleted_queue_again() -> None:
    async with fresh_rabbitmq_queue() as queue:
        await queue.publish(uuid4())
        await delete_queues(queue.queue_name)  # an operator's mistake, or a broker reset
        await queue.publish(uuid4())  # returned unroutable, so the queue is declared again
        assert await queue.queue_depth() == 1


@pytest.mark.rabbitmq
async def test_close_ends_consume_and_returns_unacked_messages() -> None:
    async with fresh_rabbitmq_queue() as queue:
        job_id = uuid4()
        started = asyncio.Event()

        async def handler(received: UUID) -> None:
            started.set()
            await asyncio.sleep(3600)

        consumer = asyncio.create_task(queue.consume(handler, concurrency=1))
        await queue.publish(job_id)
        async with asyncio.timeout(WAIT_S):
            await started.wait()
            await queue.close()
            await consumer  # returns: nothing left to consume from
        # The next use opens a new connection; the message the closed one held is back in the queue.
        await eventually(lambda: queue.queue_depth())


@pytest.mark.rabbitmq
async def test_a_refused_login_is_unavailable_without_the_password() -> None:
    url = (await require_rabbitmq()).replace("guest:guest@", "guest:wrong-s3cret@")
    queue = RabbitMqJobQueue(url, connect_timeout_s=2)
    try:
        with pytest.raises(JobQueueUnavailableError) as raised:
            await queue.publish(uuid4())
        assert "ACCESS_REFUSED" in str(raised.value)
        assert "wrong-s3cret" not in str(raised.value)
    finally:
        await queue.close()


def _closed_port_url() -> str:
    """A broker URL, with a password to look for in errors, on a port nothing listens on."""
    return f"amqp://guest:s3cret-pw@127.0.0.1:{free_port()}/"


async def test_an_unreachable_broker_fails_fast_without_the_password() -> None:
    queue = RabbitMqJobQueue(_closed_port_url(), connect_timeout_s=2, publish_timeout_s=5)
    try:
        started = time.monotonic()
        with pytest.raises(JobQueueUnavailableError) as raised:
            await queue.publish(uuid4())
        assert time.monotonic() - started < 2
        assert raised.value.__cause__ is not None
        assert "s3cret-pw" not in str(raised.value)
        with pytest.raises(JobQueueUnavailableError):
            await queue.ping()

        async def handler(job_id: UUID) -> None:
            raise AssertionError("nothing to consume")

        with pytest.raises(JobQueueUnavailableError):
            await queue.consume(handler, concurrency=1)
    finally:
        await queue.close()


async def test_a_broker_that_accepts_but_never_answers_is_bounded() -> None:
    clients: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)
        await reader.read()  # hold the connection open, say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    queue = RabbitMqJobQueue(
        f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout_s=0.5, publish_timeout_s=1
    )
    try:
        started = time.monotonic()
        with pytest.raises(JobQueueUnavailableError):
            await queue.publish(uuid4())
        assert time.monotonic() - started < 1.5
    finally:
        await queue.close()
        server.close()
        for writer in clients:
            writer.close()
        await server.wait_closed()


async def _publish_once_reconnected(queue: RabbitMqJobQueue, job_id: UUID) -> None:
    """While the connection is down a publish fails at once (the job stays unpublished and the
    sweep tries again); once the adapter has reconnected by itself, it goes through."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                await queue.publish(job_id)
                return
            except JobQueueUnavailableError:
                await asyncio.sleep(0.1)
