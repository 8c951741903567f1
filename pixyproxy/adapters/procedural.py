"""The offline procedural generator: a deterministic picture drawn from the prompt, no network.

It is the embedded default's stand-in for a model, and says so in its name.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random

from PIL import Image, ImageDraw

from pixyproxy.domain.exceptions import InvalidRequestError
from pixyproxy.domain.models import GeneratedImage, GenerationInfo, GenerationOptions

MAX_SIDE = 2048


def _parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    w, h = int(width), int(height)
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
        raise InvalidRequestError(f"must be between 16x16 and {MAX_SIDE}x{MAX_SIDE}", field="size")
    return w, h


def draw(prompt: str, width: int, height: int) -> bytes:
    """A PNG of overlapping shapes whose colours and places are seeded by the prompt's hash."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    background = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    pen = ImageDraw.Draw(image)
    for _ in range(12 + rng.randrange(12)):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            pen.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            pen.rectangle((x0, y0, x1, y1), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ProceduralImageGenerator:
    """Draws a deterministic PNG from the prompt; offline, free, and not a model."""

    MODEL = "procedural-shapes-v1"  # the name /v1/models lists; the record adds the size drawn

    def __init__(self, *, default_size: str = "512x512") -> None:
        self._default_size = _parse_size(default_size)

    @property
    def name(self) -> str:
        """Says plainly that this is the offline stand-in."""
        return "procedural"

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Draw the picture in a worker thread, so the event loop stays free."""
        width, height = _parse_size(options.size) if options.size else self._default_size
        data = await asyncio.to_thread(draw, prompt, width, height)
        return GeneratedImage(
            data=data,
            content_type="image/png",
            generation=GenerationInfo(generator=self.name, model=f"{self.MODEL} {width}x{height}"),
        )

    async def close(self) -> None:
        """Nothing to release."""
