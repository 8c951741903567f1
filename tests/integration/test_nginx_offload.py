"""Real nginx, configured with the README's block, in front of a real `pixyproxy serve` with
PIXYPROXY_CONTENT_OFFLOAD=x-accel-redirect: nginx sends the bytes, PixyProxy decides everything else."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.support.nginx import RunningNginx, readme_server_block, require_nginx, running_nginx
from tests.support.real_parts import free_port
from tests.support.server import RunningServer, running_server


@dataclass
class Stack:
    """nginx in front of PixyProxy, and where PixyProxy keeps its files."""

    nginx: RunningNginx
    pixyproxy: RunningServer
    images_dir: Path

    def client(self) -> httpx.Client:
        """A client of nginx, every wait bounded."""
        return httpx.Client(base_url=self.nginx.base_url, timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One PixyProxy (sqlite, local disk, procedural, offload on) behind one nginx, for the module."""
    require_nginx()
    tmp = tmp_path_factory.mktemp("nginx-offload")
    env = {
        "PIXYPROXY_DATA_DIR": str(tmp / "data"),
        "PIXYPROXY_PROCEDURAL_SIZE": "64x64",
        "PIXYPROXY_CONTENT_OFFLOAD": "x-accel-redirect",
    }
    images_dir = (tmp / "data" / "images").resolve()
    with running_server(env, tmp / "server.log") as pixyproxy:
        upstream = pixyproxy.base_url.removeprefix("http://")
        port = free_port()
        block = readme_server_block(port=port, upstream=upstream, images_dir=images_dir)
        with running_nginx(tmp / "nginx", block, port=port) as nginx:
            yield Stack(nginx=nginx, pixyproxy=pixyproxy, images_dir=images_dir)


@pytest.fixture(scope="module")
def image(stack: Stack) -> dict[str, Any]:
    """One image, made through nginx."""
    with stack.client() as client:
        response = client.post("/image", json={"prompt": "a lighthouse at dusk"})
    assert response.status_code == 201, response.text
    detail: dict[str, Any] = response.json()
    return detail


def content_url(detail: dict[str, Any]) -> str:
    return f"/image/{detail['guid']}/content"


def test_nginx_sends_the_stored_bytes_with_pixyproxys_headers(stack: Stack, image: dict[str, Any]) -> None:
    with stack.client() as client:
        response = client.get(content_url(image))
    assert response.status_code == 200, stack.nginx.logs()
    stored = (stack.images_dir / image["filename"]).read_bytes()
    assert response.content == stored
    assert hashlib.sha256(response.content).hexdigest() == image["sha256"]
    assert response.headers["content-length"] == str(image["size_bytes"])
    assert response.headers["server"].startswith("nginx")
    assert "x-accel-redirect" not in response.headers
    assert "last-modified" not in response.headers
    with httpx.Client(base_url=stack.pixyproxy.base_url, timeout=10) as direct:
        own = direct.get(content_url(image))
    assert own.headers["x-accel-redirect"] == f"/_pixyproxy_content/{image['filename']}"
    assert own.content == b""
    for name in ("etag", "content-type", "cache-control", "content-disposition", "x-content-type-options"):
        assert response.headers[name] == own.headers[name], name
    assert response.headers["etag"] == f'"{image["sha256"]}"'
    assert response.headers["x-request-id"]


def test_if_none_match_gives_pixyproxys_304_with_no_body(stack: Stack, image: dict[str, Any]) -> None:
    etag = f'"{image["sha256"]}"'
    with stack.client() as client:
        response = client.get(content_url(image), headers={"If-None-Match": etag})
        other = client.get(content_url(image), headers={"If-None-Match": '"something-else"'})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert other.status_code == 200
    assert hashlib.sha256(other.content).hexdigest() == image["sha256"]


def test_if_modified_since_is_not_decided_by_nginx(stack: Stack, image: dict[str, Any]) -> None:
    with stack.client() as client:
        response = client.get(
            content_url(image), headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
        )
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == image["sha256"]


def test_head_gives_the_headers_and_no_body(stack: Stack, image: dict[str, Any]) -> None:
    with stack.client() as client:
        response = client.head(content_url(image))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(image["size_bytes"])
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{image["sha256"]}"'


def test_a_range_is_cut_from_the_same_bytes(stack: Stack, image: dict[str, Any]) -> None:
    with stack.client() as client:
        response = client.get(content_url(image), headers={"Range": "bytes=0-7"})
    assert response.status_code == 206
    assert response.content == b"\x89PNG\r\n\x1a\n"
    assert response.headers["etag"] == f'"{image["sha256"]}"'


def test_an_unknown_guid_is_pixyproxys_404_problem(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get(f"/image/{uuid4()}/content")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/image-not-found")


def test_missing_bytes_are_pixyproxys_404_problem_not_nginxs(stack: Stack) -> None:
    with stack.client() as client:
        detail = client.post("/image", json={"prompt": "bytes that will vanish"}).json()
        (stack.images_dir / detail["filename"]).unlink()
        response = client.get(content_url(detail))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/content-not-found")


def test_the_internal_location_cannot_be_fetched_from_outside(stack: Stack, image: dict[str, Any]) -> None:
    with stack.client() as client:
        response = client.get(f"/_pixyproxy_content/{image['filename']}")
    assert response.status_code == 404
    assert hashlib.sha256(response.content).hexdigest() != image["sha256"]
