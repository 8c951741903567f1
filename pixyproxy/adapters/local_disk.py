"""Local-disk blob store: one file per key under a root folder, written atomically."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from pixyproxy.domain.exceptions import BlobNotFoundError, BlobStoreUnavailableError
from pixyproxy.domain.models import BlobInfo, validate_blob_key

_TEMP_PREFIX = ".tmp-"


class LocalDiskBlobStore:
    """Bytes as files below `root`; a key can never resolve outside it."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self._root / validate_blob_key(key)).resolve()
        if not path.is_relative_to(self._root):  # belt and braces: validate_blob_key already refuses
            raise BlobStoreUnavailableError("key resolved outside the store")
        return path

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write to a temporary file in the same folder, fsync, then rename over the key."""
        path = self._path(key)
        try:
            await asyncio.to_thread(_write_atomically, path, data)
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot write {key!r}: {err.strerror}") from err

    async def get(self, key: str) -> bytes:
        """Read the file."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot read {key!r}: {err.strerror}") from err

    async def read_chunks(self, key: str, *, chunk_bytes: int) -> AsyncIterator[bytes]:
        """Read the file a piece at a time, each piece in a worker thread."""
        path = self._path(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot read {key!r}: {err.strerror}") from err
        try:
            while piece := await asyncio.to_thread(file.read, chunk_bytes):
                yield piece
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot read {key!r}: {err.strerror}") from err
        finally:
            file.close()

    async def delete(self, key: str) -> None:
        """Remove the file if it is there."""
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, True)
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot delete {key!r}: {err.strerror}") from err

    async def exists(self, key: str) -> bool:
        """Whether the file is there."""
        return await asyncio.to_thread(self._path(key).is_file)

    async def list_blobs(self) -> list[BlobInfo]:
        """Every stored file, temporary files of interrupted writes excluded."""
        try:
            return await asyncio.to_thread(self._list)
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot list the store: {err.strerror}") from err

    def _list(self) -> list[BlobInfo]:
        if not self._root.is_dir():
            return []
        found = []
        for path in self._root.rglob("*"):
            if path.is_file() and not path.name.startswith(_TEMP_PREFIX):
                stat = path.stat()
                found.append(
                    BlobInfo(
                        key=path.relative_to(self._root).as_posix(),
                        size_bytes=stat.st_size,
                        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                    )
                )
        return found

    async def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """Local disk has no URLs of its own."""
        self._path(key)
        return None

    async def file_path(self, key: str) -> str | None:
        """The key's file relative to the root (the key itself), once it is known to be there.

        This runs on every offloaded content request, so it costs one stat and nothing more: no
        resolve() (a validated key cannot leave the root, and resolving costs a stat per path part),
        and no thread hand-off, which costs far more than a stat answered from the inode cache.
        """
        relative = validate_blob_key(key)
        try:
            found = stat.S_ISREG(os.stat(os.path.join(self._root, relative)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            found = False
        except OSError as err:
            raise BlobStoreUnavailableError(f"cannot read {key!r}: {err.strerror}") from err
        if not found:
            raise BlobNotFoundError(key)
        return relative

    def local_path(self, key: str) -> Path:
        """The file behind a key, for serving it with sendfile."""
        return self._path(key)

    async def ping(self) -> None:
        """Check the root is a writable folder."""
        ok = await asyncio.to_thread(_writable_dir, self._root)
        if not ok:
            raise BlobStoreUnavailableError("the data folder is not a writable directory")

    async def close(self) -> None:
        """Nothing to release."""


def _writable_dir(root: Path) -> bool:
    root.mkdir(parents=True, exist_ok=True)
    return root.is_dir() and os.access(root, os.W_OK)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
