"""The image use-cases: generate, get_detail, list_details, open_content. They know only ports."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from pixyproxy.app.requests import (
    DEFAULT_PAGE_LIMIT,
    GenerateImageRequest,
    decode_cursor,
    encode_cursor,
    parse_generate_request,
    parse_guid,
    parse_idempotency_key,
    parse_limit,
)
from pixyproxy.domain.exceptions import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    RecordOutcomeUnknownError,
)
from pixyproxy.domain.models import (
    GenerationOptions,
    ImageContent,
    ImageDetail,
    NewImage,
    PageKey,
    filename_for,
    sha256_hex,
    utc_now,
)
from pixyproxy.ports import BlobStore, ImageGenerator, ImageRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetailPage:
    """One page of a newest-first listing and the cursor of the next page, if there is one."""

    items: list[ImageDetail]
    next_cursor: str | None


class ImageService:
    """The application's use-cases, over the repository, generator and blob-store ports."""

    def __init__(
        self,
        *,
        repository: ImageRepository,
        generator: ImageGenerator,
        blob_store: BlobStore,
        clock: Callable[[], datetime] = utc_now,
        new_guid: Callable[[], UUID] = uuid4,
        idempotency_retention: timedelta = timedelta(hours=24),
        idempotency_wait_s: float = 60.0,
        presign_expires_s: int | None = None,
    ) -> None:
        self._repository = repository
        self._generator = generator
        self._blob_store = blob_store
        self._clock = clock
        self._new_guid = new_guid
        self._idempotency_retention = idempotency_retention
        self._idempotency_wait_s = idempotency_wait_s
        self._presign_expires_s = presign_expires_s

    async def generate(
        self, request: GenerateImageRequest | object, *, idempotency_key: str | None = None
    ) -> ImageDetail:
        """Generate an image, store its bytes, then its record; never leave a record without bytes."""
        validated = parse_generate_request(request)
        if idempotency_key is None:
            return await self._generate(validated)
        return await self._generate_once(validated, idempotency_key)

    async def get_detail(self, guid: str | UUID) -> ImageDetail:
        """The detail of one image. Raises ImageNotFoundError."""
        return ImageDetail.from_record(await self._repository.get(parse_guid(guid)))

    async def list_details(self, *, limit: int = DEFAULT_PAGE_LIMIT, cursor: str | None = None) -> DetailPage:
        """A page of details, newest first, and the cursor of the next page."""
        after = decode_cursor(cursor) if cursor else None
        records = await self._repository.list_page(limit=parse_limit(limit) + 1, after=after)
        page, more = records[:limit], len(records) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = encode_cursor(PageKey(created_at=last.created_at, guid=last.guid))
        return DetailPage(items=[ImageDetail.from_record(r) for r in page], next_cursor=next_cursor)

    async def open_content(self, image: ImageDetail | str | UUID) -> ImageContent:
        """An image's bytes. Raises ImageNotFoundError, or BlobNotFoundError if the bytes are gone."""
        detail = await self._detail_of(image)
        data = await self._blob_store.get(detail.filename)
        return ImageContent(data=data, content_type=detail.content_type, sha256=detail.sha256)

    async def locate_content(self, image: ImageDetail | str | UUID) -> str | None:
        """A presigned URL for an image's bytes, when presigning is on and the store offers one."""
        detail = await self._detail_of(image)
        if self._presign_expires_s is None:
            return None
        return await self._blob_store.presigned_url(detail.filename, expires_s=self._presign_expires_s)

    async def _detail_of(self, image: ImageDetail | str | UUID) -> ImageDetail:
        return image if isinstance(image, ImageDetail) else await self.get_detail(image)

    async def _generate(self, request: GenerateImageRequest) -> ImageDetail:
        options = GenerationOptions(size=request.size)
        started = time.perf_counter()
        image = await self._generator.generate(request.prompt, options=options)
        generation = image.generation
        if generation.latency_ms is None:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            generation = generation.model_copy(update={"latency_ms": latency_ms})
        guid = self._new_guid()
        now = self._clock()
        new_image = NewImage(
            guid=guid,
            prompt=request.prompt,
            filename=filename_for(guid, image.content_type),
            content_type=image.content_type,
            size_bytes=len(image.data),
            sha256=sha256_hex(image.data),
            generation=generation,
            created_at=now,
            updated_at=now,
        )
        await self._blob_store.put(new_image.filename, image.data, content_type=image.content_type)
        try:
            record = await self._repository.add(new_image)
        except RecordOutcomeUnknownError:
            # The record may exist: deleting its bytes could leave it pointing at nothing. Bytes
            # without a record are the lesser harm, and `pixyproxy gc` reports and removes them.
            log.warning("kept bytes %s: unknown whether their record was written", new_image.filename)
            raise
        except BaseException:
            # The record failed (or we were cancelled): the bytes must not outlive it.
            await asyncio.shield(self._forget_bytes(new_image.filename))
            raise
        log.info("generated image %s (%d bytes) with %s", guid, record.size_bytes, generation.generator)
        return ImageDetail.from_record(record)

    async def _forget_bytes(self, key: str) -> None:
        try:
            await self._blob_store.delete(key)
        except Exception:
            # gc finds orphan bytes later; the original error is the one the caller must see.
            log.exception("could not delete orphan bytes %s; `pixyproxy gc` will find them", key)

    async def _generate_once(self, request: GenerateImageRequest, key: str) -> ImageDetail:
        parse_idempotency_key(key)
        request_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        deadline = time.monotonic() + self._idempotency_wait_s
        delay = 0.05
        while True:
            now = self._clock()
            await self._repository.purge_idempotency_keys(older_than=now - self._idempotency_retention)
            held = await self._repository.claim_idempotency_key(key, request_hash=request_hash, now=now)
            if held is None:
                break
            if held.request_hash != request_hash:
                raise IdempotencyConflictError(key)
            if held.guid is not None:
                return await self.get_detail(held.guid)
            if time.monotonic() >= deadline:
                raise IdempotencyInProgressError(key)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            detail = await self._generate(request)
        except BaseException:
            await asyncio.shield(self._repository.release_idempotency_key(key))
            raise
        await self._repository.complete_idempotency_key(key, guid=detail.guid)
        return detail
