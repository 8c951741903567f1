"""The image generator port: turns a prompt into image bytes."""

from __future__ import annotations

from typing import Protocol

from pixyproxy.domain.models import GeneratedImage, GenerationOptions


class ImageGenerator(Protocol):
    """Makes images from prompts."""

    @property
    def name(self) -> str:
        """A short name for this generator, recorded on every image it makes."""
        ...

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Make one image from a validated prompt.

        Raises PromptRejectedError (content policy), GeneratorUnavailableError (timeout, rate
        limit, 5xx, connection; with retry_after_s when known), GeneratorBadResponseError (no
        image or undecodable bytes) and its subclass GeneratorAuthenticationError.
        """
        ...

    async def close(self) -> None:
        """Release clients."""
        ...
