"""A bounded in-process cache of image records by GUID, in front of any repository.

A record never changes after it is created and the API never deletes one, so a cached record
is always the stored one: no invalidation is needed, across workers too. Only hits are kept;
a GUID that is missing now may be created by another worker a moment later.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from uuid import UUID

from pixyproxy.domain.models import IdempotencyRecord, ImageRecord, NewImage, PageKey
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

    async def list_page(self, *, limit: int, after: PageKey | None = None) -> list[ImageRecord]:
        """Always from the inner repository: pages change as images arrive."""
        return await self._inner.list_page(limit=limit, after=after)

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Pass through."""
        return await self._inner.list_all_filenames()

    async def claim_idempotency_key(
        self, key: str, *, request_hash: str, now: datetime
    ) -> IdempotencyRecord | None:
        """Pass through: idempotency keys change state."""
        return await self._inner.claim_idempotency_key(key, request_hash=request_hash, now=now)

    async def complete_idempotency_key(self, key: str, *, guid: UUID) -> None:
        """Pass through."""
        await self._inner.complete_idempotency_key(key, guid=guid)

    async def release_idempotency_key(self, key: str) -> None:
        """Pass through."""
        await self._inner.release_idempotency_key(key)

    async def purge_idempotency_keys(self, *, older_than: datetime) -> int:
        """Pass through."""
        return await self._inner.purge_idempotency_keys(older_than=older_than)

    async def ping(self) -> None:
        """Pass through: readiness must ask the real repository."""
        await self._inner.ping()

    async def close(self) -> None:
        """Forget the cache and close the inner repository."""
        self._records.clear()
        await self._inner.close()
