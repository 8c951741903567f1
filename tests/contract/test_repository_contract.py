"""The ImageRepository contract, run against every repository adapter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from pixyproxy.domain.exceptions import DuplicateImageError, ImageNotFoundError
from pixyproxy.domain.models import GenerationInfo, PageKey
from pixyproxy.ports import ImageRepository
from tests.support.builders import BASE_TIME, new_image

HOSTILE_PROMPTS = [
    "Robert'); DROP TABLE images;--",
    "' OR '1'='1",
    "%(guid)s :guid ? $1 \\' \\\" `backtick`",
    "<script>alert('x')</script>",
    "emoji 🦊❄️ and 漢字 and עברית and \U0001f9ea",
    "tab\tand\nnewline",
    "x" * 4000,
]


async def test_add_then_get_round_trips_every_field(repository: ImageRepository) -> None:
    image = new_image()
    added = await repository.add(image)
    fetched = await repository.get(image.guid)
    assert fetched == added
    assert fetched.model_dump(exclude={"id"}) == image.model_dump()
    assert isinstance(fetched.id, int)


async def test_ids_are_distinct(repository: ImageRepository) -> None:
    first = await repository.add(new_image())
    second = await repository.add(new_image())
    assert first.id != second.id


async def test_unknown_guid_is_not_found(repository: ImageRepository) -> None:
    guid = uuid4()
    with pytest.raises(ImageNotFoundError) as caught:
        await repository.get(guid)
    assert caught.value.guid == str(guid)


async def test_duplicate_guid_is_refused(repository: ImageRepository) -> None:
    image = new_image()
    await repository.add(image)
    with pytest.raises(DuplicateImageError):
        await repository.add(new_image(guid=image.guid))


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS, ids=range(len(HOSTILE_PROMPTS)))
async def test_prompts_are_stored_verbatim(repository: ImageRepository, prompt: str) -> None:
    image = new_image(prompt=prompt)
    await repository.add(image)
    assert (await repository.get(image.guid)).prompt == prompt
    # The table is still there and still answers after SQL-looking input.
    assert len(await repository.list_page(limit=10)) == 1


async def test_timestamps_are_utc_with_microseconds(repository: ImageRepository) -> None:
    utc = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    image = new_image(created_at=utc.astimezone(timezone(timedelta(hours=5))))
    await repository.add(image)
    fetched = await repository.get(image.guid)
    assert fetched.created_at == utc
    assert fetched.created_at.utcoffset() == timedelta(0)
    assert fetched.created_at.microsecond == 678901


async def test_listing_is_newest_first(repository: ImageRepository) -> None:
    images = [new_image(offset_us=i * 1000) for i in range(5)]
    for image in images:
        await repository.add(image)
    listed = await repository.list_page(limit=10)
    assert [r.guid for r in listed] == [i.guid for i in reversed(images)]


async def test_same_timestamp_orders_by_guid_and_pages_cleanly(repository: ImageRepository) -> None:
    images = [new_image(created_at=BASE_TIME) for _ in range(7)]
    for image in images:
        await repository.add(image)
    seen: list[UUID] = []
    after = None
    while True:
        page = await repository.list_page(limit=3, after=after)
        if not page:
            break
        seen.extend(r.guid for r in page)
        after = PageKey(created_at=page[-1].created_at, guid=page[-1].guid)
    assert seen == sorted((i.guid for i in images), reverse=True)


async def test_keyset_pages_have_no_gaps_or_duplicates_while_rows_arrive(
    repository: ImageRepository,
) -> None:
    originals = [new_image(offset_us=i) for i in range(25)]
    for image in originals:
        await repository.add(image)
    seen: list[UUID] = []
    after = None
    newer = 1000
    while True:
        page = await repository.list_page(limit=4, after=after)
        if not page:
            break
        seen.extend(r.guid for r in page)
        after = PageKey(created_at=page[-1].created_at, guid=page[-1].guid)
        # Rows added between page reads are newer: they must not shift later pages.
        await repository.add(new_image(offset_us=newer))
        newer += 1
    assert seen == [i.guid for i in reversed(originals)]
    assert len(set(seen)) == len(seen)


async def test_limit_bounds_the_page(repository: ImageRepository) -> None:
    for i in range(5):
        await repository.add(new_image(offset_us=i))
    assert len(await repository.list_page(limit=2)) == 2
    assert len(await repository.list_page(limit=1000)) == 5


async def test_empty_repository_lists_nothing(repository: ImageRepository) -> None:
    assert await repository.list_page(limit=10) == []
    assert await repository.list_all_filenames() == []


async def test_concurrent_adds_are_all_kept_with_distinct_ids(repository: ImageRepository) -> None:
    images = [new_image(offset_us=i) for i in range(200)]
    added = await asyncio.gather(*(repository.add(image) for image in images))
    assert len({r.id for r in added}) == 200
    listed = await repository.list_page(limit=1000)
    assert {r.guid for r in listed} == {i.guid for i in images}


async def test_list_all_filenames_names_every_record(repository: ImageRepository) -> None:
    images = [new_image(offset_us=i) for i in range(3)]
    for image in images:
        await repository.add(image)
    assert sorted(await repository.list_all_filenames()) == sorted((i.guid, i.filename) for i in images)


async def test_ping_answers(repository: ImageRepository) -> None:
    await repository.ping()


async def test_generation_info_round_trips(repository: ImageRepository) -> None:
    generation = GenerationInfo(
        generator="openai",
        model="gpt-image-1",
        revised_prompt="a fox 🦊 in \"quotes\" and 'apostrophes'",
        upstream_request_id="req_123",
        latency_ms=1234.5,
        usage={"input_tokens": 7, "output_tokens": 4160},
    )
    image = new_image().model_copy(update={"generation": generation})
    await repository.add(image)
    assert (await repository.get(image.guid)).generation == generation


async def test_page_key_beyond_either_end(repository: ImageRepository) -> None:
    images = [new_image(offset_us=i) for i in range(3)]
    for image in images:
        await repository.add(image)
    newest_guid = max(i.guid for i in images)
    after_all = PageKey(created_at=BASE_TIME - timedelta(days=1), guid=newest_guid)
    before_all = PageKey(created_at=BASE_TIME + timedelta(days=1), guid=newest_guid)
    assert await repository.list_page(limit=10, after=after_all) == []
    assert [r.guid for r in await repository.list_page(limit=10, after=before_all)] == [
        i.guid for i in reversed(images)
    ]
