"""Consuming a JobQueue inside a test: the consumer as a task, stopped and waited for afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pixyproxy.ports import JobHandler, JobQueue

STOP_WAIT_S = 10


@asynccontextmanager
async def consuming(
    queue: JobQueue, handler: JobHandler, *, concurrency: int = 1
) -> AsyncIterator[asyncio.Task[None]]:
    """consume() in a task for the block; cancelled, and waited for, after it."""
    task = asyncio.create_task(queue.consume(handler, concurrency=concurrency))
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(STOP_WAIT_S):
            await asyncio.gather(task, return_exceptions=True)
