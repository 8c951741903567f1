"""The HTTP API against the ASGI app, with fakes bound through the container's overrides."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.domain import exceptions as errors
from pixyproxy.entrypoints.container import Container

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and our request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_post_creates_with_location_and_detail(client: httpx.AsyncClient) -> None:
    response = await client.post("/image", json={"prompt": "a red fox in snow"})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/image/{body['guid']}"
    assert body["prompt"] == "a red fox in snow"
    assert "id" not in body
    assert set(body) >= {"guid", "prompt", "filename", "created_at", "updated_at", "content_type"}
    assert response.headers["x-request-id"]


async def test_get_detail_round_trips(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "a fox"})).json()
    response = await client.get(f"/image/{created['guid']}")
    assert response.status_code == 200
    assert response.json() == created


async def test_unknown_guid_is_404_problem(client: httpx.AsyncClient) -> None:
    guid = uuid4()
    body = assert_problem(await client.get(f"/image/{guid}"), 404)
    assert str(guid) in body["detail"]
    assert body["instance"] == f"/image/{guid}"


@pytest.mark.parametrize("guid", ["nope", "1234", "x" * 300, "00000000-0000-4000-8000-00000000000Z"])
async def test_malformed_guid_is_422_problem(client: httpx.AsyncClient, guid: str) -> None:
    assert_problem(await client.get(f"/image/{guid}"), 422)
    assert_problem(await client.get(f"/image/{guid}/content"), 422)


async def test_list_is_newest_first_with_link_to_next_page(client: httpx.AsyncClient) -> None:
    made = [(await client.post("/image", json={"prompt": f"p{i}"})).json() for i in range(3)]
    first = await client.get("/image", params={"limit": 2})
    assert first.status_code == 200
    assert [d["guid"] for d in first.json()] == [made[2]["guid"], made[1]["guid"]]
    link = first.headers["link"]
    assert link.endswith('>; rel="next"')
    next_url = link[1 : link.index(">")]
    assert next_url.startswith("/image?limit=2&cursor=")
    second = await client.get(next_url)
    assert [d["guid"] for d in second.json()] == [made[0]["guid"]]
    assert "link" not in second.headers


async def test_empty_list_is_an_empty_array(client: httpx.AsyncClient) -> None:
    response = await client.get("/image")
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "cursor=garbage"])
async def test_bad_listing_query_is_422(client: httpx.AsyncClient, query: str) -> None:
    assert_problem(await client.get(f"/image?{query}"), 422)


async def test_content_serves_bytes_with_caching_headers(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "a fox"})).json()
    response = await client.get(f"/image/{created['guid']}/content")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert int(response.headers["content-length"]) == len(response.content) == created["size_bytes"]
    assert hashlib.sha256(response.content).hexdigest() == created["sha256"]
    assert response.headers["etag"] == f'"{created["sha256"]}"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"] == f'inline; filename="{created["filename"]}"'


async def test_if_none_match_gives_304(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "a fox"})).json()
    url = f"/image/{created['guid']}/content"
    etag = (await client.get(url)).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await client.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200


async def test_head_content_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "a fox"})).json()
    response = await client.head(f"/image/{created['guid']}/content")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(created["size_bytes"])
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{created["sha256"]}"'


async def test_content_of_unknown_image_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"/image/{uuid4()}/content"), 404)


async def test_content_whose_bytes_are_gone_is_404_problem(
    client: httpx.AsyncClient, container: Container
) -> None:
    store = InMemoryBlobStore()
    with container.blob_store.override(store):
        created = (await client.post("/image", json={"prompt": "a fox"})).json()
        store.blobs.clear()
        body = assert_problem(await client.get(f"/image/{created['guid']}/content"), 404)
    assert body["type"].endswith("/content-not-found")


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "bell\x07"}, "prompt"),
        ({"prompt": "ok", "extra": 1}, "extra"),
        ({}, "prompt"),
        ([], "body"),
    ],
)
async def test_invalid_bodies_are_422_and_store_nothing(
    client: httpx.AsyncClient, payload: object, where: str
) -> None:
    body = assert_problem(await client.post("/image", json=payload), 422)
    assert where in body["detail"] or where == "body"
    assert (await client.get("/image")).json() == []


async def test_invalid_json_is_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/image", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(response, 422)


async def test_oversized_body_is_413_before_reading_it_whole(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/image",
        content=b'{"prompt": "' + b"x" * 200_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413)


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post("/image", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)
    assert_problem(await client.delete("/image"), 405)


ERROR_TABLE: list[tuple[Exception, int, str]] = [
    (errors.InvalidRequestError("bad", field="prompt"), 422, "invalid-request"),
    (errors.ImageNotFoundError("g"), 404, "image-not-found"),
    (errors.ImageDeletedError("g"), 410, "image-deleted"),
    (errors.PromptRejectedError("violence"), 422, "prompt-rejected"),
    (errors.GeneratorUnavailableError("rate limited", retry_after_s=7), 503, "generator-unavailable"),
    (errors.GeneratorBusyError(4, 30), 503, "generator-busy"),
    (errors.GeneratorBadResponseError("no image"), 502, "generator-bad-response"),
    (errors.GeneratorAuthenticationError(), 502, "generator-credentials-refused"),
    (errors.RepositoryUnavailableError("host db.internal:3306 refused"), 503, "repository-unavailable"),
    (errors.BlobStoreUnavailableError("/var/data/images unreadable"), 503, "blob-store-unavailable"),
    (errors.IdempotencyConflictError("k"), 409, "idempotency-conflict"),
    (errors.DuplicateImageError("g"), 409, "conflict"),
    (errors.ConfigurationError("PIXYPROXY_X", "bad"), 500, "configuration-error"),
    (errors.ImageGenerationException("odd"), 500, "internal-error"),
    (RuntimeError("secret stack detail /etc/x"), 500, "internal-error"),
]


@pytest.mark.parametrize(("exc", "status", "slug"), ERROR_TABLE, ids=lambda v: type(v).__name__)
async def test_every_error_becomes_its_problem(
    client: httpx.AsyncClient, container: Container, exc: Exception, status: int, slug: str
) -> None:
    generator = InMemoryImageGenerator()
    generator.fail_with = exc
    with container.generator.override(generator):
        response = await client.post("/image", json={"prompt": "a fox"})
    body = assert_problem(response, status)
    assert body["type"].endswith("/" + slug)
    for leak in ("db.internal", "/var/data", "/etc/x", "Traceback"):
        assert leak not in response.text
    if isinstance(exc, errors.GeneratorUnavailableError):
        assert response.headers["retry-after"] == str(int(exc.retry_after_s or 0))


async def test_repository_down_is_503_on_every_endpoint(
    client: httpx.AsyncClient, container: Container
) -> None:
    class DownRepository(InMemoryImageRepository):
        async def get(self, guid):
            raise errors.RepositoryUnavailableError("gone")

        async def list_page(self, *, limit, after=None, filters=None):
            raise errors.RepositoryUnavailableError("gone")

        async def delete(self, guid):
            raise errors.RepositoryUnavailableError("gone")

        async def add(self, image):
            raise errors.RepositoryUnavailableError("gone")

    store = InMemoryBlobStore()
    with container.repository.override(DownRepository()), container.blob_store.override(store):
        assert_problem(await client.post("/image", json={"prompt": "a fox"}), 503)
        assert_problem(await client.get("/image"), 503)
        assert_problem(await client.get(f"/image/{uuid4()}"), 503)
        assert_problem(await client.get(f"/image/{uuid4()}/content"), 503)
        assert_problem(await client.get("/image", params={"q": "fox", "generator": "memory"}), 503)
        assert_problem(await client.delete(f"/image/{uuid4()}"), 503)
    assert store.blobs == {}


async def test_idempotency_key_header_replays_and_conflicts(
    client: httpx.AsyncClient, container: Container
) -> None:
    generator = InMemoryImageGenerator()
    with container.generator.override(generator):
        headers = {"Idempotency-Key": "abc-123"}
        first = await client.post("/image", json={"prompt": "a fox"}, headers=headers)
        again = await client.post("/image", json={"prompt": "a fox"}, headers=headers)
        other = await client.post("/image", json={"prompt": "a wolf"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len(generator.calls) == 1
    assert_problem(other, 409)


async def test_openapi_declares_problem_statuses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    post = spec["paths"]["/image"]["post"]["responses"]
    for status in ("201", "409", "413", "422", "502", "503"):
        assert status in post
    assert "application/problem+json" in post["503"]["content"]
    content = spec["paths"]["/image/{guid}/content"]["get"]["responses"]
    assert {"200", "304", "404", "422"} <= content.keys()


async def test_body_that_is_not_utf8_is_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/image", content=b"f\xff", headers={"content-type": "application/json"})
    body = assert_problem(response, 422)
    assert "UTF-8" in body["detail"]


async def test_a_huge_path_is_not_echoed_back_whole(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/image/" + "g" * 10_000), 422)
    assert len(body["instance"]) == 512
    assert body["instance"].startswith("/image/ggg")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/image", "GET, POST"), (f"/image/{uuid4()}/content", "GET, HEAD"), ("/jobs", "GET")],
)
async def test_a_wrong_method_is_405_naming_every_allowed_method(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    response = await client.put(path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allowed
