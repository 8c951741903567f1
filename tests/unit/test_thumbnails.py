"""Thumbnails: made once with Pillow, stored beside the image, served with an ETag, deleted with it."""

from __future__ import annotations

import io
from datetime import timedelta

import httpx
import pytest
from PIL import Image

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageRepository
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.app.maintenance import GarbageCollector
from pixyproxy.app.service import ImageService
from pixyproxy.app.thumbnails import THUMBNAIL_WIDTHS, thumbnail_key
from pixyproxy.domain.exceptions import ImageNotFoundError, InvalidRequestError
from pixyproxy.domain.models import sha256_hex, utc_now
from pixyproxy.entrypoints.container import Container
from pixyproxy.ports import BlobStore
from tests.unit.test_http import assert_problem


class CountingBlobStore(InMemoryBlobStore):
    """The in-memory store, counting writes: a thumbnail must be made once, not per request."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[str] = []

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self.puts.append(key)
        await super().put(key, data, content_type=content_type)


@pytest.fixture
def blob_store() -> CountingBlobStore:
    return CountingBlobStore()


@pytest.fixture
def repository() -> InMemoryImageRepository:
    return InMemoryImageRepository()


@pytest.fixture
def service(blob_store: CountingBlobStore, repository: InMemoryImageRepository) -> ImageService:
    return ImageService(
        repository=repository,
        generator=ProceduralImageGenerator(default_size="1024x512"),
        blob_store=blob_store,
    )


async def test_a_thumbnail_is_a_webp_at_most_w_wide_with_the_aspect_kept(service: ImageService) -> None:
    detail = await service.generate({"prompt": "a wide harbour"})
    thumb = await service.thumbnail(detail.guid, 256)
    assert thumb.content_type == "image/webp"
    assert thumb.sha256 == sha256_hex(thumb.data)
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert image.format == "WEBP"
        assert image.size == (256, 128)


async def test_a_thumbnail_is_made_once_and_stored_beside_the_image(
    service: ImageService, blob_store: CountingBlobStore
) -> None:
    detail = await service.generate({"prompt": "a lighthouse"})
    first = await service.thumbnail(detail.guid, 128)
    second = await service.thumbnail(str(detail.guid), 128)
    assert first == second
    key = thumbnail_key(detail.guid, 128)
    assert key == f"{detail.guid}.thumb-128.webp"
    assert blob_store.puts.count(key) == 1
    assert await blob_store.get(key) == first.data


async def test_a_small_image_is_never_enlarged(blob_store: CountingBlobStore) -> None:
    service = ImageService(
        repository=InMemoryImageRepository(),
        generator=ProceduralImageGenerator(default_size="64x64"),
        blob_store=blob_store,
    )
    detail = await service.generate({"prompt": "a small square"})
    with Image.open(io.BytesIO((await service.thumbnail(detail.guid, 512)).data)) as image:
        assert image.size == (64, 64)


async def test_a_width_outside_the_set_is_refused_before_any_work(
    service: ImageService, blob_store: CountingBlobStore
) -> None:
    detail = await service.generate({"prompt": "a fox"})
    with pytest.raises(InvalidRequestError):
        await service.thumbnail(detail.guid, 300)
    assert blob_store.puts == [detail.filename]


async def test_a_missing_image_has_no_thumbnail(service: ImageService) -> None:
    with pytest.raises(ImageNotFoundError):
        await service.thumbnail("8b7e3c3e-2d7a-4b53-9d3c-6f0e0b8f9a11", 256)


async def test_delete_removes_every_thumbnail_and_gc_keeps_a_live_images(
    service: ImageService, blob_store: CountingBlobStore, repository: InMemoryImageRepository
) -> None:
    kept = await service.generate({"prompt": "kept"})
    gone = await service.generate({"prompt": "gone"})
    for width in THUMBNAIL_WIDTHS:
        await service.thumbnail(kept.guid, width)
        await service.thumbnail(gone.guid, width)
    await service.delete(gone.guid)
    for width in THUMBNAIL_WIDTHS:
        assert not await blob_store.exists(thumbnail_key(gone.guid, width))
        assert await blob_store.exists(thumbnail_key(kept.guid, width))
    # A thumbnail made by a request racing the delete is an orphan gc finds; a live image's are not.
    await blob_store.put(thumbnail_key(gone.guid, 256), b"late", content_type="image/webp")
    report = await GarbageCollector(repository=repository, blob_store=blob_store).collect(
        now=utc_now() + timedelta(days=1), grace=timedelta(hours=1), delete=True
    )
    assert report.deleted == [thumbnail_key(gone.guid, 256)]


async def test_thumbnail_route_serves_webp_with_etag_caching_and_304(client: httpx.AsyncClient) -> None:
    guid = (await client.post("/image", json={"prompt": "a heron"})).json()["guid"]
    response = await client.get(f"/image/{guid}/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["etag"] == f'"{sha256_hex(response.content)}"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    again = await client.get(
        f"/image/{guid}/thumbnail?w=256", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == response.headers["etag"]
    other = await client.get(f"/image/{guid}/thumbnail?w=128", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200
    assert other.headers["etag"] != response.headers["etag"] or other.content == response.content


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/image/8b7e3c3e-2d7a-4b53-9d3c-6f0e0b8f9a11/thumbnail", 404),
        ("/image/not-a-guid/thumbnail", 422),
        ("/image/{guid}/thumbnail?w=300", 422),
        ("/image/{guid}/thumbnail?w=wide", 422),
    ],
)
async def test_thumbnail_route_errors_are_problems(client: httpx.AsyncClient, path: str, status: int) -> None:
    guid = (await client.post("/image", json={"prompt": "a heron"})).json()["guid"]
    assert_problem(await client.get(path.format(guid=guid)), status)


async def test_deleting_an_image_over_http_deletes_its_thumbnail(
    client: httpx.AsyncClient, container: Container
) -> None:
    guid = (await client.post("/image", json={"prompt": "a heron"})).json()["guid"]
    assert (await client.get(f"/image/{guid}/thumbnail?w=512")).status_code == 200
    store = container.blob_store()
    assert [key for key in await _keys(store) if ".thumb-" in key] == [f"{guid}.thumb-512.webp"]
    assert (await client.delete(f"/image/{guid}")).status_code == 204
    assert await _keys(store) == []
    assert_problem(await client.get(f"/image/{guid}/thumbnail"), 404)


async def _keys(store: BlobStore) -> list[str]:
    return sorted(blob.key for blob in await store.list_blobs())


async def test_the_gallery_page_and_its_files_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'content="false"' in page.text  # no key wanted: the page asks for none
    for name, kind in [("app.js", "javascript"), ("app.css", "text/css")]:
        response = await client.get(f"/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    assert "/" not in [path for path in (await client.get("/openapi.json")).json()["paths"]]


async def test_with_keys_the_page_is_open_and_says_a_key_is_wanted(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXYPROXY_API_KEYS", "sk-unit")
    from pixyproxy.entrypoints.container import build_container
    from pixyproxy.entrypoints.http.app import create_app

    app = create_app(build_container())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert 'content="true"' in page.text
        assert (await client.get("/static/app.js")).status_code == 200
        assert (await client.get("/image")).status_code == 401
