"""OpenAI's images API (/v1/) against the ASGI app, with in-memory fakes bound through the container."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryImageGenerator
from pixyproxy.domain import exceptions as errors
from pixyproxy.domain.models import GenerationInfo, ImageDetail
from pixyproxy.entrypoints.container import Container, build_container
from pixyproxy.entrypoints.http.app import create_app
from pixyproxy.entrypoints.http.openai_routes import _usage, largest_valid_body_bytes

GENERATIONS = "/v1/images/generations"
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The response is an error in OpenAI's shape, with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == OPENAI_ERROR_KEYS
    assert error["code"] == code
    assert error["message"]
    assert response.headers["x-request-id"]
    return error


def served_client(container: Container, **client: Any) -> httpx.AsyncClient:
    """An httpx client on a fresh app built from this container."""
    transport = httpx.ASGITransport(app=create_app(container), **client)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def memory_container(monkeypatch: pytest.MonkeyPatch, **env: str) -> Container:
    """The production container on in-memory adapters, with these extra settings."""
    for name, value in {
        "PIXYPROXY_REPOSITORY": "memory",
        "PIXYPROXY_BLOB_STORE": "memory",
        "PIXYPROXY_GENERATOR": "memory",
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    return build_container()


# --- generations --------------------------------------------------------------------------------


async def test_n_images_come_back_as_absolute_urls_of_ordinary_images(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json={"prompt": "a red fox in snow", "n": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"}  # the memory generator reports no usage
    assert len(body["data"]) == 2
    listed = {d["guid"] for d in (await client.get("/image")).json()}
    assert {item["guid"] for item in body["data"]} == listed
    for item in body["data"]:
        assert set(item) == {"url", "guid"}
        assert item["url"] == f"http://testserver/image/{item['guid']}/content"
        content = await client.get(item["url"])
        assert content.status_code == 200
        assert content.content.startswith(b"\x89PNG")
    newest = max(datetime.fromisoformat(d["created_at"]) for d in (await client.get("/image")).json())
    assert body["created"] == int(newest.timestamp())


async def test_b64_json_answers_the_stored_bytes(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json={"prompt": "a fox", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert "url" not in item
    content = await client.get(f"/image/{item['guid']}/content")
    assert base64.b64decode(item["b64_json"]) == content.content


async def test_revised_prompt_is_passed_on_when_the_generator_gave_one(
    client: httpx.AsyncClient, container: Container
) -> None:
    class Revising(InMemoryImageGenerator):
        async def generate(self, prompt, *, options):
            image = await super().generate(prompt, options=options)
            info = image.generation.model_copy(update={"revised_prompt": f"A picture of {prompt}"})
            return image.model_copy(update={"generation": info})

    with container.generator.override(Revising()):
        response = await client.post(GENERATIONS, json={"prompt": "a fox"})
    assert response.json()["data"][0]["revised_prompt"] == "A picture of a fox"


async def test_unknown_openai_fields_are_accepted_and_ignored(client: httpx.AsyncClient) -> None:
    body = {
        "prompt": "a fox",
        "style": "vivid",
        "background": "transparent",
        "moderation": "low",
        "output_format": "png",
        "quality": "hd",
        "user": "user-1234",
        "some_future_field": {"nested": [1, 2]},
    }
    response = await client.post(GENERATIONS, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("size", "stored"), [("auto", None), (None, None), ("512x512", "512x512")])
async def test_sizes_map_onto_the_job(
    client: httpx.AsyncClient, size: str | None, stored: str | None
) -> None:
    body = {"prompt": "a fox"} | ({"size": size} if size else {})
    response = await client.post(GENERATIONS, json=body)
    assert response.status_code == 200, response.text
    (job,) = (await client.get("/jobs")).json()
    assert job["size"] == stored
    assert job["image"]["guid"] == response.json()["data"][0]["guid"]


async def test_the_configured_model_is_accepted_by_name(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json={"prompt": "a fox", "model": "memory-fake"})
    assert response.status_code == 200, response.text


async def test_a_model_not_served_is_model_not_found_and_generates_nothing(
    client: httpx.AsyncClient, container: Container
) -> None:
    generator = InMemoryImageGenerator()
    with container.generator.override(generator):
        response = await client.post(GENERATIONS, json={"prompt": "a fox", "model": "dall-e-3"})
    error = assert_openai_error(response, 400, "model_not_found")
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "dall-e-3" in error["message"]
    assert generator.calls == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a fox", "n": 0}, "n"),
        ({"prompt": "a fox", "n": 11}, "n"),
        ({"prompt": "a fox", "size": "640x480"}, "size"),
        ({"prompt": "a fox", "response_format": "gif"}, "response_format"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "bell\x07"}, "prompt"),
        ({"n": 1}, "prompt"),
    ],
)
async def test_an_invalid_request_is_400_naming_the_param(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post(GENERATIONS, json=body)
    error = assert_openai_error(
        response, 400, "missing_required_parameter" if "prompt" not in body else "invalid_value"
    )
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert (await client.get("/image")).json() == []


async def test_malformed_json_and_other_media_types_answer_in_openai_shape(client: httpx.AsyncClient) -> None:
    malformed = await client.post(
        GENERATIONS, content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert_openai_error(malformed, 400, "invalid_value")
    form = await client.post(GENERATIONS, data={"prompt": "a fox"})
    assert_openai_error(form, 415, "unsupported_media_type")
    repeated = await client.post(
        GENERATIONS, content=b'{"prompt": "a", "prompt": "b"}', headers={"content-type": "application/json"}
    )
    error = assert_openai_error(repeated, 400, "invalid_value")
    assert error["param"] == "body"


async def test_unknown_paths_and_methods_under_v1_answer_in_openai_shape(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/embeddings"), 404, "not_found")
    wrong_method = await client.get(GENERATIONS)
    assert_openai_error(wrong_method, 405, "method_not_allowed")


async def test_a_body_over_the_cap_is_413_in_openai_shape(
    client: httpx.AsyncClient, container: Container
) -> None:
    cap = max(container.settings().http.body_cap(), largest_valid_body_bytes())
    response = await client.post(
        GENERATIONS, content=b" " * (cap + 1), headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 413, "request_too_large")


async def test_the_largest_valid_body_is_not_refused_as_too_large(client: httpx.AsyncClient) -> None:
    # Every field at its longest, every character at its longest escape: U+1F82 sent decomposed
    # (four \\uXXXX escapes), and astral characters (a surrogate pair of escapes) elsewhere.
    nfd = "\\u03b1\\u0313\\u0300\\u0345"
    astral = "\\ud83e\\udd8a"
    text = (
        '{"prompt": "' + nfd * 4000 + '", "model": null, "n": 1, "size": "1024x1024", '
        '"quality": "' + astral * 32 + '", "response_format": "b64_json", "user": "' + astral * 256 + '"}'
    )
    assert len(text) <= largest_valid_body_bytes()
    response = await client.post(
        GENERATIONS, content=text.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]


async def test_idempotency_key_replays_the_same_images(
    client: httpx.AsyncClient, container: Container
) -> None:
    generator = InMemoryImageGenerator()
    headers = {"Idempotency-Key": "openai-retry-1"}
    with container.generator.override(generator):
        first = await client.post(GENERATIONS, json={"prompt": "a fox", "n": 2}, headers=headers)
        again = await client.post(GENERATIONS, json={"prompt": "a fox", "n": 2}, headers=headers)
        other = await client.post(GENERATIONS, json={"prompt": "a wolf", "n": 2}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert [d["guid"] for d in again.json()["data"]] == [d["guid"] for d in first.json()["data"]]
    assert len(generator.calls) == 2
    assert_openai_error(other, 409, "idempotency_conflict")


async def test_one_failed_image_of_n_answers_the_error_and_keeps_none(
    client: httpx.AsyncClient, container: Container
) -> None:
    class SecondFails(InMemoryImageGenerator):
        async def generate(self, prompt, *, options):
            if len(self.calls) == 1:
                self.calls.append(prompt)
                raise errors.PromptRejectedError("not this one")
            return await super().generate(prompt, options=options)

    with container.generator.override(SecondFails()):
        response = await client.post(GENERATIONS, json={"prompt": "a fox", "n": 3})
    assert_openai_error(response, 400, "content_policy_violation")
    assert (await client.get("/image")).json() == []


OPENAI_ERROR_TABLE: list[tuple[Exception, int, str, str | None]] = [
    (errors.PromptRejectedError("violence"), 400, "invalid_request_error", "content_policy_violation"),
    (errors.GeneratorRateLimitedError("429", retry_after_s=7), 429, "requests", "rate_limit_exceeded"),
    (
        errors.GeneratorUnavailableError("timeout", retry_after_s=3),
        503,
        "server_error",
        "generator_unavailable",
    ),
    (errors.GeneratorBusyError(4, 30), 503, "server_error", "generator_busy"),
    (errors.GeneratorBadResponseError("no image"), 502, "server_error", "generator_bad_response"),
    (errors.GeneratorAuthenticationError(), 502, "server_error", "generator_credentials_refused"),
    (
        errors.RepositoryUnavailableError("host db.internal:3306"),
        503,
        "server_error",
        "repository_unavailable",
    ),
    (errors.BlobStoreUnavailableError("/var/data/images"), 503, "server_error", "blob_store_unavailable"),
    (errors.InvalidRequestError("size refused", field="size"), 400, "invalid_request_error", "invalid_value"),
    (errors.ImageGenerationException("odd"), 500, "server_error", "internal_error"),
    (RuntimeError("secret stack detail /etc/x"), 500, "server_error", "internal_error"),
]


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"), OPENAI_ERROR_TABLE, ids=lambda v: type(v).__name__
)
async def test_every_error_takes_openais_shape_and_status(
    client: httpx.AsyncClient, container: Container, exc: Exception, status: int, type_: str, code: str | None
) -> None:
    generator = InMemoryImageGenerator()
    generator.fail_with = exc
    with container.generator.override(generator):
        response = await client.post(GENERATIONS, json={"prompt": "a fox"})
    error = assert_openai_error(response, status, code)
    assert error["type"] == type_
    for leak in ("db.internal", "/var/data", "/etc/x", "Traceback"):
        assert leak not in response.text
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        assert response.headers["retry-after"] == str(int(retry_after))


async def test_an_upstream_rate_limit_is_429_on_v1_and_503_on_image(
    client: httpx.AsyncClient, container: Container
) -> None:
    generator = InMemoryImageGenerator()
    generator.fail_with = errors.GeneratorRateLimitedError("429", retry_after_s=5)
    with container.generator.override(generator):
        openai = await client.post(GENERATIONS, json={"prompt": "a fox"})
        native = await client.post("/image", json={"prompt": "a fox"})
    assert openai.status_code == 429
    assert native.status_code == 503
    assert native.headers["content-type"] == "application/problem+json"
    assert openai.headers["retry-after"] == native.headers["retry-after"] == "5"


# --- models -------------------------------------------------------------------------------------


async def test_models_lists_the_configured_model_in_openais_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "memory-fake"
    assert model["object"] == "model"
    assert model["owned_by"] == "pixyproxy"
    assert isinstance(model["created"], int)


async def test_models_names_the_openai_model_when_that_generator_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = memory_container(
        monkeypatch, PIXYPROXY_GENERATOR="openai", OPENAI_API_KEY="sk-x", PIXYPROXY_OPENAI_MODEL="dall-e-3"
    )
    async with served_client(container) as client:
        body = (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["dall-e-3"]


async def test_a_served_model_is_retrieved_by_its_id(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/models")).json()["data"][0]
    response = await client.get("/v1/models/memory-fake")
    assert response.status_code == 200
    assert response.json() == listed


async def test_an_unknown_model_id_is_openais_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/dall-e-9")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert "dall-e-9" in error["message"]


# --- keys ---------------------------------------------------------------------------------------

KEY = "sk-pixy-unit-SECRET-91c2"


@pytest.fixture
async def keyed(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    async with served_client(memory_container(monkeypatch, PIXYPROXY_API_KEYS=KEY)) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong", "Basic " + KEY])
async def test_a_missing_or_wrong_key_is_invalid_api_key(
    keyed: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for response in (
        await keyed.post(GENERATIONS, json={"prompt": "a fox"}, headers=headers),
        await keyed.get("/v1/models", headers=headers),
    ):
        error = assert_openai_error(response, 401, "invalid_api_key")
        assert error["type"] == "invalid_request_error"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert KEY not in response.text
    native = await keyed.get("/image", headers=headers)
    assert native.status_code == 401
    assert native.headers["content-type"] == "application/problem+json"


async def test_the_right_key_is_let_through(keyed: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await keyed.post(GENERATIONS, json={"prompt": "a fox"}, headers=headers)
    assert response.status_code == 200, response.text
    assert KEY not in response.text


# --- where the URLs point -------------------------------------------------------------------------

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.com"}


async def url_of(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    response = await client.post(GENERATIONS, json={"prompt": "a fox"}, headers=headers or {})
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url


async def test_the_public_url_wins_over_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    container = memory_container(monkeypatch, PIXYPROXY_PUBLIC_URL="https://cdn.example.org/pixy/")
    async with served_client(container) as client:
        url = await url_of(client, FORWARDED)
    assert url.startswith("https://cdn.example.org/pixy/image/")
    assert url.endswith("/content")


async def test_forwarded_headers_are_ignored_from_an_untrusted_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    container = memory_container(monkeypatch, PIXYPROXY_TRUSTED_PROXIES="10.0.0.0/8")
    async with served_client(container, client=("192.0.2.7", 5000)) as client:
        assert (await url_of(client, FORWARDED)).startswith("http://testserver/image/")


async def test_forwarded_headers_are_honoured_from_a_trusted_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    container = memory_container(monkeypatch, PIXYPROXY_TRUSTED_PROXIES="192.0.2.0/24, 10.1.2.3")
    async with served_client(container, client=("192.0.2.7", 5000)) as client:
        url = await url_of(client, {**FORWARDED, "X-Forwarded-Host": "images.example.com, inner.local"})
    assert url.startswith("https://images.example.com/image/")


async def test_forwarded_headers_count_for_nothing_without_trusted_proxies(client: httpx.AsyncClient) -> None:
    # The test client's peer is 127.0.0.1: loopback is not trusted unless configured.
    assert (await url_of(client, FORWARDED)).startswith("http://testserver/image/")


async def test_a_hostile_host_is_not_put_into_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    container = memory_container(monkeypatch, PIXYPROXY_TRUSTED_PROXIES="127.0.0.1")
    async with served_client(container) as client:
        url = await url_of(client, {"Host": "evil.example/x?", "X-Forwarded-Host": "<script>"})
    assert "evil" not in url
    assert "<" not in url
    assert url.startswith("http://")


# --- OpenAPI --------------------------------------------------------------------------------------


async def test_openapi_describes_v1_with_the_openai_error_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "OpenAIError" in schema["components"]["schemas"]
    post = schema["paths"][GENERATIONS]["post"]
    for status in ("400", "401", "429", "503"):
        content = post["responses"][status]["content"]["application/json"]
        assert content["schema"]["$ref"] == "#/components/schemas/OpenAIError"
    assert "422" not in post["responses"]  # /v1/ answers invalid requests with 400
    assert "401" in schema["paths"]["/v1/models"]["get"]["responses"]
    # The native API keeps its problem documents.
    assert "application/problem+json" in schema["paths"]["/image"]["post"]["responses"]["422"]["content"]


# --- usage ----------------------------------------------------------------------------------------


def detail_with(usage: dict[str, int] | None) -> ImageDetail:
    now = datetime.now(UTC)
    return ImageDetail(
        guid=uuid4(),
        prompt="p",
        filename="f.png",
        content_type="image/png",
        size_bytes=1,
        sha256="0" * 64,
        generator="openai",
        generation=GenerationInfo(generator="openai", usage=usage),
        created_at=now,
        updated_at=now,
    )


def test_usage_is_summed_and_nested_as_openai_nests_it() -> None:
    usage = {
        "input_tokens": 12,
        "input_tokens_details.text_tokens": 12,
        "output_tokens": 272,
        "total_tokens": 284,
    }
    summed = _usage([detail_with(usage), detail_with(usage)])
    assert summed == {
        "input_tokens": 24,
        "input_tokens_details": {"text_tokens": 24},
        "output_tokens": 544,
        "total_tokens": 568,
    }
    assert json.loads(json.dumps(summed)) == summed


def test_usage_is_left_out_unless_every_image_reported_it() -> None:
    assert _usage([detail_with({"total_tokens": 1}), detail_with(None)]) is None
    assert _usage([]) is None
