"""The ImageRepository contract, run against every repository adapter."""

from __future__ import annotations

import asyncio
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from pixyproxy.domain import search
from pixyproxy.domain.exceptions import DuplicateImageError, ImageNotFoundError
from pixyproxy.domain.models import GenerationInfo, ImageFilter, NewImage, PageKey
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


# --- delete -----------------------------------------------------------------------------------------


def made_by(image: NewImage, generator: str, model: str | None) -> NewImage:
    """The image as if another generator and model had made it."""
    return image.model_copy(update={"generation": GenerationInfo(generator=generator, model=model)})


def words(query: str) -> ImageFilter:
    """A filter on the words of a search, split as the service splits them."""
    return ImageFilter(words=search.query_terms(query))


async def guids(repository: ImageRepository, filters: ImageFilter, *, limit: int = 100) -> list[UUID]:
    """The GUIDs of the first page that passes the filters."""
    return [r.guid for r in await repository.list_page(limit=limit, filters=filters)]


async def test_delete_removes_the_record_from_every_read(repository: ImageRepository) -> None:
    kept, gone = new_image(prompt="a fox that stays", offset_us=1), new_image(prompt="a fox that goes")
    await repository.add(kept)
    await repository.add(gone)
    assert await repository.delete(gone.guid) is True
    with pytest.raises(ImageNotFoundError):
        await repository.get(gone.guid)
    assert [r.guid for r in await repository.list_page(limit=10)] == [kept.guid]
    assert await repository.list_all_filenames() == [(kept.guid, kept.filename)]
    assert await guids(repository, words("fox")) == [kept.guid]
    assert await guids(repository, words("goes")) == []
    assert (await repository.get(kept.guid)).guid == kept.guid


async def test_delete_of_an_unknown_or_deleted_guid_says_there_was_none(repository: ImageRepository) -> None:
    image = new_image()
    await repository.add(image)
    assert await repository.delete(uuid4()) is False
    assert await repository.delete(image.guid) is True
    assert await repository.delete(image.guid) is False
    # The GUID is free again: the same record can be added anew.
    await repository.add(image)
    assert (await repository.get(image.guid)).guid == image.guid


async def test_concurrent_deletes_of_one_record_succeed_once(repository: ImageRepository) -> None:
    image = new_image()
    await repository.add(image)
    results = await asyncio.gather(*(repository.delete(image.guid) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]


# --- filters --------------------------------------------------------------------------------------


async def test_generator_and_model_filters_match_exactly(repository: ImageRepository) -> None:
    openai = made_by(new_image(offset_us=1), "openai", "gpt-image-1")
    openai_mini = made_by(new_image(offset_us=2), "openai", "gpt-image-1-mini")
    procedural = made_by(new_image(offset_us=3), "procedural", None)
    for image in (openai, openai_mini, procedural):
        await repository.add(image)
    assert await guids(repository, ImageFilter(generator="openai")) == [openai_mini.guid, openai.guid]
    assert await guids(repository, ImageFilter(model="gpt-image-1")) == [openai.guid]
    assert await guids(repository, ImageFilter(generator="procedural")) == [procedural.guid]
    assert await guids(repository, ImageFilter(generator="openai", model="gpt-image-1-mini")) == [
        openai_mini.guid
    ]
    assert await guids(repository, ImageFilter(generator="procedural", model="gpt-image-1")) == []
    assert await guids(repository, ImageFilter(generator="OpenAI")) == []
    assert await guids(repository, ImageFilter(model="gpt-image")) == []


async def test_time_filters_are_exclusive_bounds(repository: ImageRepository) -> None:
    images = [new_image(offset_us=i * 1000) for i in range(5)]
    for image in images:
        await repository.add(image)
    times = [i.created_at for i in images]
    assert await guids(repository, ImageFilter(created_after=times[2])) == [images[4].guid, images[3].guid]
    assert await guids(repository, ImageFilter(created_before=times[2])) == [images[1].guid, images[0].guid]
    between = ImageFilter(created_after=times[0], created_before=times[4])
    assert await guids(repository, between) == [images[3].guid, images[2].guid, images[1].guid]
    # Another zone names the same instant.
    shifted = times[3].astimezone(timezone(timedelta(hours=-7)))
    assert await guids(repository, ImageFilter(created_after=shifted)) == [images[4].guid]
    assert await guids(repository, ImageFilter(created_after=times[4])) == []


async def test_hostile_filter_values_are_only_values(repository: ImageRepository) -> None:
    image = new_image()
    await repository.add(image)
    for hostile in HOSTILE_PROMPTS[:3]:
        assert await guids(repository, ImageFilter(generator=hostile)) == []
        assert await guids(repository, ImageFilter(model=hostile)) == []
        assert await guids(repository, words(hostile)) == []
    assert await guids(repository, ImageFilter(generator="memory")) == [image.guid]


async def test_the_cursor_pages_cleanly_through_filtered_results(repository: ImageRepository) -> None:
    # Matching and non-matching images interleaved, some sharing a timestamp (ordered by GUID).
    images = [
        made_by(
            new_image(prompt=f"{'fox' if i % 3 else 'cat'} number {i}", offset_us=i // 2),
            "openai" if i % 2 else "procedural",
            None,
        )
        for i in range(18)
    ]
    for image in images:
        await repository.add(image)
    newest_first = sorted(images, key=lambda i: (i.created_at, i.guid), reverse=True)
    cases = [
        (words("fox"), [i for i in newest_first if i.prompt.startswith("fox")]),
        (ImageFilter(generator="openai"), [i for i in newest_first if i.generation.generator == "openai"]),
        (
            ImageFilter(words=search.query_terms("fox"), generator="openai", created_after=BASE_TIME),
            [
                i
                for i in newest_first
                if i.prompt.startswith("fox")
                and i.generation.generator == "openai"
                and i.created_at > BASE_TIME
            ],
        ),
    ]
    for filters, expected in cases:
        assert expected, "each case must expect something"
        seen: list[UUID] = []
        after = None
        while True:
            page = await repository.list_page(limit=2, after=after, filters=filters)
            if not page:
                break
            assert len(page) <= 2
            seen.extend(r.guid for r in page)
            after = PageKey(created_at=page[-1].created_at, guid=page[-1].guid)
        assert seen == [i.guid for i in expected], filters


# --- search ---------------------------------------------------------------------------------------

SEARCHES = {
    # name: (prompts, query, indexes of the prompts it finds)
    "japanese-kanji": (["赤い狐が雪の中を走る", "東京タワーの夜景"], "狐", [0]),
    "japanese-word": (["赤い狐が雪の中を走る", "東京タワーの夜景"], "東京", [1]),
    "japanese-katakana": (["赤い狐が雪の中を走る", "東京タワーの夜景"], "タワー", [1]),
    "japanese-half-width": (["東京タワーの夜景"], "ﾀﾜｰ", [0]),
    "chinese": (["一只红色的狐狸在雪地里", "一只黑猫在屋顶上"], "狐狸", [0]),
    "chinese-one-character": (["一只红色的狐狸在雪地里", "一只黑猫在屋顶上"], "猫", [1]),
    "chinese-in-both": (["一只红色的狐狸在雪地里", "一只黑猫在屋顶上"], "一只", [1, 0]),
    "thai": (["แมวสีดำนอนบนโซฟา", "หมาวิ่งในสวน"], "แมว", [0]),
    "thai-later-word": (["แมวสีดำนอนบนโซฟา", "หมาวิ่งในสวน"], "โซฟา", [0]),
    "thai-other": (["แมวสีดำนอนบนโซฟา", "หมาวิ่งในสวน"], "สวน", [1]),
    "korean": (["고양이가 지붕 위에서 잔다", "강아지가 공원에서 뛴다"], "고양이", [0]),
    "german-upper": (["Die Straße im Schnee", "Ein Haus am See"], "STRASSE", [0]),
    "german-eszett": (["Die STRASSE im Schnee", "Ein Haus am See"], "straße", [0]),
    "german-lower": (["Die Straße im Schnee", "Ein Haus am See"], "schnee", [0]),
    "french-no-accents": (["Un café à Paris en été", "Une gare la nuit"], "cafe ete", [0]),
    "french-accents": (["Un cafe a Paris en ete", "Une gare la nuit"], "Café Été", [0]),
    "french-decomposed": (["Un café à Paris en été", "Une gare la nuit"], "cafe\u0301", [0]),
    "word-in-two": (["a red fox", "a cat on a mat", "a fox in snow"], "fox", [2, 0]),
    "every-word-needed": (["a red fox", "a cat on a mat", "a fox in snow"], "fox snow", [2]),
    "no-such-word": (["a red fox", "a fox in snow"], "wolf", []),
    "whole-words-only": (["a red fox", "a fox in snow"], "fo", []),
    "quotes-are-text": (['say "hello" to C++', "plain hello"], '"hello"', [1, 0]),
    "plus-is-text": (['say "hello" to C++', "plain hello"], "C++", [0]),
    "minus-is-not-exclusion": (['say "hello" to C++', "plain hello"], "hello -plain", [1]),
    "star-is-not-a-prefix": (["hello world", "help"], "hel*", []),
    "star-alone-finds-nothing": (["hello world", "help"], "*", []),
    "boolean-syntax-is-text": (["hello world", "help"], ") OR 1=1 -- (", []),
    "fts5-syntax-is-text": (["hello world", "help"], 'NEAR(hello world) OR "help"', []),
    "sql-is-text": (["Robert'); DROP TABLE images;--", "help"], "Robert'); DROP TABLE images;--", [0]),
}


@pytest.mark.parametrize(("prompts", "query", "found"), SEARCHES.values(), ids=SEARCHES.keys())
async def test_search_finds_prompts_by_their_words(
    repository: ImageRepository, prompts: list[str], query: str, found: list[int]
) -> None:
    images = [new_image(prompt=unicodedata.normalize("NFC", p), offset_us=i) for i, p in enumerate(prompts)]
    for image in images:
        await repository.add(image)
    filters = ImageFilter(words=search.query_terms(unicodedata.normalize("NFC", query)))
    assert await guids(repository, filters) == [images[i].guid for i in found]
    # The table still answers, unfiltered, after whatever the search held.
    assert len(await repository.list_page(limit=10)) == len(prompts)


async def test_a_search_of_no_words_finds_nothing(repository: ImageRepository) -> None:
    await repository.add(new_image(prompt="anything at all"))
    assert await guids(repository, ImageFilter(words=())) == []


async def test_search_reaches_every_part_of_a_long_prompt(repository: ImageRepository) -> None:
    long_word = "Donaudampfschifffahrtsgesellschaftskapitän"  # past 30 bytes: indexed by its digest
    prompt = "猫" * 3000 + " " + long_word + " " + "".join(chr(0x4E00 + i) for i in range(900)) + " end"
    image = new_image(prompt=prompt[:4000])
    await repository.add(image)
    await repository.add(new_image(prompt="a short one", offset_us=1))
    for query in (long_word.upper(), "猫猫", chr(0x4E00 + 899), "end"):
        assert await guids(repository, words(query)) == [image.guid], query
    assert await guids(repository, words(long_word[:-1])) == []
