"""Builders of domain objects for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from pixyproxy.domain.models import GenerationInfo, NewImage, filename_for

BASE_TIME = datetime(2026, 11, 26, 7, 14, 5, 123456, tzinfo=UTC)


def new_image(
    *,
    prompt: str = "a red fox in snow",
    guid: UUID | None = None,
    created_at: datetime | None = None,
    offset_us: int = 0,
) -> NewImage:
    """A valid NewImage; `offset_us` shifts its time from a fixed base."""
    guid = guid or uuid4()
    at = created_at or BASE_TIME + timedelta(microseconds=offset_us)
    return NewImage(
        guid=guid,
        prompt=prompt,
        filename=filename_for(guid, "image/png"),
        content_type="image/png",
        size_bytes=68,
        sha256="0" * 64,
        generation=GenerationInfo(generator="memory", model="memory-fake", usage={"total_tokens": 3}),
        created_at=at,
        updated_at=at,
    )
