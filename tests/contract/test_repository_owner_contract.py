"""The ImageRepository contract for owners: kept on every record, filtered on in the listing."""

from __future__ import annotations

from pixyproxy.domain.models import ImageFilter, PageKey
from pixyproxy.ports import ImageRepository
from tests.support.builders import new_image


async def test_a_record_keeps_its_owner(repository: ImageRepository) -> None:
    added = await repository.add(new_image().model_copy(update={"owner": "alice"}))
    assert added.owner == "alice"
    assert (await repository.get(added.guid)).owner == "alice"
    plain = await repository.add(new_image(offset_us=1))
    assert (await repository.get(plain.guid)).owner == "anonymous"


async def test_the_owner_filter_pages_one_owner_newest_first(repository: ImageRepository) -> None:
    mine = [
        await repository.add(new_image(offset_us=2 * i).model_copy(update={"owner": "alice"}))
        for i in range(3)
    ]
    theirs = [
        await repository.add(new_image(offset_us=2 * i + 1).model_copy(update={"owner": "bob"}))
        for i in range(3)
    ]
    alice = ImageFilter(owner="alice")
    first = await repository.list_page(limit=2, filters=alice)
    assert [r.guid for r in first] == [mine[2].guid, mine[1].guid]
    after = PageKey(created_at=first[-1].created_at, guid=first[-1].guid)
    assert [r.guid for r in await repository.list_page(limit=2, after=after, filters=alice)] == [mine[0].guid]
    bob = await repository.list_page(limit=10, filters=ImageFilter(owner="bob"))
    assert [r.guid for r in bob] == [r.guid for r in reversed(theirs)]
    assert await repository.list_page(limit=10, filters=ImageFilter(owner="carol")) == []
    assert await repository.list_page(limit=10, filters=ImageFilter(owner="x' OR '1'='1")) == []


async def test_the_owner_filter_combines_with_the_others(repository: ImageRepository) -> None:
    fox = await repository.add(new_image(prompt="a red fox").model_copy(update={"owner": "alice"}))
    await repository.add(new_image(prompt="a red fox", offset_us=1).model_copy(update={"owner": "bob"}))
    await repository.add(new_image(prompt="a blue whale", offset_us=2).model_copy(update={"owner": "alice"}))
    found = await repository.list_page(limit=10, filters=ImageFilter(owner="alice", words=("fox",)))
    assert [r.guid for r in found] == [fox.guid]
