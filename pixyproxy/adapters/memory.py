"""In-memory adapters of all three ports: the unit tests' fakes, and a server with no accounts at all."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

from pixyproxy.domain import search
from pixyproxy.domain.exceptions import (
    BlobNotFoundError,
    DuplicateImageError,
    ImageNotFoundError,
)
from pixyproxy.domain.models import (
    BlobInfo,
    GeneratedImage,
    GenerationInfo,
    GenerationOptions,
    ImageFilter,
    ImageRecord,
    NewImage,
    PageKey,
    utc_now,
    validate_blob_key,
)


def _newest_first(record: ImageRecord) -> tuple[datetime, UUID]:
    return (record.created_at, record.guid)


class InMemoryImageRepository:
    """Keeps records in a dict; ordering and paging behave as the SQL adapters do."""

    def __init__(self) -> None:
        self.records: dict[UUID, ImageRecord] = {}
        self._terms: dict[UUID, frozenset[str]] = {}
        self._next_id = 1

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert a record with the next id."""
        if image.guid in self.records:
            raise DuplicateImageError(image.guid)
        record = ImageRecord(id=self._next_id, **image.model_dump())
        self._next_id += 1
        self.records[image.guid] = record
        self._terms[image.guid] = frozenset(search.indexed_terms(image.prompt))
        return record

    async def get(self, guid: UUID) -> ImageRecord:
        """The record with this GUID."""
        try:
            return self.records[guid]
        except KeyError:
            raise ImageNotFoundError(guid) from None

    async def delete(self, guid: UUID) -> bool:
        """Forget the record."""
        self._terms.pop(guid, None)
        return self.records.pop(guid, None) is not None

    async def list_page(
        self, *, limit: int, after: PageKey | None = None, filters: ImageFilter | None = None
    ) -> list[ImageRecord]:
        """Newest first, strictly after `after`, of the records that pass `filters`."""
        records = sorted(self.records.values(), key=_newest_first, reverse=True)
        if filters is not None:
            records = [r for r in records if filters.admits(r, prompt_terms=self._terms[r.guid])]
        if after is not None:
            bound = (after.created_at, after.guid)
            records = [r for r in records if _newest_first(r) < bound]
        return records[:limit]

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Every record's (guid, filename)."""
        return [(r.guid, r.filename) for r in self.records.values()]

    async def ping(self) -> None:
        """Always up."""

    async def close(self) -> None:
        """Nothing to release."""


class InMemoryBlobStore:
    """Keeps bytes in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str, datetime]] = {}

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store the bytes."""
        self.blobs[validate_blob_key(key)] = (bytes(data), content_type, utc_now())

    async def get(self, key: str) -> bytes:
        """The bytes under the key."""
        try:
            return self.blobs[validate_blob_key(key)][0]
        except KeyError:
            raise BlobNotFoundError(key) from None

    async def read_chunks(self, key: str, *, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The held bytes in slices."""
        data = await self.get(key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    async def delete(self, key: str) -> None:
        """Forget the key."""
        self.blobs.pop(validate_blob_key(key), None)

    async def exists(self, key: str) -> bool:
        """Whether the key is held."""
        return validate_blob_key(key) in self.blobs

    async def list_blobs(self) -> list[BlobInfo]:
        """Every key with its size and time."""
        return [
            BlobInfo(key=key, size_bytes=len(data), modified_at=at)
            for key, (data, _, at) in self.blobs.items()
        ]

    async def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """Memory has no URLs."""
        validate_blob_key(key)
        return None

    async def file_path(self, key: str) -> str | None:
        """Memory has no files."""
        validate_blob_key(key)
        return None

    async def ping(self) -> None:
        """Always up."""

    async def close(self) -> None:
        """Nothing to release."""


# The smallest valid PNG (1x1, transparent): enough for the fake to hand back real image bytes.
_PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360606060000000050001a5f645400000000049454e44ae426082"
)


class InMemoryImageGenerator:
    """A fake generator: instant, counts its calls, and can be told to fail or to wait."""

    MODEL = "memory-fake"

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.calls: list[str] = []
        self.fail_with: Exception | None = None
        self.delay_s = delay_s

    @property
    def name(self) -> str:
        """The fake's name."""
        return "memory"

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """A tiny PNG whose trailing comment makes its bytes unique to the prompt."""
        self.calls.append(prompt)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        digest = hashlib.sha256(f"{len(self.calls)}:{prompt}".encode()).digest()
        return GeneratedImage(
            data=_PNG_1X1 + digest,
            content_type="image/png",
            generation=GenerationInfo(generator=self.name, model=self.MODEL),
        )

    async def close(self) -> None:
        """Nothing to release."""
