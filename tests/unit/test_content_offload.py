"""PIXYPROXY_CONTENT_OFFLOAD=x-accel-redirect: the content route answers headers and an X-Accel-Redirect,
nginx sends the file. Over ASGI, on the in-memory repository and a real local-disk store."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from pixyproxy.adapters.local_disk import LocalDiskBlobStore
from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import BlobNotFoundError, ConfigurationError
from pixyproxy.entrypoints.cli import main
from pixyproxy.entrypoints.container import build_container
from pixyproxy.entrypoints.http.app import create_app

ALICE, BOB = "sk-alice-offload-1", "sk-bob-offload-2"
PREFIX = "/_pixyproxy_content/"


def set_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, **env: str) -> None:
    for name, value in {
        "PIXYPROXY_REPOSITORY": "memory",
        "PIXYPROXY_BLOB_STORE": "local",
        "PIXYPROXY_DATA_DIR": str(data_dir),
        "PIXYPROXY_GENERATOR": "memory",
        "PIXYPROXY_CONTENT_OFFLOAD": "x-accel-redirect",
        **env,
    }.items():
        monkeypatch.setenv(name, value)


async def client_for(monkeypatch: pytest.MonkeyPatch, data_dir: Path, **env: str) -> httpx.AsyncClient:
    set_env(monkeypatch, data_dir, **env)
    app = create_app(build_container())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def offloading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(monkeypatch, tmp_path) as client:
        yield client


async def generate(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict[str, object]:
    response = await client.post("/image", json={"prompt": "a fox"}, headers=headers or {})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def stored_file(data_dir: Path, redirect: str, prefix: str = PREFIX) -> Path:
    """The file nginx would send for this X-Accel-Redirect, with the location's alias at <data>/images/."""
    assert redirect.startswith(prefix)
    return data_dir / "images" / redirect.removeprefix(prefix)


async def test_content_answers_the_headers_and_a_redirect_to_the_file(
    offloading: httpx.AsyncClient, tmp_path: Path
) -> None:
    created = await generate(offloading)
    response = await offloading.get(f"/image/{created['guid']}/content")
    assert response.status_code == 200
    assert response.content == b""
    redirect = response.headers["x-accel-redirect"]
    assert redirect == f"{PREFIX}{created['filename']}"
    data = stored_file(tmp_path, redirect).read_bytes()
    assert hashlib.sha256(data).hexdigest() == created["sha256"]
    assert len(data) == created["size_bytes"]
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{created["sha256"]}"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == f'inline; filename="{created["filename"]}"'


async def test_the_prefix_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with await client_for(
        monkeypatch, tmp_path, PIXYPROXY_CONTENT_OFFLOAD_PREFIX="/internal/images/"
    ) as client:
        created = await generate(client)
        response = await client.get(f"/image/{created['guid']}/content")
    assert response.headers["x-accel-redirect"] == f"/internal/images/{created['filename']}"


async def test_if_none_match_is_still_decided_by_pixyproxy(offloading: httpx.AsyncClient) -> None:
    created = await generate(offloading)
    etag = f'"{created["sha256"]}"'
    response = await offloading.get(f"/image/{created['guid']}/content", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert "x-accel-redirect" not in response.headers


async def test_head_is_answered_from_the_record(offloading: httpx.AsyncClient) -> None:
    created = await generate(offloading)
    response = await offloading.head(f"/image/{created['guid']}/content")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(created["size_bytes"])
    assert response.headers["etag"] == f'"{created["sha256"]}"'
    assert "x-accel-redirect" not in response.headers


async def test_unknown_and_deleted_images_are_404_problems_without_a_redirect(
    offloading: httpx.AsyncClient,
) -> None:
    unknown = await offloading.get(f"/image/{uuid4()}/content")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "x-accel-redirect" not in unknown.headers

    created = await generate(offloading)
    assert (await offloading.delete(f"/image/{created['guid']}")).status_code == 204
    deleted = await offloading.get(f"/image/{created['guid']}/content")
    assert deleted.status_code == 404
    assert "x-accel-redirect" not in deleted.headers


async def test_bytes_gone_from_disk_is_the_content_not_found_problem(
    offloading: httpx.AsyncClient, tmp_path: Path
) -> None:
    created = await generate(offloading)
    (tmp_path / "images" / str(created["filename"])).unlink()
    response = await offloading.get(f"/image/{created['guid']}/content")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/content-not-found")
    assert "x-accel-redirect" not in response.headers


async def test_auth_and_tenant_isolation_still_apply(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with await client_for(
        monkeypatch,
        tmp_path,
        PIXYPROXY_API_KEYS=f"alice:{ALICE},bob:{BOB}",
        PIXYPROXY_TENANT_ISOLATION="true",
    ) as client:
        created = await generate(client, {"Authorization": f"Bearer {ALICE}"})
        url = f"/image/{created['guid']}/content"
        anonymous = await client.get(url)
        other_owner = await client.get(url, headers={"Authorization": f"Bearer {BOB}"})
        owner = await client.get(url, headers={"Authorization": f"Bearer {ALICE}"})
    assert anonymous.status_code == 401
    assert other_owner.status_code == 404
    assert "x-accel-redirect" not in anonymous.headers
    assert "x-accel-redirect" not in other_owner.headers
    assert owner.headers["x-accel-redirect"] == f"{PREFIX}{created['filename']}"


async def test_without_offload_the_bytes_are_in_the_body(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with await client_for(monkeypatch, tmp_path, PIXYPROXY_CONTENT_OFFLOAD="none") as client:
        created = await generate(client)
        response = await client.get(f"/image/{created['guid']}/content")
    assert "x-accel-redirect" not in response.headers
    assert hashlib.sha256(response.content).hexdigest() == created["sha256"]


# --- the use-case --------------------------------------------------------------------------------------


def service_over(store: InMemoryBlobStore | LocalDiskBlobStore, *, offload_files: bool) -> ImageService:
    return ImageService(
        repository=InMemoryImageRepository(),
        generator=InMemoryImageGenerator(),
        blob_store=store,
        offload_files=offload_files,
    )


async def test_locate_file_names_the_stored_file_relative_to_the_root(tmp_path: Path) -> None:
    service = service_over(LocalDiskBlobStore(tmp_path), offload_files=True)
    detail = await service.generate({"prompt": "a fox"})
    path = await service.locate_file(detail)
    assert path == detail.filename
    assert hashlib.sha256((tmp_path / path).read_bytes()).hexdigest() == detail.sha256
    (tmp_path / path).unlink()
    with pytest.raises(BlobNotFoundError):
        await service.locate_file(detail)


async def test_locate_file_is_none_when_off_or_where_the_store_has_no_files(tmp_path: Path) -> None:
    off = service_over(LocalDiskBlobStore(tmp_path), offload_files=False)
    assert await off.locate_file(await off.generate({"prompt": "a fox"})) is None
    memory = service_over(InMemoryBlobStore(), offload_files=True)
    assert await memory.locate_file(await memory.generate({"prompt": "a fox"})) is None


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "s3"])
def test_offload_needs_the_local_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: str) -> None:
    set_env(monkeypatch, tmp_path, PIXYPROXY_BLOB_STORE=store, PIXYPROXY_S3_BUCKET="images")
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert caught.value.setting == "PIXYPROXY_CONTENT_OFFLOAD"
    assert "PIXYPROXY_BLOB_STORE=local" in str(caught.value)
    assert repr(store) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIXYPROXY_CONTENT_OFFLOAD", "sendfile"),
        ("PIXYPROXY_CONTENT_OFFLOAD_PREFIX", "no-leading-slash/"),
        ("PIXYPROXY_CONTENT_OFFLOAD_PREFIX", "/no-trailing-slash"),
        ("PIXYPROXY_CONTENT_OFFLOAD_PREFIX", "/a b/"),
        ("PIXYPROXY_CONTENT_OFFLOAD_PREFIX", "/"),
    ],
)
def test_a_bad_offload_value_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    set_env(monkeypatch, tmp_path, **{name: value})
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert caught.value.setting == name
    assert value in str(caught.value)


def test_serve_refuses_offload_with_s3_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(monkeypatch, tmp_path, PIXYPROXY_BLOB_STORE="s3", PIXYPROXY_S3_BUCKET="images")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "PIXYPROXY_CONTENT_OFFLOAD" in err
