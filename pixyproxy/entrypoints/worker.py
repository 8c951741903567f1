"""`pixyproxy worker`: a process that only runs generation jobs from the broker's queue.

Run as many as you like, on as many machines: each takes up to `--concurrency` jobs at once, so
the upstream sees at most workers x concurrency generations, however many API nodes accept them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.container import Container, adapters_open
from pixyproxy.entrypoints.job_runner import jobs_running
from pixyproxy.entrypoints.metrics import serving_metrics

log = logging.getLogger(__name__)


def configure_worker(container: Container, *, concurrency: int) -> None:
    """Size the generation bound to the worker's concurrency, and refuse a queue with no broker."""
    if container.config.jobs.queue() != "rabbitmq":
        raise ConfigurationError(
            "PIXYPROXY_JOB_QUEUE",
            "a worker takes jobs from a broker: set it to rabbitmq (with memory, serve runs the jobs)",
        )
    if concurrency < 1:
        raise ConfigurationError("--concurrency", "must be at least 1")
    # Every job the broker hands over must get an upstream slot at once, never wait for one and time out.
    container.config.generator.max_concurrent.from_value(concurrency)


async def run_worker(
    container: Container, *, concurrency: int, metrics_at: tuple[str, int] | None = None
) -> int:
    """Consume jobs until SIGTERM or SIGINT; jobs cut short are handed back for another worker.

    `metrics_at` (host, port): serve the worker's own metrics (generations, jobs, by owner) there,
    for Prometheus to scrape beside the API nodes' /metrics.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop.set)
    with contextlib.ExitStack() as exposing:
        if metrics_at is not None:
            exposing.enter_context(serving_metrics(container.metrics(), *metrics_at))
        return await _consume(container, concurrency=concurrency, stop=stop)


async def _consume(container: Container, *, concurrency: int, stop: asyncio.Event) -> int:
    async with (
        adapters_open(container),
        jobs_running(
            container.job_service(),
            container.job_queue(),
            consume=True,
            concurrency=concurrency,
            sweep_interval_s=container.config.jobs.sweep_interval_s(),
            webhooks=container.webhook_service(),
            webhook_interval_s=container.config.webhooks.poll_interval_s(),
        ) as consumer,
    ):
        log.info(
            "PixyProxy worker ready: %d jobs at once from %s", concurrency, container.config.jobs.amqp_queue()
        )
        assert consumer is not None
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({consumer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if consumer.done() and not consumer.cancelled() and consumer.exception() is not None:
            log.error("the consumer stopped", exc_info=consumer.exception())
            return 1
        log.info("worker stopping")
    return 0
