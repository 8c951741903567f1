"""Fixtures that hand each contract suite every adapter of its port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pixyproxy.adapters.local_disk import LocalDiskBlobStore
from pixyproxy.adapters.memory import (
    InMemoryBlobStore,
    InMemoryImageGenerator,
    InMemoryImageRepository,
)
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.ports import BlobStore, ImageGenerator, ImageRepository
from tests.support.mysql import fresh_mysql_repository


@pytest.fixture(params=["memory", "sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def repository(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ImageRepository]:
    """Every ImageRepository adapter, each fresh and empty."""
    if request.param == "mysql":
        async with fresh_mysql_repository() as mysql_repo:
            yield mysql_repo
        return
    repo: ImageRepository
    if request.param == "memory":
        repo = InMemoryImageRepository()
    else:
        repo = SqliteImageRepository(tmp_path / "images.sqlite3")
    try:
        yield repo
    finally:
        await repo.close()


@pytest.fixture(params=["memory", "local"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Every BlobStore adapter, each fresh and empty."""
    store: BlobStore = (
        InMemoryBlobStore() if request.param == "memory" else LocalDiskBlobStore(tmp_path / "blobs")
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["memory", "procedural"])
async def generator(request: pytest.FixtureRequest) -> AsyncIterator[ImageGenerator]:
    """Every ImageGenerator adapter, each ready to answer."""
    gen: ImageGenerator
    if request.param == "memory":
        gen = InMemoryImageGenerator()
    else:
        gen = ProceduralImageGenerator(default_size="64x64")
    try:
        yield gen
    finally:
        await gen.close()
