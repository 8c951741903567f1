"""The use-cases against the in-memory fakes, asserting on what got stored."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.app.maintenance import GarbageCollector
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import (
    BlobStoreUnavailableError,
    GeneratorUnavailableError,
    ImageNotFoundError,
    InvalidRequestError,
    PromptRejectedError,
    RecordOutcomeUnknownError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import ImageRecord, NewImage, sha256_hex, utc_now


class FailingRepository(InMemoryImageRepository):
    """A repository whose inserts fail, as a database that went away would."""

    async def add(self, image: NewImage):
        raise RepositoryUnavailableError("connection lost")


class FailingPutBlobStore(InMemoryBlobStore):
    """A blob store that refuses writes."""

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        raise BlobStoreUnavailableError("endpoint unreachable")


@pytest.fixture
def repository() -> InMemoryImageRepository:
    return InMemoryImageRepository()


@pytest.fixture
def blob_store() -> InMemoryBlobStore:
    return InMemoryBlobStore()


@pytest.fixture
def generator() -> InMemoryImageGenerator:
    return InMemoryImageGenerator()


@pytest.fixture
def service(
    repository: InMemoryImageRepository, blob_store: InMemoryBlobStore, generator: InMemoryImageGenerator
) -> ImageService:
    return ImageService(repository=repository, generator=generator, blob_store=blob_store)


async def test_generate_stores_bytes_and_record(
    service: ImageService, repository: InMemoryImageRepository, blob_store: InMemoryBlobStore
) -> None:
    detail = await service.generate({"prompt": "  a red fox in snow \n"})
    assert detail.prompt == "a red fox in snow"
    record = repository.records[detail.guid]
    data = blob_store.blobs[record.filename][0]
    assert record.sha256 == sha256_hex(data) == detail.sha256
    assert record.size_bytes == len(data)
    assert record.filename == f"{detail.guid}.png"
    assert detail.generator == "memory"
    assert detail.generation.latency_ms is not None


async def test_record_failure_deletes_the_stored_bytes(
    blob_store: InMemoryBlobStore, generator: InMemoryImageGenerator
) -> None:
    repository = FailingRepository()
    service = ImageService(repository=repository, generator=generator, blob_store=blob_store)
    with pytest.raises(RepositoryUnavailableError):
        await service.generate({"prompt": "a fox"})
    assert blob_store.blobs == {}
    assert repository.records == {}


class LostCommitRepository(InMemoryImageRepository):
    """A repository that cannot tell whether its insert was written (the answer to a commit was lost)."""

    async def add(self, image: NewImage):
        await super().add(image)
        raise RecordOutcomeUnknownError(image.guid, "connection lost")


async def test_unknown_insert_outcome_keeps_the_bytes(
    blob_store: InMemoryBlobStore, generator: InMemoryImageGenerator
) -> None:
    repository = LostCommitRepository()
    service = ImageService(repository=repository, generator=generator, blob_store=blob_store)
    with pytest.raises(RepositoryUnavailableError):  # still a 503 to the client
        await service.generate({"prompt": "a fox"})
    # The record may exist, so its bytes must too: gc reports them if the record never came.
    [record] = repository.records.values()
    assert list(blob_store.blobs) == [record.filename]


@pytest.mark.parametrize(
    "failure",
    [PromptRejectedError("unsafe"), GeneratorUnavailableError("rate limited", retry_after_s=3)],
)
async def test_generator_failure_stores_nothing(
    service: ImageService,
    generator: InMemoryImageGenerator,
    repository: InMemoryImageRepository,
    blob_store: InMemoryBlobStore,
    failure: Exception,
) -> None:
    generator.fail_with = failure
    with pytest.raises(type(failure)):
        await service.generate({"prompt": "a fox"})
    assert repository.records == {}
    assert blob_store.blobs == {}


async def test_blob_store_failure_stores_no_record(
    repository: InMemoryImageRepository, generator: InMemoryImageGenerator
) -> None:
    service = ImageService(repository=repository, generator=generator, blob_store=FailingPutBlobStore())
    with pytest.raises(BlobStoreUnavailableError):
        await service.generate({"prompt": "a fox"})
    assert repository.records == {}


async def test_cancelled_record_write_keeps_the_bytes_for_gc(
    blob_store: InMemoryBlobStore, generator: InMemoryImageGenerator
) -> None:
    # A database may still commit an insert whose caller was cancelled: deleting the bytes then
    # could leave a record pointing at nothing, so they are kept and gc accounts for them.
    class SlowRepository(InMemoryImageRepository):
        async def add(self, image: NewImage) -> ImageRecord:
            await asyncio.sleep(10)
            return await super().add(image)

    repository = SlowRepository()
    service = ImageService(repository=repository, generator=generator, blob_store=blob_store)
    task = asyncio.create_task(service.generate({"prompt": "a fox"}))
    while not blob_store.blobs:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert repository.records == {}
    kept = list(blob_store.blobs)
    assert len(kept) == 1
    report = await GarbageCollector(repository=repository, blob_store=blob_store).collect(
        now=utc_now(), grace=timedelta(0), delete=True
    )
    assert [b.key for b in report.orphan_blobs] == report.deleted == kept
    assert blob_store.blobs == {}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "bell\x07"}, "prompt"),
        ({"prompt": "nul\x00byte"}, "prompt"),
        ({"prompt": "escape\x1b[31m"}, "prompt"),
        ({"prompt": "del\x7f"}, "prompt"),
        ({"prompt": "ok", "colour": "red"}, "colour"),
        ({}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "ok", "size": "huge"}, "size"),
        ("not an object", None),
    ],
)
async def test_invalid_requests_are_refused_and_change_nothing(
    service: ImageService,
    repository: InMemoryImageRepository,
    generator: InMemoryImageGenerator,
    payload: object,
    field: str | None,
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await service.generate(payload)
    assert caught.value.field == field
    assert repository.records == {}
    assert generator.calls == []


async def test_limits_of_valid_prompts(service: ImageService) -> None:
    longest = await service.generate({"prompt": "y" * 4000})
    assert len(longest.prompt) == 4000
    multiline = await service.generate({"prompt": "line one\n\tline two"})
    assert multiline.prompt == "line one\n\tline two"
    emoji = await service.generate({"prompt": "🦊 in ❄️"})
    assert emoji.prompt == "🦊 in ❄️"


async def test_get_detail_and_missing_guid(service: ImageService) -> None:
    detail = await service.generate({"prompt": "a fox"})
    assert await service.get_detail(str(detail.guid)) == detail
    with pytest.raises(ImageNotFoundError):
        await service.get_detail("00000000-0000-4000-8000-000000000000")


@pytest.mark.parametrize(
    "guid", ["nope", "", "../../etc/passwd", "0" * 500, "00000000-0000-4000-8000-00000000000G"]
)
async def test_malformed_guid_is_invalid_before_any_io(service: ImageService, guid: str) -> None:
    with pytest.raises(InvalidRequestError):
        await service.get_detail(guid)


async def test_list_pages_newest_first_with_cursor(service: ImageService) -> None:
    made = [await service.generate({"prompt": f"p{i}"}) for i in range(5)]
    first = await service.list_details(limit=2)
    assert [d.guid for d in first.items] == [made[4].guid, made[3].guid]
    assert first.next_cursor is not None
    second = await service.list_details(limit=2, cursor=first.next_cursor)
    third = await service.list_details(limit=2, cursor=second.next_cursor)
    assert [d.guid for d in second.items + third.items] == [m.guid for m in reversed(made[:3])]
    assert third.next_cursor is None


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "a" * 300, "MjAyNi0xMS0yNnxub3QtYS1ndWlk"])
async def test_tampered_cursor_is_invalid(service: ImageService, cursor: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await service.list_details(cursor=cursor)
    assert caught.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_limit_out_of_range_is_invalid(service: ImageService, limit: int) -> None:
    with pytest.raises(InvalidRequestError):
        await service.list_details(limit=limit)


async def test_open_content_returns_the_stored_bytes(
    service: ImageService, blob_store: InMemoryBlobStore
) -> None:
    detail = await service.generate({"prompt": "a fox"})
    content = await service.open_content(detail.guid)
    assert content.data == blob_store.blobs[detail.filename][0]
    assert content.content_type == "image/png"
    assert sha256_hex(content.data) == content.sha256


async def test_generation_is_logged(service: ImageService, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pixyproxy.app.service"):
        detail = await service.generate({"prompt": "a fox"})
    assert str(detail.guid) in caplog.text
