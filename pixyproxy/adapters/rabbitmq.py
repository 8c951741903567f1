"""RabbitMQ job queue (aio-pika): job ids on a durable quorum queue, over a self-healing connection.

A message is only a job id, and the jobs table decides what a delivery does, so this adapter favours
redelivery over loss: messages are persistent and publisher-confirmed, acknowledged only after their
handler returns, and any acknowledgement that cannot be sent is left for the broker to redeliver.
A message that keeps failing is dead-lettered by the broker (the quorum queue's delivery limit) to
`<queue_name>.dead`, instead of looping forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    AMQPConnectionError,
    ChannelInvalidStateError,
    PublishError,
)
from yarl import URL

from pixyproxy.domain.exceptions import JobQueueUnavailableError
from pixyproxy.ports import JobHandler

log = logging.getLogger(__name__)

# Every way aio-pika, aiormq, pamqp or the socket report a broker that is gone or refused us: aio-pika's
# own list (AMQPError, ConnectionError, OSError, RuntimeError such as ChannelInvalidStateError, ...),
# and timeouts (named, though TimeoutError is an OSError).
_BROKER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)

# ping() answers a health check: a broker that takes longer than this is as good as down.
PING_TIMEOUT_S = 3.0

# Bounds each of the three steps of consume()'s clean-up, so a dead broker cannot hold a stopping
# worker for long (the job runner waits 10 s for it).
_CLEANUP_TIMEOUT_S = 3.0

# While the robust connection reopens the publish channel, publish() looks again this often.
_REPUBLISH_PAUSE_S = 0.1


def _being_cancelled() -> bool:
    """Whether the current task was asked to stop (not merely handed a CancelledError by aiormq)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RabbitMqJobQueue:
    """Job ids on a RabbitMQ quorum queue, for workers in other processes (no in-process running)."""

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = "pixyproxy.jobs",
        delivery_limit: int = 5,
        publish_timeout_s: float = 10,
        connect_timeout_s: float = 5,
        reconnect_interval_s: float = 5,
    ) -> None:
        if delivery_limit < 1:
            raise ValueError("delivery_limit must be at least 1")
        self._url = url
        try:
            self._password = URL(url).password or ""
        except (TypeError, ValueError):
            self._password = ""
        self._queue_name = queue_name
        self._dead_letter_name = f"{queue_name}.dead"
        self._delivery_limit = delivery_limit
        self._publish_timeout_s = publish_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    def __repr__(self) -> str:
        return f"RabbitMqJobQueue({self.redacted_url!r}, queue_name={self._queue_name!r})"

    @property
    def in_process(self) -> bool:
        """Jobs run in worker processes, not in the publisher."""
        return False

    @property
    def queue_name(self) -> str:
        """The queue job ids go to."""
        return self._queue_name

    @property
    def dead_letter_queue_name(self) -> str:
        """The queue the broker moves a message to once it has failed `delivery_limit` redeliveries."""
        return self._dead_letter_name

    @property
    def redacted_url(self) -> str:
        """The broker URL with its password masked, fit for logs and errors."""
        try:
            url = URL(self._url)
            return str(url.with_password("******") if url.password else url)
        except (TypeError, ValueError):
            return "<unparseable AMQP URL>"

    # Connection ---------------------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        # Quorum: replicated and durable, and it counts deliveries, so the broker itself dead-letters
        # a poison message after `delivery_limit` returns instead of redelivering it forever.
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self._delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._dead_letter_name,
        }

    def _unavailable(self, doing: str, exc: BaseException) -> JobQueueUnavailableError:
        # aio-pika and aiormq print URLs with the password masked; mask it here too, in case.
        detail = str(exc).strip() or type(exc).__name__
        if self._password:
            detail = detail.replace(self._password, "******")
        return JobQueueUnavailableError(f"{doing} at {self.redacted_url}: {type(exc).__name__}: {detail}")

    async def _ready(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
        """The connection and publish channel, opened (and the queues declared) on first use."""
        async with self._lock:
            if self._connection is not None and self._channel is not None:
                return self._connection, self._channel
            # What aio_pika.connect_robust does, with the connection in hand before it connects: a
            # connect cut short (a caller's timeout, a health check giving up) must close it, or its
            # background task would go on reconnecting, unowned. `timeout` bounds each attempt, the
            # AMQP handshake included; the first fails fast (no retries) when the broker is down.
            # Once open, the connection reopens itself and its channels, queues and consumers after
            # a drop, every `reconnect_interval` seconds until it succeeds.
            connection = aio_pika.RobustConnection(
                URL(self._url),
                reconnect_interval=self._reconnect_interval_s,
                client_properties={"connection_name": f"pixyproxy {self._queue_name}"},
            )
            doing = "cannot connect to RabbitMQ"
            try:
                await connection.connect(timeout=self._connect_timeout_s)
                doing = f"cannot declare queue {self._queue_name!r}"
                async with asyncio.timeout(self._connect_timeout_s):
                    # on_return_raises: a message the broker cannot route (the queue was deleted) fails
                    # the publish instead of vanishing behind a positive confirm.
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                    await self._declare_queues(channel, robust=True)
            except BaseException as exc:
                with contextlib.suppress(*_BROKER_ERRORS):
                    await connection.close()
                if isinstance(exc, _BROKER_ERRORS):
                    raise self._unavailable(doing, exc) from exc
                raise
            log.info("connected to RabbitMQ at %s, queue %s", self.redacted_url, self._queue_name)
            self._connection, self._channel = connection, channel
            return connection, channel

    async def _declare_queues(self, channel: AbstractRobustChannel, *, robust: bool) -> None:
        """Declare the dead-letter queue and the queue (idempotent); robust: again on every reconnection."""
        # The dead-letter queue is quorum too, so what it holds is as safe as the queue it came from.
        await channel.declare_queue(
            self._dead_letter_name, durable=True, arguments={"x-queue-type": "quorum"}, robust=robust
        )
        await channel.declare_queue(
            self._queue_name, durable=True, arguments=self._queue_arguments(), robust=robust
        )

    # The port -----------------------------------------------------------------------------------

    async def publish(self, job_id: UUID) -> None:
        """Send the id as a persistent message; returns once the broker confirmed it."""
        message = aio_pika.Message(
            body=str(job_id).encode("ascii"),
            content_type="text/plain",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(job_id),
        )
        if self._connection is not None and not self._connection.connected.is_set():
            # Known down and reconnecting: say so at once rather than hold an accept for the full
            # timeout. The job stays unpublished in the database; the sweep publishes it once back.
            raise JobQueueUnavailableError(f"the connection to RabbitMQ at {self.redacted_url} is down")
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                _, channel = await self._ready()
                await self._publish_until_confirmed(channel, message)
        except TimeoutError as exc:
            raise JobQueueUnavailableError(
                f"RabbitMQ at {self.redacted_url} did not take job {job_id} within "
                f"{self._publish_timeout_s:g}s (unreachable, or not confirming)"
            ) from exc
        except _BROKER_ERRORS as exc:
            raise self._unavailable(f"cannot publish job {job_id}", exc) from exc

    async def _publish_until_confirmed(
        self, channel: AbstractRobustChannel, message: aio_pika.Message
    ) -> None:
        """Publish, retrying while the robust connection recovers; the caller bounds the time."""
        redeclared = False
        while True:
            try:
                await channel.default_exchange.publish(message, routing_key=self._queue_name, mandatory=True)
                return
            except PublishError:
                # Returned unroutable: someone deleted the queue. Declare it again, once, and retry.
                if redeclared:
                    raise
                log.warning("queue %s is missing; declaring it again", self._queue_name)
                await self._declare_queues(channel, robust=False)
                redeclared = True
                continue
            except ChannelInvalidStateError:
                # The connection dropped and the channel is not reopened yet: wait for it. Nothing
                # was sent, so trying again cannot duplicate.
                log.debug("publish channel is closed; waiting for the connection to recover")
            except AMQPConnectionError as exc:
                # The connection died under the publish (a forced close, or the socket went away),
                # maybe with the confirm outstanding: the broker may hold it already. A duplicate is
                # harmless (the job row decides), a loss is not.
                log.info("connection lost before the broker confirmed; publishing again (%s)", exc)
            except asyncio.CancelledError:
                # aiormq fails pending confirms with CancelledError when a connection is torn down.
                if _being_cancelled():
                    raise
                log.info("connection lost before the broker confirmed; publishing again")
            await asyncio.sleep(_REPUBLISH_PAUSE_S)
            await channel.ready()

    async def consume(self, handler: JobHandler, *, concurrency: int) -> None:
        """Run `handler(job_id)` per message, at most `concurrency` at once, until cancelled.

        Each delivery runs in its own task: acknowledged when the handler returns, handed back
        (nack, requeue) when it raises; the quorum queue dead-letters one that fails `delivery_limit`
        times. A body that is not a job id is dead-lettered at once. On cancellation, consuming stops,
        running handlers are cancelled (the job service hands their jobs back), and closing the
        channel returns every unacknowledged message to the queue. Returns if `close()` closes the
        connection meanwhile.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        connection, _ = await self._ready()
        # The prefetch bounds deliveries per channel; after a reconnection, handlers of the old
        # channel may still run beside the new channel's deliveries, so a semaphore keeps the bound.
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        stopping = False

        async def on_message(message: AbstractIncomingMessage) -> None:
            if stopping:
                return  # a delivery that crossed our basic.cancel: closing the channel hands it back
            # Our own task, not aiormq's: aiormq cancels its callback tasks when the connection
            # drops, and a job halfway done should finish; its redelivery is settled by the job row.
            task = asyncio.create_task(self._deliver(message, handler, slots))
            running.add(task)
            task.add_done_callback(running.discard)

        # A channel of its own: the prefetch bounds unacknowledged deliveries per channel, and a
        # consumer's failures must not disturb publishing.
        channel = connection.channel(publisher_confirms=False)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await channel
                await channel.set_qos(prefetch_count=concurrency)
                # Robust: re-declared, with the prefetch and the consumer, on every reconnection.
                queue = await channel.declare_queue(
                    self._queue_name, durable=True, arguments=self._queue_arguments()
                )
                consumer_tag = await queue.consume(on_message, no_ack=False)
        except BaseException as exc:
            await self._close_channel(channel)
            if isinstance(exc, _BROKER_ERRORS):
                raise self._unavailable(f"cannot consume from {self._queue_name!r}", exc) from exc
            raise
        log.info("consuming %s, %d at a time", self._queue_name, concurrency)
        try:
            await connection.closed()
        finally:
            stopping = True
            await self._stop_consuming(channel, queue, consumer_tag, running)

    async def _stop_consuming(
        self,
        channel: AbstractRobustChannel,
        queue: aio_pika.abc.AbstractRobustQueue,
        consumer_tag: str,
        running: set[asyncio.Task[None]],
    ) -> None:
        """Stop deliveries, cancel running handlers, and close the channel (unacked messages go back)."""
        # Cancel the consumer first, so the broker sends no more while handlers are being cancelled.
        # A closed channel (connection down) has no consumer left on the broker to cancel.
        if not channel.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                async with asyncio.timeout(_CLEANUP_TIMEOUT_S):
                    await queue.cancel(consumer_tag)
        for task in list(running):
            task.cancel()
        if running:
            _, still_running = await asyncio.wait(list(running), timeout=_CLEANUP_TIMEOUT_S)
            if still_running:
                log.warning("%d job handlers ignored cancellation; leaving them running", len(still_running))
        await self._close_channel(channel)
        log.info("stopped consuming %s", self._queue_name)

    @staticmethod
    async def _close_channel(channel: AbstractRobustChannel) -> None:
        """Close the channel, if it can be; the broker requeues its unacknowledged messages either way."""
        with contextlib.suppress(*_BROKER_ERRORS):
            async with asyncio.timeout(_CLEANUP_TIMEOUT_S):
                await channel.close()

    async def _deliver(
        self, message: AbstractIncomingMessage, handler: JobHandler, slots: asyncio.Semaphore
    ) -> None:
        """Run the handler for one delivery and settle it: ack, nack (requeue) or reject."""
        try:
            job_id = UUID(message.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            log.warning("dead-lettering a message that is not a job id: %r", message.body[:80])
            await self._settle(message.reject(requeue=False), "reject", message.body[:80])
            return
        async with slots:
            try:
                await handler(job_id)
            except asyncio.CancelledError:
                if _being_cancelled():
                    # Stopping: no nack; closing the channel hands the message back.
                    raise
                log.warning("job %s: its handler was cancelled from inside; handing it back", job_id)
                await self._settle(message.nack(requeue=True), "nack", job_id)
                return
            except Exception:
                log.exception("job %s failed in its handler; handing it back for redelivery", job_id)
                await self._settle(message.nack(requeue=True), "nack", job_id)
                return
        await self._settle(message.ack(), "ack", job_id)

    @staticmethod
    async def _settle(action: Awaitable[None], what: str, job: object) -> None:
        """Send an ack/nack/reject; if the channel died with its connection, log it and move on.

        The broker hands back every unacknowledged message of a closed channel, so a lost ack means
        a redelivery, which the job row makes harmless; a delivery tag means nothing on a new channel.
        """
        try:
            await action
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            log.warning(
                "could not %s job %s: the connection dropped; the broker will redeliver it", what, job
            )
        except _BROKER_ERRORS as exc:
            log.warning(
                "could not %s job %s (%s: %s); the broker will redeliver it",
                what,
                job,
                type(exc).__name__,
                exc,
            )

    async def ping(self) -> None:
        """Check the broker answers and the queue exists (a passive declare), within a few seconds."""
        await self.queue_depth()

    async def queue_depth(self, *, dead_letters: bool = False) -> int:
        """Messages ready in the queue (or its dead-letter queue), not counting unacknowledged ones."""
        name = self._dead_letter_name if dead_letters else self._queue_name
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                _, channel = await self._ready()
                # Passive on the raw channel: the robust channel would answer from its own cache.
                underlay = await channel.get_underlay_channel()
                declared = await underlay.queue_declare(name, passive=True)
        except TimeoutError as exc:
            raise JobQueueUnavailableError(
                f"RabbitMQ at {self.redacted_url} did not answer within {PING_TIMEOUT_S:g}s"
            ) from exc
        except _BROKER_ERRORS as exc:
            raise self._unavailable(f"cannot check queue {name!r}", exc) from exc
        return declared.message_count or 0

    async def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        async with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()
