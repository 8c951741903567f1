"""Seed images straight through PixyProxy's adapters, before its server starts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import uuid4

from pixyproxy.adapters.local_disk import LocalDiskBlobStore
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.domain.models import (
    GenerationInfo,
    ImageDetail,
    NewImage,
    filename_for,
    sha256_hex,
    utc_now,
)

MIB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_looking_blob(size: int = MIB) -> bytes:
    """Exactly `size` bytes: a PNG signature, then random (incompressible) bytes."""
    return PNG_SIGNATURE + os.urandom(size - len(PNG_SIGNATURE))


def sqlite_path(data_dir: Path) -> Path:
    """Where PixyProxy keeps its SQLite file under PIXYPROXY_DATA_DIR (see containers.yml)."""
    return data_dir / "pixyproxy.sqlite3"


def blob_root(data_dir: Path) -> Path:
    """Where PixyProxy keeps image files under PIXYPROXY_DATA_DIR (see containers.yml)."""
    return data_dir / "images"


def new_image(data: bytes, *, prompt: str) -> NewImage:
    """A record for these bytes, as the service would make it."""
    guid = uuid4()
    now = utc_now()
    return NewImage(
        guid=guid,
        prompt=prompt,
        filename=filename_for(guid, "image/png"),
        content_type="image/png",
        size_bytes=len(data),
        sha256=sha256_hex(data),
        generation=GenerationInfo(generator="bench", model="urandom"),
        created_at=now,
        updated_at=now,
    )


async def seed_sqlite_image(data_dir: Path, image: NewImage, data: bytes) -> tuple[ImageDetail, Path]:
    """Store one image in the SQLite repository and the local blob store; return its detail and file."""
    repository = SqliteImageRepository(sqlite_path(data_dir))
    blobs = LocalDiskBlobStore(blob_root(data_dir))
    try:
        await blobs.put(image.filename, data, content_type=image.content_type)
        record = await repository.add(image)
    finally:
        await repository.close()
        await blobs.close()
    return ImageDetail.from_record(record), blobs.local_path(image.filename)


def write_detail_json(detail: ImageDetail, path: Path) -> Path:
    """The detail as PixyProxy's HTTP API renders it, for the baseline app to hold in memory."""
    path.write_text(json.dumps(detail.model_dump(mode="json")))
    return path


async def seed_sqlite_images(data_dir: Path, count: int, *, size: int, prompt: str) -> list[str]:
    """Store `count` small images through one SQLite repository and local blob store; their GUIDs."""
    repository = SqliteImageRepository(sqlite_path(data_dir))
    blobs = LocalDiskBlobStore(blob_root(data_dir))
    guids = []
    try:
        for i in range(count):
            data = png_looking_blob(size)
            image = new_image(data, prompt=f"{prompt} {i}")
            await blobs.put(image.filename, data, content_type=image.content_type)
            await repository.add(image)
            guids.append(str(image.guid))
    finally:
        await repository.close()
        await blobs.close()
    return guids
