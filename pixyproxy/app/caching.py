"""A bounded in-process cache of image records by GUID, in front of any repository.

A record never changes after it is created, but it can be deleted, and the delete may be answered
by another worker or another server: workers and servers share no memory. So each cached record is
trusted for `ttl_s` seconds only (2 by default, at most a few), after which the repository is asked
again. A delete answered here forgets the record at once, and a read that was already under way
when it happened cannot put it back. Only hits are kept; a GUID that is missing now may be created
by another worker a moment later.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

from pixyproxy.domain.models import ImageFilter, ImageRecord, NewImage, PageKey
from pixyproxy.ports import ImageRepository

DEFAULT_TTL_S = 2.0


class CachedImageRepository:
    """An ImageRepository that answers `get` from a least-recently-used, short-lived cache when it can."""

    def __init__(
        self,
        inner: ImageRepository,
        *,
        max_entries: int,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._records: OrderedDict[UUID, tuple[ImageRecord, float]] = OrderedDict()
        # GUIDs deleted here, with when: a read that began before then must not cache its answer.
        self._deleted: dict[UUID, float] = {}

    def _remember(self, record: ImageRecord, *, read_at: float) -> ImageRecord:
        if self._max_entries <= 0:
            return record
        deleted_at = self._deleted.get(record.guid)
        if deleted_at is not None and deleted_at >= read_at:
            return record
        self._records[record.guid] = (record, read_at + self._ttl_s)
        self._records.move_to_end(record.guid)
        while len(self._records) > self._max_entries:
            self._records.popitem(last=False)
        return record

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert through the inner repository and remember the record."""
        read_at = self._clock()
        return self._remember(await self._inner.add(image), read_at=read_at)

    async def get(self, guid: UUID) -> ImageRecord:
        """The cached record while it is fresh, else the inner repository's (then cached)."""
        now = self._clock()
        cached = self._records.get(guid)
        if cached is not None:
            record, expires_at = cached
            if now < expires_at:
                self._records.move_to_end(guid)
                return record
            del self._records[guid]
        return self._remember(await self._inner.get(guid), read_at=now)

    async def delete(self, guid: UUID) -> bool:
        """Forget the cached record, and delete through the inner repository."""
        self._forget(guid)
        try:
            return await self._inner.delete(guid)
        finally:
            # Reads that began while the delete ran may have read the record: they must not keep it.
            self._forget(guid)

    def _forget(self, guid: UUID) -> None:
        now = self._clock()
        self._records.pop(guid, None)
        self._deleted.pop(guid, None)  # re-inserted last, so the dict stays in time order
        self._deleted[guid] = now
        # A tombstone only matters to reads under way, which end long before a ttl has passed.
        for old, at in list(self._deleted.items()):
            if now - at <= self._ttl_s:
                break
            del self._deleted[old]

    async def list_page(
        self, *, limit: int, after: PageKey | None = None, filters: ImageFilter | None = None
    ) -> list[ImageRecord]:
        """Always from the inner repository: pages change as images arrive and leave."""
        return await self._inner.list_page(limit=limit, after=after, filters=filters)

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Pass through."""
        return await self._inner.list_all_filenames()

    async def ping(self) -> None:
        """Pass through: readiness must ask the real repository."""
        await self._inner.ping()

    async def close(self) -> None:
        """Forget the cache and close the inner repository."""
        self._records.clear()
        self._deleted.clear()
        await self._inner.close()
