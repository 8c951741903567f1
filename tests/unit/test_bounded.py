"""BoundedImageGenerator: at most N generations reach the upstream; others wait, then give up."""

from __future__ import annotations

import asyncio

import pytest

from pixyproxy.adapters.memory import InMemoryImageGenerator
from pixyproxy.app.bounded import BoundedImageGenerator
from pixyproxy.domain.exceptions import GeneratorBusyError
from pixyproxy.domain.models import GeneratedImage, GenerationOptions


class GatedGenerator(InMemoryImageGenerator):
    """A fake that holds every call until the gate opens, and records the most calls at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0
        self.most_running = 0
        self.entered = asyncio.Condition()

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Wait for the gate, counting how many wait together."""
        async with self.entered:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.entered.notify_all()
        try:
            await self.gate.wait()
            return await super().generate(prompt, options=options)
        finally:
            self.running -= 1

    async def until_running(self, count: int) -> None:
        """Return once `count` calls are inside the fake."""
        async with self.entered:
            await self.entered.wait_for(lambda: self.running >= count)


async def test_callers_beyond_the_bound_wait_for_a_slot() -> None:
    inner = GatedGenerator()
    bounded = BoundedImageGenerator(inner, max_concurrent=2, wait_s=30)
    tasks = [asyncio.create_task(bounded.generate(f"p{i}", options=GenerationOptions())) for i in range(5)]
    await inner.until_running(2)
    for _ in range(5):  # give the waiting callers every chance to (wrongly) get in
        await asyncio.sleep(0)
    assert inner.running == 2
    assert not any(task.done() for task in tasks)

    inner.gate.set()
    images = await asyncio.gather(*tasks)

    assert len(images) == 5
    assert inner.most_running == 2
    assert len(inner.calls) == 5
    assert bounded.in_flight == 0


async def test_a_caller_that_waits_past_the_queue_timeout_is_refused_as_busy() -> None:
    inner = GatedGenerator()
    bounded = BoundedImageGenerator(inner, max_concurrent=1, wait_s=0.05)
    holder = asyncio.create_task(bounded.generate("first", options=GenerationOptions()))
    await inner.until_running(1)

    with pytest.raises(GeneratorBusyError) as caught:
        await bounded.generate("second", options=GenerationOptions())

    assert caught.value.limit == 1
    assert caught.value.retry_after_s is not None
    assert inner.calls == []  # the refused caller never reached the upstream
    inner.gate.set()
    await holder


async def test_a_cancelled_caller_gives_its_slot_back() -> None:
    inner = GatedGenerator()
    bounded = BoundedImageGenerator(inner, max_concurrent=1, wait_s=30)
    holder = asyncio.create_task(bounded.generate("held", options=GenerationOptions()))
    await inner.until_running(1)
    waiter = asyncio.create_task(bounded.generate("waiting", options=GenerationOptions()))
    await asyncio.sleep(0)

    holder.cancel()
    waiter.cancel()
    for task in (holder, waiter):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bounded.in_flight == 0

    inner.gate.set()
    image = await asyncio.wait_for(bounded.generate("after", options=GenerationOptions()), timeout=5)
    assert image.data
    assert inner.calls == ["after"]
