"""The image repository port: where image records live."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from pixyproxy.domain.models import ImageFilter, ImageRecord, NewImage, PageKey


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

    async def delete(self, guid: UUID) -> bool:
        """Delete the record with this GUID; whether there was one."""
        ...

    async def list_page(
        self, *, limit: int, after: PageKey | None = None, filters: ImageFilter | None = None
    ) -> list[ImageRecord]:
        """Up to `limit` records, newest first by (created_at, guid), strictly after `after`, of those
        that pass `filters`: its words matched by domain.search's rule (an empty tuple: none)."""
        ...

    async def list_all_filenames(self) -> list[tuple[UUID, str]]:
        """Every record's (guid, filename), for garbage collection."""
        ...

    async def ping(self) -> None:
        """Check the repository answers. Raises RepositoryUnavailableError."""
        ...

    async def close(self) -> None:
        """Release connections. The repository may not be used afterwards."""
        ...
