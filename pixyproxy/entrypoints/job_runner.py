"""Background work of a PixyProxy process: running jobs from the queue, and sweeping the outbox.

`pixyproxy serve` runs both when jobs go through the in-process queue (the embedded default), and
only the sweep when a broker carries them; `pixyproxy worker` runs both on the broker's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pixyproxy.app.jobs import JobService
from pixyproxy.app.webhooks import WebhookService
from pixyproxy.domain.exceptions import ImageGenerationException, JobQueueUnavailableError
from pixyproxy.ports import JobQueue

log = logging.getLogger(__name__)


async def sweep_forever(service: JobService, *, interval_s: float) -> None:
    """Publish jobs the broker missed (down at accept time) or whose worker died, and write the webhook
    events of jobs whose process died right after finishing them, every interval."""
    while True:
        try:
            if published := await service.publish_stale():
                log.info("published %d jobs that were waiting for the queue", published)
            await service.record_missed_events()
        except ImageGenerationException as err:
            log.warning("job sweep failed, trying again in %gs: %s", interval_s, err)
        await asyncio.sleep(interval_s)


async def deliver_forever(webhooks: WebhookService, *, interval_s: float) -> None:
    """Send due webhook deliveries; when there were some, look again at once (a backlog drains fast)."""
    while True:
        try:
            attempted = await webhooks.deliver_due()
        except ImageGenerationException as err:
            log.warning("webhook delivery failed, trying again in %gs: %s", interval_s, err)
            attempted = 0
        if not attempted:
            await asyncio.sleep(interval_s)


async def consume_forever(
    service: JobService, queue: JobQueue, *, concurrency: int, retry_s: float = 5
) -> None:
    """Consume the queue; when the broker cannot be reached (not up yet, or gone), try again."""
    while True:
        try:
            await queue.consume(service.run_job, concurrency=concurrency)
        except JobQueueUnavailableError as err:
            log.warning("cannot consume jobs yet, trying again in %gs: %s", retry_s, err.reason)
        else:
            return  # the queue was closed: this process is stopping
        await asyncio.sleep(retry_s)


@contextlib.asynccontextmanager
async def jobs_running(
    service: JobService,
    queue: JobQueue,
    *,
    consume: bool,
    concurrency: int,
    sweep_interval_s: float,
    webhooks: WebhookService | None = None,
    webhook_interval_s: float = 1.0,
) -> AsyncIterator[asyncio.Task[None] | None]:
    """The sweep, and with `consume` the queue's consumers and the webhook sender, for the block.

    Webhooks are sent where jobs run: by `serve` without a broker, by the workers with one.

    Yields the consumer task (or None), so a caller can notice it ending. On exit both are
    cancelled: a job cut short is handed back (its lease expired) for another worker to take.
    """
    tasks: list[asyncio.Task[None]] = []
    consumer: asyncio.Task[None] | None = None
    if consume:
        if queue.in_process:
            try:
                await service.recover()
            except ImageGenerationException as err:
                log.warning("could not pick up unfinished jobs yet (the sweep will): %s", err)
        consumer = asyncio.create_task(consume_forever(service, queue, concurrency=concurrency))
        tasks.append(consumer)
        if webhooks is not None:
            tasks.append(asyncio.create_task(deliver_forever(webhooks, interval_s=webhook_interval_s)))
    tasks.append(asyncio.create_task(sweep_forever(service, interval_s=sweep_interval_s)))
    try:
        yield consumer
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(10):
                    await task
