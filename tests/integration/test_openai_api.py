"""OpenAI's images API on a real `pixyproxy serve`, spoken to by the official `openai` SDK, unchanged.

The server's own generator is the OpenAI adapter pointed at the fake OpenAI upstream, so upstream
refusals and rate limits can be staged; the server also requires its own bearer key.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import Image, ImagesResponse

from tests.support.fake_openai import FakeOpenAI
from tests.support.server import RunningServer, running_server
from tests.support.stack import openai_env

UPSTREAM_KEY = "sk-upstream-SECRET-5e0b7d"
CLIENT_KEY = "sk-pixy-client-SECRET-a91f"
MODEL = "gpt-image-1"  # what openai_env configures


@pytest.fixture(scope="module")
def server(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`pixyproxy serve` with API keys, its generator aimed at the fake upstream, no upstream retries."""
    root = tmp_path_factory.mktemp("openai-api")
    env = {
        **openai_env(fake_openai, api_key=UPSTREAM_KEY, timeout_s=10, max_retries=0),
        "PIXYPROXY_DATA_DIR": str(root / "data"),
        "PIXYPROXY_API_KEYS": CLIENT_KEY,
    }
    with running_server(env, root / "server.log") as running:
        yield running


def sdk(server: RunningServer, *, key: str = CLIENT_KEY) -> openai.OpenAI:
    """The official client, as any application would build it, aimed at PixyProxy."""
    return openai.OpenAI(api_key=key, base_url=f"{server.base_url}/v1", max_retries=0, timeout=60)


def native(server: RunningServer) -> httpx.Client:
    """A plain HTTP client on PixyProxy's own API, with the key."""
    return server.client(headers={"Authorization": f"Bearer {CLIENT_KEY}"})


def images_of(result: ImagesResponse) -> list[Image]:
    """The images of an answer (the SDK types `data` as optional)."""
    assert result.data is not None
    return result.data


def guid_of(image: Any) -> str:
    """The PixyProxy GUID the SDK kept as an extra field of an image."""
    extra = image.model_extra or {}
    guid: str = extra["guid"]
    return guid


def test_n_images_as_urls_serve_the_stored_bytes(server: RunningServer, upstream: FakeOpenAI) -> None:
    with sdk(server) as client:
        result = client.images.generate(prompt="a red fox in snow", n=2, model=MODEL)
    assert len(images_of(result)) == 2
    assert result.created > 0
    assert result.usage is not None
    assert result.usage.total_tokens == 2 * 284  # the fake reports 284 per image
    guids = {guid_of(image) for image in images_of(result)}
    assert len(guids) == 2
    with native(server) as http:
        for image in images_of(result):
            assert image.url is not None
            assert image.url.startswith(f"{server.base_url}/image/")
            assert image.b64_json is None
            assert image.revised_prompt == "A detailed picture of a red fox in snow"
            fetched = http.get(image.url)
            content = http.get(f"/image/{guid_of(image)}/content")
            detail = http.get(f"/image/{guid_of(image)}").json()
            assert fetched.status_code == content.status_code == 200
            assert fetched.content == content.content
            assert hashlib.sha256(fetched.content).hexdigest() == detail["sha256"]
            assert detail["generation"]["model"] == MODEL
        listed = {d["guid"] for d in http.get("/image").json()}
    assert guids <= listed
    assert upstream.stats()["requests"] == 2


def test_b64_json_carries_the_stored_bytes(server: RunningServer, upstream: FakeOpenAI) -> None:
    with sdk(server) as client:
        result = client.images.generate(
            prompt="a lighthouse", n=2, response_format="b64_json", size="1024x1024"
        )
    assert len(images_of(result)) == 2
    with native(server) as http:
        for image in images_of(result):
            assert image.url is None
            assert image.b64_json is not None
            content = http.get(f"/image/{guid_of(image)}/content").content
            assert base64.b64decode(image.b64_json) == content
    assert upstream.stats()["last_body"]["size"] == "1024x1024"


def test_models_lists_the_configured_model(server: RunningServer) -> None:
    with sdk(server) as client:
        models = list(client.models.list())
    assert [m.id for m in models] == [MODEL]
    assert models[0].object == "model"
    assert models[0].owned_by == "pixyproxy"
    with sdk(server) as client:
        assert client.models.retrieve(MODEL) == models[0]
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("dall-e-9")
    assert caught.value.code == "model_not_found"


def test_an_idempotency_key_replays_the_same_images(server: RunningServer, upstream: FakeOpenAI) -> None:
    headers = {"Idempotency-Key": "sdk-retry-7c1"}
    with sdk(server) as client:
        first = client.images.generate(prompt="a kite", n=2, extra_headers=headers)
        again = client.images.generate(prompt="a kite", n=2, extra_headers=headers)
    assert [guid_of(i) for i in images_of(again)] == [guid_of(i) for i in images_of(first)]
    assert upstream.stats()["requests"] == 2


def test_a_wrong_key_raises_authentication_error(server: RunningServer, upstream: FakeOpenAI) -> None:
    with sdk(server, key="sk-not-the-key") as client, pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(prompt="who am I")
    assert caught.value.code == "invalid_api_key"
    with sdk(server, key="sk-not-the-key") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert upstream.stats()["requests"] == 0


def test_a_refused_prompt_raises_bad_request_content_policy(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.set_mode("content_policy")
    with native(server) as http:
        before = http.get("/image?limit=1000").json()
    with sdk(server) as client, pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="something refused", n=2)
    assert caught.value.code == "content_policy_violation"
    assert caught.value.type == "invalid_request_error"
    with native(server) as http:
        assert http.get("/image?limit=1000").json() == before  # none of the request's images is kept


def test_an_upstream_rate_limit_raises_rate_limit_error(server: RunningServer, upstream: FakeOpenAI) -> None:
    upstream.set_mode("rate_limit", retry_after="7")
    with sdk(server) as client, pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(prompt="too many")
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"
    # The same upstream state on PixyProxy's own API is a 503 problem.
    with native(server) as http:
        answer = http.post("/image", json={"prompt": "too many"})
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("options", "param"), [({"n": 11}, "n"), ({"n": 0}, "n"), ({"size": "640x480"}, "size")]
)
def test_a_bad_parameter_raises_bad_request_naming_it(
    server: RunningServer, upstream: FakeOpenAI, options: dict[str, Any], param: str
) -> None:
    with sdk(server) as client, pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a fox", **options)
    assert caught.value.param == param
    assert upstream.stats()["requests"] == 0


def test_a_model_not_served_raises_bad_request_model_not_found(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    with sdk(server) as client, pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a fox", model="dall-e-3")
    assert caught.value.code == "model_not_found"
    assert upstream.stats()["requests"] == 0


def test_requests_are_logged_and_no_key_is(server: RunningServer, upstream: FakeOpenAI) -> None:
    upstream.set_mode("unauthorized")  # the fake echoes the upstream key it got in its message
    with sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="whose key")
    assert caught.value.status_code == 502
    assert UPSTREAM_KEY not in caught.value.response.text
    with sdk(server, key="sk-wrong-SECRET-0000") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()
    logs = server.logs()
    assert "REQUEST START POST /v1/images/generations" in logs
    assert "REQUEST END POST /v1/images/generations 502" in logs
    assert "REQUEST END GET /v1/models 401" in logs
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "sk-wrong-SECRET-0000"):
        assert secret not in logs
