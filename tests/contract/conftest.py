"""Fixtures that hand each contract suite every adapter of its port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
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
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.ports import BlobStore, ImageGenerator, ImageRepository
from tests.support.fake_openai import FakeOpenAI, running_fake_openai


@pytest.fixture(params=["memory", "sqlite"])
async def repository(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ImageRepository]:
    """Every ImageRepository adapter, each fresh and empty."""
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


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """The OpenAI-compatible fake server, in a subprocess, for the whole session."""
    with running_fake_openai() as fake:
        yield fake


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
