"""The blob store port: where image bytes live, under keys that are relative names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pixyproxy.domain.models import BlobInfo


class BlobStore(Protocol):
    """Stores bytes by key.

    Every method raises InvalidBlobKeyError for a key that could escape the store
    (see domain.models.validate_blob_key) and BlobStoreUnavailableError when the store
    cannot be reached.
    """

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there, atomically: readers see all or nothing."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under `key`. Raises BlobNotFoundError."""
        ...

    def read_chunks(self, key: str, *, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The bytes under `key` as pieces of at most `chunk_bytes`, read as they are asked for, so a
        download holds one piece at a time. Raises BlobNotFoundError when the first piece is asked for."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether something is stored under `key`."""
        ...

    async def list_blobs(self) -> list[BlobInfo]:
        """Every stored object, for garbage collection."""
        ...

    async def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """A URL a client can fetch the bytes from directly, or None where the store has none."""
        ...

    async def file_path(self, key: str) -> str | None:
        """The file holding `key`'s bytes, as a path relative to the store's root folder, for a front
        server (nginx's X-Accel-Redirect) to send; None where the store keeps no local files.
        Raises BlobNotFoundError where it keeps files and none is stored under `key`."""
        ...

    async def ping(self) -> None:
        """Check the store answers. Raises BlobStoreUnavailableError."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...
