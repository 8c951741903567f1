"""A uniquely named job queue per test, on the broker PIXYPROXY_TEST_AMQP_URL names; deleted after."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import aio_pika
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from pixyproxy.adapters.rabbitmq import RabbitMqJobQueue
from tests.support.real_parts import missing_real_part

DEFAULT_TEST_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOW_TO_START = "start it with: rabbitmq-server -detached (then: rabbitmqctl await_startup)"

# Tests reconnect after a forced close well inside their time budget (the adapter's default is 5 s).
TEST_RECONNECT_INTERVAL_S = 0.5


def amqp_url() -> str:
    """The test broker's URL."""
    return os.environ.get("PIXYPROXY_TEST_AMQP_URL", DEFAULT_TEST_URL)


async def rabbitmq_answers(url: str | None = None) -> bool:
    """Whether the broker completes an AMQP handshake (an open port alone is not a ready broker)."""
    try:
        connection = await aio_pika.connect(url or amqp_url(), timeout=3)
    except CONNECTION_EXCEPTIONS:
        return False
    await connection.close()
    return True


async def require_rabbitmq() -> str:
    """The broker's URL; skips the test (fails it in CI) when the broker does not answer."""
    url = amqp_url()
    if not await rabbitmq_answers(url):
        missing_real_part("RabbitMQ at " + url.split("@")[-1], HOW_TO_START)
    return url


def new_queue_name() -> str:
    """A queue name no other test uses."""
    return f"pixyproxy.test.{uuid4().hex[:12]}"


@asynccontextmanager
async def admin_channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain (not robust) channel of its own, for looking at and cleaning up after a test's queues."""
    connection = await aio_pika.connect(amqp_url(), timeout=5)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def delete_queues(*names: str) -> None:
    """Delete the queues, whatever they hold; missing ones are fine."""
    async with admin_channel() as channel:
        for name in names:
            await channel.queue_delete(name)


async def publish_raw(queue_name: str, body: bytes) -> None:
    """Put any bytes on the queue, as a faulty or hostile publisher would."""
    async with admin_channel() as channel:
        message = aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=queue_name)


async def dead_letters(queue: RabbitMqJobQueue) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message off the queue's dead-letter queue."""
    taken = []
    async with admin_channel() as channel:
        dead = await channel.declare_queue(queue.dead_letter_queue_name, passive=True)
        while (message := await dead.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


def close_all_connections(reason: str = "test") -> None:
    """Have the broker drop every client connection, as an operator or a broker restart would."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        missing_real_part(
            "rabbitmqctl", "install RabbitMQ's tools and run the tests as a user allowed to use it"
        )
    try:
        subprocess.run(
            [rabbitmqctl, "close_all_connections", reason], check=True, capture_output=True, timeout=30
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        missing_real_part("rabbitmqctl close_all_connections", f"it failed ({exc}); run the tests as root")


@asynccontextmanager
async def fresh_rabbitmq_queue(**kwargs: Any) -> AsyncIterator[RabbitMqJobQueue]:
    """A RabbitMqJobQueue on a queue of its own; closed, and its queue and dead-letter queue deleted after."""
    url = await require_rabbitmq()
    kwargs.setdefault("reconnect_interval_s", TEST_RECONNECT_INTERVAL_S)
    queue = RabbitMqJobQueue(url, queue_name=new_queue_name(), **kwargs)
    try:
        yield queue
    finally:
        await queue.close()
        await delete_queues(queue.queue_name, queue.dead_letter_queue_name)
