"""Deleting images (bytes first, then the record; caches that learn of it; 410 replays) and listing
filters, through the use-cases, the record cache, the HTTP API and the command line."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.adapters.memory_jobs import InMemoryJobQueue, InMemoryJobRepository
from pixyproxy.app.caching import CachedImageRepository
from pixyproxy.app.jobs import JobService
from pixyproxy.app.maintenance import GarbageCollector
from pixyproxy.app.requests import parse_image_filter
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import (
    BlobStoreUnavailableError,
    ImageDeletedError,
    ImageNotFoundError,
    InvalidRequestError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import ImageRecord, utc_now
from pixyproxy.entrypoints.container import Container
from tests.support.builders import new_image
from tests.unit.test_gc import _cli
from tests.unit.test_http import assert_problem


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowReads(InMemoryImageRepository):
    """Reads that take their time and can be held: a database read in flight while a delete runs."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: asyncio.Event | None = None

    async def get(self, guid: UUID) -> ImageRecord:
        self.reads += 1
        record = await super().get(guid)  # read now, returned later
        if self.hold is not None:
            await self.hold.wait()
        return record


class FailingDeletes(InMemoryImageRepository):
    """A database that goes away exactly when a record is to be deleted."""

    async def delete(self, guid: UUID) -> bool:
        raise RepositoryUnavailableError("connection lost")


class FailingBlobDeletes(InMemoryBlobStore):
    """A blob store that goes away exactly when bytes are to be deleted."""

    async def delete(self, key: str) -> None:
        raise BlobStoreUnavailableError("S3 timed out")


# --- the record cache -----------------------------------------------------------------------------


async def test_a_cached_record_is_trusted_only_for_its_ttl() -> None:
    inner, clock = SlowReads(), FakeClock()
    cached = CachedImageRepository(inner, max_entries=10, ttl_s=2.0, clock=clock)
    image = await inner.add(new_image())
    assert await cached.get(image.guid) == image
    assert await cached.get(image.guid) == image
    assert inner.reads == 1
    await inner.delete(image.guid)  # deleted by another worker or server: this cache was not told
    clock.now += 1.9
    assert await cached.get(image.guid) == image
    clock.now += 0.2
    with pytest.raises(ImageNotFoundError):
        await cached.get(image.guid)
    assert inner.reads == 2


async def test_a_delete_here_forgets_the_record_at_once() -> None:
    inner, clock = SlowReads(), FakeClock()
    cached = CachedImageRepository(inner, max_entries=10, ttl_s=2.0, clock=clock)
    image = await cached.add(new_image())
    assert await cached.get(image.guid) == image
    assert await cached.delete(image.guid) is True
    with pytest.raises(ImageNotFoundError):
        await cached.get(image.guid)


async def test_a_read_under_way_during_a_delete_does_not_put_the_record_back() -> None:
    inner, clock = SlowReads(), FakeClock()
    cached = CachedImageRepository(inner, max_entries=10, ttl_s=2.0, clock=clock)
    image = await inner.add(new_image())
    inner.hold = asyncio.Event()
    reading = asyncio.create_task(cached.get(image.guid))
    await asyncio.sleep(0)  # the read has fetched the record and waits
    assert inner.reads == 1
    clock.now += 0.01
    assert await cached.delete(image.guid) is True
    inner.hold.set()
    assert await reading == image  # it was there when it was read
    inner.hold = None
    with pytest.raises(ImageNotFoundError):
        await cached.get(image.guid)


# --- the delete use-case --------------------------------------------------------------------------


def image_service(repository: Any = None, blob_store: Any = None) -> ImageService:
    return ImageService(
        repository=repository or InMemoryImageRepository(),
        generator=InMemoryImageGenerator(),
        blob_store=blob_store or InMemoryBlobStore(),
    )


async def test_delete_removes_the_bytes_and_the_record() -> None:
    repository, store = InMemoryImageRepository(), InMemoryBlobStore()
    service = image_service(repository, store)
    kept = await service.generate({"prompt": "kept"})
    gone = await service.generate({"prompt": "gone"})
    await service.delete(str(gone.guid))
    assert set(store.blobs) == {kept.filename}
    assert set(repository.records) == {kept.guid}
    with pytest.raises(ImageNotFoundError):
        await service.get_detail(gone.guid)
    with pytest.raises(ImageNotFoundError):
        await service.delete(gone.guid)
    with pytest.raises(ImageNotFoundError):
        await service.delete(uuid4())
    with pytest.raises(InvalidRequestError):
        await service.delete("not-a-guid")


async def test_a_crash_between_the_two_deletes_leaves_a_record_gc_reports_and_repairs() -> None:
    repository, store = FailingDeletes(), InMemoryBlobStore()
    service = image_service(repository, store)
    kept = await service.generate({"prompt": "kept"})
    victim = await service.generate({"prompt": "half deleted"})
    with pytest.raises(RepositoryUnavailableError):
        await service.delete(victim.guid)
    # Bytes first: nothing is left that no record names; the record names bytes that are gone.
    assert set(store.blobs) == {kept.filename}
    assert victim.guid in repository.records

    collector = GarbageCollector(repository=_working(repository), blob_store=store)
    report = await collector.collect(now=utc_now(), grace=timedelta(hours=1), delete=False)
    assert report.missing_blobs == [(victim.guid, victim.filename)]
    assert report.orphan_blobs == []
    assert victim.guid in repository.records  # reported, not repaired, unless asked

    repaired = await collector.collect(
        now=utc_now(), grace=timedelta(hours=1), delete=True, forget_missing=True
    )
    assert repaired.forgotten == [victim.guid]
    again = await collector.collect(now=utc_now(), grace=timedelta(hours=1), delete=False)
    assert again.missing_blobs == []
    assert again.orphan_blobs == []
    assert (await service.get_detail(kept.guid)).guid == kept.guid


def _working(failing: FailingDeletes) -> InMemoryImageRepository:
    """The same records behind a repository whose deletes work again (the database is back)."""
    repository = InMemoryImageRepository()
    repository.records = failing.records
    repository._terms = failing._terms
    return repository


async def test_a_blob_store_failure_deletes_nothing() -> None:
    repository, store = InMemoryImageRepository(), FailingBlobDeletes()
    service = image_service(repository, store)
    image = await service.generate({"prompt": "still here"})
    with pytest.raises(BlobStoreUnavailableError):
        await service.delete(image.guid)
    assert image.guid in repository.records
    assert image.filename in store.blobs


async def test_an_idempotency_key_of_a_deleted_image_raises_image_deleted_and_generates_nothing() -> None:
    generator = InMemoryImageGenerator()
    images = ImageService(
        repository=InMemoryImageRepository(), generator=generator, blob_store=InMemoryBlobStore()
    )
    jobs = JobService(jobs=InMemoryJobRepository(), queue=InMemoryJobQueue(), images=images)
    first = await jobs.generate_now({"prompt": "once"}, idempotency_key="key-1")
    await images.delete(first.guid)
    with pytest.raises(ImageDeletedError) as caught:
        await jobs.generate_now({"prompt": "once"}, idempotency_key="key-1")
    assert caught.value.guid == str(first.guid)
    assert generator.calls == ["once"]


async def test_filter_text_is_normalised_and_bounded() -> None:
    decomposed = parse_image_filter(words='  Cafe\u0301 "STRASSE" -x* ')
    assert decomposed is not None
    assert decomposed.words == ("cafe", "strasse", "x")
    assert parse_image_filter(words="   ", generator="", model=None) is None
    only_operators = parse_image_filter(words='"*"')
    assert only_operators is not None
    assert only_operators.words == ()
    with pytest.raises(InvalidRequestError):
        parse_image_filter(words="x" * 201)
    with pytest.raises(InvalidRequestError):
        parse_image_filter(words=" ".join(f"w{i}" for i in range(65)))


# --- the HTTP API ---------------------------------------------------------------------------------


async def test_delete_answers_204_then_the_image_is_gone_everywhere(client: httpx.AsyncClient) -> None:
    made = (await client.post("/image", json={"prompt": "a fox to delete"})).json()
    kept = (await client.post("/image", json={"prompt": "a fox to keep"})).json()
    assert (await client.get(f"/image/{made['guid']}/content")).status_code == 200

    deleted = await client.delete(f"/image/{made['guid']}")
    assert deleted.status_code == 204
    assert deleted.content == b""

    assert_problem(await client.get(f"/image/{made['guid']}"), 404)
    assert_problem(await client.get(f"/image/{made['guid']}/content"), 404)
    assert (await client.head(f"/image/{made['guid']}/content")).status_code == 404
    assert [d["guid"] for d in (await client.get("/image")).json()] == [kept["guid"]]
    assert [d["guid"] for d in (await client.get("/image", params={"q": "fox"})).json()] == [kept["guid"]]
    again = assert_problem(await client.delete(f"/image/{made['guid']}"), 404)
    assert again["type"].endswith("/image-not-found")


async def test_delete_of_an_unknown_or_malformed_guid(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete(f"/image/{uuid4()}"), 404)
    assert_problem(await client.delete("/image/not-a-guid"), 422)


async def test_a_replay_of_a_deleted_images_key_is_410_sync_and_async(
    client: httpx.AsyncClient, container: Container
) -> None:
    key = {"Idempotency-Key": "delete-me-1"}
    first = await client.post("/image", json={"prompt": "keyed"}, headers=key)
    assert first.status_code == 201
    assert (await client.delete(f"/image/{first.json()['guid']}")).status_code == 204
    for extra in ({}, {"Prefer": "respond-async"}, {"Prefer": "wait=5"}):
        replay = await client.post("/image", json={"prompt": "keyed"}, headers={**key, **extra})
        body = assert_problem(replay, 410)
        assert body["type"] == "https://pixyproxy.dev/problems/image-deleted"
        assert first.json()["guid"] in body["detail"]
    generator = container.upstream_generator()
    assert isinstance(generator, InMemoryImageGenerator)
    assert generator.calls == ["keyed"]


async def test_filters_narrow_the_listing_and_the_link_carries_them(client: httpx.AsyncClient) -> None:
    prompts = ["赤い狐 one", "a cat", "赤い狐 two", "a dog", "赤い狐 three", "赤い狐 four"]
    made = [(await client.post("/image", json={"prompt": p})).json() for p in prompts]
    foxes = [d["guid"] for d in reversed(made) if "狐" in d["prompt"]]
    after = made[0]["created_at"]
    seen: list[str] = []
    url: str | None = "/image"
    params: dict[str, Any] | None = {"q": "狐", "limit": 2, "generator": "memory", "created_after": after}
    while url is not None:
        page = await client.get(url, params=params)
        assert page.status_code == 200, page.text
        seen += [d["guid"] for d in page.json()]
        link = page.headers.get("link")
        url, params = (link.split(">")[0].lstrip("<"), None) if link else (None, None)
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert query["q"] == ["狐"]
            assert query["generator"] == ["memory"]
            assert "cursor" in query
            assert "created_after" in query
    assert seen == foxes[:-1]  # created_after is exclusive: the first fox is not after itself

    assert (await client.get("/image", params={"model": "no-such-model"})).json() == []
    assert len((await client.get("/image", params={"model": "memory-fake"})).json()) == len(prompts)
    before = (await client.get("/image", params={"created_before": made[1]["created_at"]})).json()
    assert [d["guid"] for d in before] == [made[0]["guid"]]


@pytest.mark.parametrize(
    "q", ['"', "*", "+fox -cat", 'NEAR("a" "b")', "') OR 1=1 --", "%(q)s :q ?", "fox AND", "\\"]
)
async def test_search_syntax_is_plain_text_never_an_error(client: httpx.AsyncClient, q: str) -> None:
    await client.post("/image", json={"prompt": "a fox"})
    answer = await client.get("/image", params={"q": q})
    assert answer.status_code == 200, answer.text
    assert all("fox" in d["prompt"] for d in answer.json())


@pytest.mark.parametrize(
    "bound",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00", "2026-01-01"],
)
async def test_extreme_or_zoneless_time_bounds_are_answered(client: httpx.AsyncClient, bound: str) -> None:
    await client.post("/image", json={"prompt": "a fox"})
    for name in ("created_after", "created_before"):
        assert (await client.get("/image", params={name: bound})).status_code == 200


async def test_bad_filter_values_are_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/image", params={"created_after": "yesterday"}), 422)
    assert_problem(await client.get("/image", params={"q": "x" * 201}), 422)
    assert_problem(await client.get("/image", params={"generator": "g" * 101}), 422)


async def test_content_cache_control_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixyproxy.entrypoints.container import build_container
    from pixyproxy.entrypoints.http.app import create_app

    for name, value in {
        "PIXYPROXY_REPOSITORY": "memory",
        "PIXYPROXY_BLOB_STORE": "memory",
        "PIXYPROXY_GENERATOR": "memory",
        "PIXYPROXY_CONTENT_CACHE_CONTROL": "private, no-cache",
    }.items():
        monkeypatch.setenv(name, value)
    transport = httpx.ASGITransport(app=create_app(build_container()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        made = (await client.post("/image", json={"prompt": "erasable"})).json()
        content = await client.get(f"/image/{made['guid']}/content")
        assert content.headers["cache-control"] == "private, no-cache"
        etag = content.headers["etag"]
        revalidated = await client.get(f"/image/{made['guid']}/content", headers={"If-None-Match": etag})
        assert revalidated.status_code == 304
        assert revalidated.headers["cache-control"] == "private, no-cache"


async def test_the_default_content_cache_control_is_immutable(client: httpx.AsyncClient) -> None:
    made = (await client.post("/image", json={"prompt": "cached"})).json()
    content = await client.get(f"/image/{made['guid']}/content")
    assert content.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_openapi_declares_delete_filters_and_410(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    delete = spec["paths"]["/image/{guid}"]["delete"]
    assert {"204", "401", "404", "422", "500", "503"} <= set(delete["responses"])
    assert "410" in spec["paths"]["/image"]["post"]["responses"]
    names = {p["name"] for p in spec["paths"]["/image"]["get"]["parameters"]}
    assert {"q", "generator", "model", "created_after", "created_before", "limit", "cursor"} <= names


# --- the command line -----------------------------------------------------------------------------


def test_cli_delete_removes_bytes_and_record_and_reports_unknown_guids(tmp_path: Path) -> None:
    made = [_cli("generate", f"cli fox {i}", data_dir=tmp_path) for i in range(2)]
    details = [json.loads(m.stdout) for m in made]
    unknown = str(uuid4())
    done = _cli("delete", details[0]["guid"], unknown, "not-a-guid", data_dir=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"deleted {details[0]['guid']}"]
    assert unknown in done.stderr
    assert "not-a-guid" in done.stderr
    assert not (tmp_path / "images" / details[0]["filename"]).exists()
    assert (tmp_path / "images" / details[1]["filename"]).is_file()
    report = json.loads(_cli("gc", data_dir=tmp_path).stdout)
    assert report["records"] == 1
    assert report["missing_blobs"] == []
    assert report["orphan_blobs"] == []
    assert _cli("delete", details[1]["guid"], data_dir=tmp_path).returncode == 0
