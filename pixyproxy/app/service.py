"""The image use-cases: generate, get_detail, list_details, open_content. They know only ports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from pixyproxy.app.requests import (
    DEFAULT_PAGE_LIMIT,
    GenerateImageRequest,
    decode_cursor,
    encode_cursor,
    parse_generate_request,
    parse_guid,
    parse_image_filter,
    parse_limit,
)
from pixyproxy.app.thumbnails import (
    DEFAULT_THUMBNAIL_WIDTH,
    THUMBNAIL_WIDTHS,
    check_width,
    render_webp,
    thumbnail_key,
)
from pixyproxy.domain.exceptions import BlobNotFoundError, ImageNotFoundError, RecordOutcomeUnknownError
from pixyproxy.domain.models import (
    ANONYMOUS,
    CONTENT_TYPE_EXTENSIONS,
    GenerationOptions,
    ImageContent,
    ImageDetail,
    ImageFilter,
    ImageRecord,
    NewImage,
    PageKey,
    filename_for,
    sha256_hex,
    utc_now,
)
from pixyproxy.ports import BlobStore, ImageGenerator, ImageRepository

log = logging.getLogger(__name__)

# A download holds one piece of this size at a time (plus the server's write buffer), not the image.
CONTENT_CHUNK_BYTES = 128 * 1024


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
        presign_expires_s: int | None = None,
        offload_files: bool = False,
    ) -> None:
        self._repository = repository
        self._generator = generator
        self._blob_store = blob_store
        self._clock = clock
        self._new_guid = new_guid
        self._presign_expires_s = presign_expires_s
        self._offload_files = offload_files

    async def generate(
        self,
        request: GenerateImageRequest | object,
        *,
        guid: UUID | None = None,
        attempt: int = 1,
        owner: str = ANONYMOUS,
    ) -> ImageDetail:
        """Generate an image, store its bytes, then its record; never leave a record without bytes.

        The work of one generation job: idempotency, queuing and retries are the JobService's, which
        gives each job's image the job's id as its GUID, so an attempt can tell whether an earlier
        one already made it (DuplicateImageError). Raises what the ports raise.
        """
        return await self._generate(
            parse_generate_request(request), guid=guid or self._new_guid(), attempt=attempt, owner=owner
        )

    async def forget_other_attempts(self, detail: ImageDetail, *, attempts: int) -> None:
        """Delete the bytes earlier attempts of one job may have left under the job's GUID.

        Called once the image's record exists: no record can ever point at another attempt's bytes
        then (an attempt whose insert loses deletes its own), so whatever is there is an orphan of an
        attempt that died between storing its bytes and inserting its record.
        """
        for attempt in range(1, attempts + 1):
            for content_type in CONTENT_TYPE_EXTENSIONS:
                key = filename_for(detail.guid, content_type, attempt=attempt)
                if key != detail.filename:
                    await self._forget_bytes(key)

    async def get_detail(self, guid: str | UUID, *, visible_to: str | None = None) -> ImageDetail:
        """The detail of one image. Raises ImageNotFoundError, also when `visible_to` names an owner
        and the image is another's: the same answer, after the same lookup, as an unknown GUID."""
        return ImageDetail.from_record(await self.get_record(guid, visible_to=visible_to))

    async def get_record(self, guid: str | UUID, *, visible_to: str | None = None) -> ImageRecord:
        """The record behind `get_detail`, under the same rule (ImageNotFoundError for another
        owner's image when `visible_to` is given), for a caller that shapes the detail itself. A
        cached repository hands out the same record object while it trusts it."""
        record = await self._repository.get(parse_guid(guid))
        if visible_to is not None and record.owner != visible_to:
            raise ImageNotFoundError(record.guid)
        return record

    async def list_details(
        self,
        *,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
        words: str | None = None,
        generator: str | None = None,
        model: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        owner: str | None = None,
        visible_to: str | None = None,
    ) -> DetailPage:
        """A page of details, newest first, and the cursor of the next page; of the images whose
        prompt has all these `words` (domain.search's rule), made by this generator and model,
        created strictly between the two times, where given. The cursor does not carry the filters:
        the next page is asked for with the same ones. `owner` narrows to one owner's images;
        `visible_to` (tenant isolation) lets only that owner's through, whatever else is asked."""
        after = decode_cursor(cursor) if cursor else None
        if visible_to is not None and owner not in (None, visible_to):
            return DetailPage(items=[], next_cursor=None)
        filters = parse_image_filter(
            words=words,
            generator=generator,
            model=model,
            created_after=created_after,
            created_before=created_before,
        )
        if (owner := visible_to or owner) is not None:
            filters = (filters or ImageFilter()).model_copy(update={"owner": owner})
        records = await self._repository.list_page(limit=parse_limit(limit) + 1, after=after, filters=filters)
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

    async def content_chunks(
        self, image: ImageDetail | str | UUID, *, chunk_bytes: int = CONTENT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """An image's bytes a piece at a time, for a download that holds one piece, not the image.
        Raises ImageNotFoundError; BlobNotFoundError when the first piece is asked for."""
        detail = await self._detail_of(image)
        return self._blob_store.read_chunks(detail.filename, chunk_bytes=chunk_bytes)

    async def locate_content(self, image: ImageDetail | str | UUID) -> str | None:
        """A presigned URL for an image's bytes, when presigning is on and the store offers one."""
        detail = await self._detail_of(image)
        if self._presign_expires_s is None:
            return None
        return await self._blob_store.presigned_url(detail.filename, expires_s=self._presign_expires_s)

    async def locate_file(self, image: ImageDetail | str | UUID) -> str | None:
        """Where an image's bytes lie, relative to the blob store's root folder, when offloading the
        sending to a front server is on and the store keeps files. Raises ImageNotFoundError, or
        BlobNotFoundError if the bytes are gone."""
        detail = await self._detail_of(image)
        if not self._offload_files:
            return None
        return await self._blob_store.file_path(detail.filename)

    async def delete(self, guid: str | UUID, *, visible_to: str | None = None) -> None:
        """Delete an image: its bytes first, then its record. A crash between the two leaves a record
        without bytes, which `pixyproxy gc` reports and removes, never bytes that nothing names.

        Raises ImageNotFoundError for an unknown GUID, one deleted meanwhile by another request, or
        (with `visible_to`) another owner's.
        """
        detail = await self.get_detail(guid, visible_to=visible_to)
        for width in THUMBNAIL_WIDTHS:  # derived bytes first: a crash here leaves the image whole
            await self._blob_store.delete(thumbnail_key(detail.guid, width))
        await self._blob_store.delete(detail.filename)
        if not await self._repository.delete(detail.guid):
            raise ImageNotFoundError(detail.guid)
        log.info("deleted image %s", detail.guid)

    async def thumbnail(
        self, image: ImageDetail | str | UUID, width: int = DEFAULT_THUMBNAIL_WIDTH
    ) -> ImageContent:
        """A WebP thumbnail at most `width` wide, made on first request and stored beside the image.

        Raises InvalidRequestError for a width not in THUMBNAIL_WIDTHS, ImageNotFoundError, or
        BlobNotFoundError if the image's bytes are gone.
        """
        check_width(width)
        detail = await self._detail_of(image)
        key = thumbnail_key(detail.guid, width)
        try:
            data = await self._blob_store.get(key)
        except BlobNotFoundError:
            original = await self._blob_store.get(detail.filename)
            data = await asyncio.to_thread(render_webp, original, width)  # CPU-bound: off the event loop
            await self._blob_store.put(key, data, content_type="image/webp")
            log.info("made thumbnail %s (%d bytes)", key, len(data))
        return ImageContent(data=data, content_type="image/webp", sha256=sha256_hex(data))

    async def _detail_of(self, image: ImageDetail | str | UUID) -> ImageDetail:
        return image if isinstance(image, ImageDetail) else await self.get_detail(image)

    async def _generate(
        self, request: GenerateImageRequest, *, guid: UUID, attempt: int, owner: str
    ) -> ImageDetail:
        options = GenerationOptions(size=request.size)
        started = time.perf_counter()
        image = await self._generator.generate(request.prompt, options=options)
        generation = image.generation
        if generation.latency_ms is None:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            generation = generation.model_copy(update={"latency_ms": latency_ms})
        now = self._clock()
        new_image = NewImage(
            guid=guid,
            prompt=request.prompt,
            filename=filename_for(guid, image.content_type, attempt=attempt),
            content_type=image.content_type,
            size_bytes=len(image.data),
            sha256=sha256_hex(image.data),
            generation=generation,
            created_at=now,
            updated_at=now,
            owner=owner,
        )
        await self._blob_store.put(new_image.filename, image.data, content_type=image.content_type)
        try:
            record = await self._repository.add(new_image)
        except (RecordOutcomeUnknownError, asyncio.CancelledError):
            # The record may exist (the database may commit an insert whose caller was cancelled
            # or lost its connection): deleting its bytes could leave it pointing at nothing.
            # Bytes without a record are the lesser harm; `pixyproxy gc` reports and removes them.
            log.warning("kept bytes %s: unknown whether their record was written", new_image.filename)
            raise
        except BaseException:
            # The record was refused: the bytes must not outlive it.
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
