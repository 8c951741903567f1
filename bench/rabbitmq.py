"""The bench's RabbitMQ queues: a fresh name for each figure, deleted with its dead-letter queue after.

PixyProxy declares the queue itself (a durable quorum queue, dead-lettering to `<queue>.dead`) when a
server or worker starts with `PIXYPROXY_JOB_QUEUE=rabbitmq`; the bench only names it and cleans up.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit
from uuid import uuid4

import aio_pika
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

CONNECT_TIMEOUT_S = 5


def new_queue_name(purpose: str) -> str:
    """A queue name no other run uses."""
    return f"pixyproxy.bench.{purpose}.{uuid4().hex[:12]}"


def queues_of(name: str) -> tuple[str, str]:
    """The job queue and the dead-letter queue PixyProxy declares for it."""
    return name, name + ".dead"


def _redacted(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "******") if password else text


def reachable(url: str) -> str | None:
    """None when the broker completes an AMQP handshake, else why not (with any password masked)."""

    async def handshake() -> None:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        await connection.close()

    try:
        asyncio.run(handshake())
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as err:
        return _redacted(f"{type(err).__name__}: {err}".strip().rstrip(":"), url)
    return None


def delete_queues(url: str, *names: str) -> None:
    """Delete the queues, whatever they hold; missing ones are fine."""

    async def delete() -> None:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
        finally:
            await connection.close()

    asyncio.run(delete())


def queue_depth(url: str, name: str) -> int:
    """How many messages wait on the queue (0 when it does not exist)."""

    async def depth() -> int:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0
            return int(queue.declaration_result.message_count or 0)
        finally:
            await connection.close()

    return asyncio.run(depth())
