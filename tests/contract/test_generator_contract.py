"""The ImageGenerator contract, run against every generator adapter."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from pixyproxy.domain.models import GenerationOptions, sniff_content_type
from pixyproxy.ports import ImageGenerator


async def test_generates_decodable_image_bytes_of_the_declared_type(
    generator: ImageGenerator,
) -> None:
    image = await generator.generate("a red fox in snow", options=GenerationOptions())
    assert image.data
    assert sniff_content_type(image.data) == image.content_type
    with Image.open(io.BytesIO(image.data)) as decoded:
        decoded.verify()


async def test_records_its_own_name_as_provenance(generator: ImageGenerator) -> None:
    image = await generator.generate("provenance", options=GenerationOptions())
    assert image.generation.generator == generator.name
    assert generator.name


async def test_unicode_and_long_prompts_are_accepted(generator: ImageGenerator) -> None:
    for prompt in ["🦊 in ❄️, 漢字", "x" * 4000, "line one\nline two\tand a tab"]:
        image = await generator.generate(prompt, options=GenerationOptions())
        assert sniff_content_type(image.data) == image.content_type


async def test_concurrent_generations_all_answer(generator: ImageGenerator) -> None:
    images = await asyncio.gather(
        *(generator.generate(f"prompt {i}", options=GenerationOptions()) for i in range(8))
    )
    assert all(sniff_content_type(i.data) == i.content_type for i in images)
