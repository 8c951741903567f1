"""A bounded in-process cache of image records by GUID, in front of any repository.

A record never changes after it is created and the API never deletes one, so a cached record
is always the stored one: no invalidation is needed, across workers too. Only hits are kept;
a GUID that is missing now may be created by another worker a moment later.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from pixyproxy.domain.models import ImageRecord, NewImage, PageKey
from pixyproxy.ports import ImageRepository


class CachedImageRepository:
    """An ImageRepository that answers `get` from a least-recently-used cache when it can."""

    def __init__(self, inner: ImageRepository, *, max_entries: int) -> None:
        self._inner = inner
        self._max_entries = max_entries
        self._records: OrderedDict[UUID, ImageRecord] = OrderedDict()

    def _remember(self, record: ImageRecord) -> ImageRecord:
        if self._max_entries > 0:
            self._records[record.guid] = record
            self._records.move_to_end(record.guid)
            while len(self._records) > self._max_entries:
                self._records.popitem(last=False)
        return record

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert through the inner repository and remember the record."""
        return self._remember(await self._inner.add(image))

    async def get(self, guid: UUID) -> ImageRecord:
        """The cached record, else the inner repository's (then cached)."""
        cached = self._records.get(guid)
        if cached is not None:
            self._records.move_to_end(guid)
            return cached
        return self._remember(await self._inner.get(guid))

    async def delete(self, guid: UUID) -> bool:
        """Delete through the inner repository and forget the cached record."""
        self._records.pop(guid, None)
        return await self._inner.delete(guid)

    async def list_page(self, *, limit: int, after: PageKey | None = None) -> list[ImageRecord]:
        """Always from the inner repository: pages change as images arrive."""
        return await self._inner.list_page(limit=limit, after=after)

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Pass through."""
        return await self._inner.list_all_filenames()

    async def ping(self) -> None:
        """Pass through: readiness must ask the real repository."""
        await self._inner.ping()

    async def close(self) -> None:
        """Forget the cache and close the inner repository."""
        self._records.clear()
        await self._inner.close()
