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
from pixyproxy.adapters.openai_images import OpenAIImageGenerator
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.s3 import S3BlobStore
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.app.caching import CachedImageRepository
from pixyproxy.ports import BlobStore, ImageGenerator, ImageRepository
from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.mysql import fresh_mysql_repository


@pytest.fixture(params=["memory", "sqlite", "cached-sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def repository(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ImageRepository]:
    """Every ImageRepository adapter, each fresh and empty (and the cache in front of one)."""
    if request.param == "mysql":
        async with fresh_mysql_repository() as mysql_repo:
            yield mysql_repo
        return
    repo: ImageRepository
    if request.param == "memory":
        repo = InMemoryImageRepository()
    elif request.param == "cached-sqlite":
        # A tiny cache, so eviction happens inside the contract tests too.
        repo = CachedImageRepository(SqliteImageRepository(tmp_path / "images.sqlite3"), max_entries=3)
    else:
        repo = SqliteImageRepository(tmp_path / "images.sqlite3")
    try:
        yield repo
    finally:
        await repo.close()


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Every BlobStore adapter, each fresh and empty (S3: a new bucket on the moto server)."""
    store: BlobStore
    if request.param == "memory":
        store = InMemoryBlobStore()
    elif request.param == "local":
        store = LocalDiskBlobStore(tmp_path / "blobs")
    else:
        server: MotoServer = request.getfixturevalue("s3_server")
        s3 = S3BlobStore(
            bucket=new_bucket_name(),
            endpoint_url=server.endpoint_url,
            prefix="images/",
            create_bucket=True,
            timeout_s=10,
            max_attempts=2,
        )
        await s3.initialize()
        store = s3
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["memory", "procedural", "openai"])
async def generator(request: pytest.FixtureRequest) -> AsyncIterator[ImageGenerator]:
    """Every ImageGenerator adapter, each ready to answer."""
    gen: ImageGenerator
    if request.param == "memory":
        gen = InMemoryImageGenerator()
    elif request.param == "procedural":
        gen = ProceduralImageGenerator(default_size="64x64")
    else:
        fake: FakeOpenAI = request.getfixturevalue("fake_openai")
        fake.reset()
        gen = OpenAIImageGenerator(api_key="sk-test-contract", base_url=fake.base_url, timeout_s=30)
    try:
        yield gen
    finally:
        await gen.close()
