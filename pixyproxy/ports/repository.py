"""The image repository port: where image records and idempotency keys live."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

from pixyproxy.domain.models import IdempotencyRecord, ImageRecord, NewImage, PageKey


class ImageRepository(Protocol):
    """Stores image records. Every method may raise RepositoryUnavailableError."""

    async def add(self, image: NewImage) -> ImageRecord:
        """Insert a record and return it with its new internal id.

        Raises DuplicateImageError if the GUID exists, and RecordOutcomeUnknownError (a
        RepositoryUnavailableError) when it cannot tell whether the record was written.
        """
        ...

    async def get(self, guid: UUID) -> ImageRecord:
        """The record with this GUID. Raises ImageNotFoundError."""
        ...

    async def list_page(self, *, limit: int, after: PageKey | None = None) -> list[ImageRecord]:
        """Up to `limit` records, newest first by (created_at, guid), strictly after `after`."""
        ...

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Every record's (guid, filename), for garbage collection."""
        ...

    async def claim_idempotency_key(
        self, key: str, *, request_hash: str, now: datetime
    ) -> IdempotencyRecord | None:
        """Claim `key` for a new request; None when claimed, else the record already holding it."""
        ...

    async def complete_idempotency_key(self, key: str, *, guid: UUID) -> None:
        """Mark the claimed key as done, pointing at the image it made."""
        ...

    async def release_idempotency_key(self, key: str) -> None:
        """Forget a claim whose request failed, so a retry may try again."""
        ...

    async def purge_idempotency_keys(self, *, older_than: datetime) -> int:
        """Delete keys created before `older_than`; return how many."""
        ...

    async def ping(self) -> None:
        """Check the repository answers. Raises RepositoryUnavailableError."""
        ...

    async def close(self) -> None:
        """Release connections. The repository may not be used afterwards."""
        ...
