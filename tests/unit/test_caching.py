"""The record cache answers repeated reads itself and stays bounded."""

from __future__ import annotations

from uuid import UUID

import pytest

from pixyproxy.adapters.memory import InMemoryImageRepository
from pixyproxy.app.caching import CachedImageRepository
from pixyproxy.domain.exceptions import ImageNotFoundError, RepositoryUnavailableError
from pixyproxy.domain.models import ImageRecord
from tests.support.builders import new_image


class CountingRepository(InMemoryImageRepository):
    """Counts reads, and can be switched off like a database that went away."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    async def get(self, guid: UUID) -> ImageRecord:
        self.reads += 1
        if self.down:
            raise RepositoryUnavailableError("gone")
        return await super().get(guid)


async def test_repeated_reads_are_served_from_the_cache() -> None:
    inner = CountingRepository()
    cached = CachedImageRepository(inner, max_entries=10)
    added = await cached.add(new_image())
    inner.down = True
    assert await cached.get(added.guid) == added
    assert inner.reads == 0


async def test_a_record_read_once_is_not_read_again() -> None:
    inner = CountingRepository()
    image = await inner.add(new_image())
    cached = CachedImageRepository(inner, max_entries=10)
    for _ in range(5):
        assert await cached.get(image.guid) == image
    assert inner.reads == 1


async def test_misses_are_not_cached() -> None:
    inner = CountingRepository()
    cached = CachedImageRepository(inner, max_entries=10)
    image = new_image()
    with pytest.raises(ImageNotFoundError):
        await cached.get(image.guid)
    await inner.add(image)  # created meanwhile, e.g. by another worker
    assert (await cached.get(image.guid)).guid == image.guid


async def test_the_least_recently_used_record_is_evicted() -> None:
    inner = CountingRepository()
    cached = CachedImageRepository(inner, max_entries=2)
    first, second, third = [await cached.add(new_image(offset_us=i)) for i in range(3)]
    await cached.get(second.guid)
    await cached.get(third.guid)
    assert inner.reads == 0
    await cached.get(first.guid)
    assert inner.reads == 1


async def test_zero_entries_disables_the_cache() -> None:
    inner = CountingRepository()
    cached = CachedImageRepository(inner, max_entries=0)
    added = await cached.add(new_image())
    await cached.get(added.guid)
    await cached.get(added.guid)
    assert inner.reads == 2
