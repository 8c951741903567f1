"""A generator wrapper that bounds how many generations run at once in this worker."""

from __future__ import annotations

import asyncio

from pixyproxy.domain.exceptions import GeneratorBusyError
from pixyproxy.domain.models import GeneratedImage, GenerationOptions
from pixyproxy.ports import ImageGenerator


class BoundedImageGenerator:
    """Lets at most `max_concurrent` generations reach `inner`; others wait up to `wait_s`, then fail."""

    def __init__(self, inner: ImageGenerator, *, max_concurrent: int, wait_s: float) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        self._wait_s = wait_s
        self.in_flight = 0

    @property
    def name(self) -> str:
        """The wrapped generator's name."""
        return self._inner.name

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Generate once a slot is free; a cancelled caller gives its slot back."""
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self._wait_s)
        except TimeoutError:
            raise GeneratorBusyError(self._max_concurrent, self._wait_s) from None
        self.in_flight += 1
        try:
            return await self._inner.generate(prompt, options=options)
        finally:
            self.in_flight -= 1
            self._slots.release()

    async def close(self) -> None:
        """Close the wrapped generator."""
        await self._inner.close()
