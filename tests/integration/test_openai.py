"""The OpenAI adapter against a fake OpenAI-compatible server over real HTTP, alone and inside the server."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pixyproxy.adapters.openai_images import OpenAIImageGenerator, retry_after_s
from pixyproxy.domain.exceptions import (
    GeneratorAuthenticationError,
    GeneratorBadResponseError,
    GeneratorUnavailableError,
    InvalidRequestError,
    PromptRejectedError,
)
from pixyproxy.domain.models import GenerationOptions
from tests.support.fake_openai import FakeOpenAI, noise_png
from tests.support.real_parts import free_port
from tests.support.server import RunningServer, running_server
from tests.support.stack import openai_env

API_KEY = "sk-test-SECRET-7f3a9c1e5b"
NO_OPTIONS = GenerationOptions()


def adapter(fake: FakeOpenAI, **overrides: Any) -> OpenAIImageGenerator:
    """An adapter aimed at the fake, with quick retries."""
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "timeout_s": 10,
        "max_retries": 2,
        "retry_backoff_s": 0.01,
        **overrides,
    }
    return OpenAIImageGenerator(**settings)


@pytest.fixture
async def gen(upstream: FakeOpenAI) -> AsyncIterator[OpenAIImageGenerator]:
    """The adapter with default settings, closed afterwards."""
    generator = adapter(upstream)
    yield generator
    await generator.close()


# --- the adapter alone -------------------------------------------------------------------------


async def test_provenance_comes_from_the_upstream_answer(gen: OpenAIImageGenerator, upstream) -> None:
    image = await gen.generate("a red fox", options=NO_OPTIONS)
    info = image.generation
    assert image.content_type == "image/png"
    assert info.generator == "openai"
    assert info.model == "gpt-image-2.5-flare"
    assert info.revised_prompt == "A detailed picture of a red fox"
    assert info.upstream_request_id is not None
    assert info.upstream_request_id.startswith("req_")
    assert info.usage is not None
    assert info.usage["total_tokens"] == 284
    assert info.usage["input_tokens_details.text_tokens"] == 12
    assert info.latency_ms is not None
    assert info.latency_ms > 0
    body = upstream.stats()["last_body"]
    assert "response_format" not in body  # gpt-image models refuse it
    assert body["size"] == "1024x1024"
    assert body["model"] == "gpt-image-2.5-flare"


async def test_a_one_mib_image_arrives_byte_for_byte_with_its_provenance(
    gen: OpenAIImageGenerator, upstream
) -> None:
    # The size make bench's figure 3-cpu generates: 1.4 MB of base64, decoded by pybase64.
    upstream.set_mode("ok", image_bytes=1024 * 1024)
    image = await gen.generate("a red fox", options=NO_OPTIONS)
    assert image.data == noise_png(1024 * 1024)
    assert len(image.data) > 1024 * 1024
    assert image.content_type == "image/png"
    assert image.generation.revised_prompt == "A detailed picture of a red fox"
    assert image.generation.usage is not None


async def test_request_size_overrides_the_configured_size(gen: OpenAIImageGenerator, upstream) -> None:
    await gen.generate("sized", options=GenerationOptions(size="512x512"))
    assert upstream.stats()["last_body"]["size"] == "512x512"


async def test_dalle_models_are_asked_for_base64(upstream: FakeOpenAI) -> None:
    generator = adapter(upstream, model="dall-e-3")
    try:
        image = await generator.generate("legacy", options=NO_OPTIONS)
    finally:
        await generator.close()
    body = upstream.stats()["last_body"]
    assert body["response_format"] == "b64_json"
    assert "quality" not in body  # dall-e knows no "auto"
    assert image.generation.model == "dall-e-3"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_url_answer_is_downloaded(gen: OpenAIImageGenerator, upstream, chunked: bool) -> None:
    upstream.set_mode("url", chunked=chunked)
    image = await gen.generate("by url", options=NO_OPTIONS)
    assert image.content_type == "image/png"
    assert image.data.startswith(b"\x89PNG")


async def test_a_base64_image_over_the_cap_is_refused(upstream: FakeOpenAI) -> None:
    generator = adapter(upstream, max_download_bytes=100)
    try:
        with pytest.raises(GeneratorBadResponseError, match="larger than 100 bytes"):
            await generator.generate("too big", options=NO_OPTIONS)
    finally:
        await generator.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_download_over_the_cap_is_refused(upstream: FakeOpenAI, chunked: bool) -> None:
    upstream.set_mode("url", chunked=chunked, pad_bytes=50_000)
    generator = adapter(upstream, max_download_bytes=10_000)
    try:
        with pytest.raises(GeneratorBadResponseError, match="larger than 10000 bytes"):
            await generator.generate("too big", options=NO_OPTIONS)
    finally:
        await generator.close()


@pytest.mark.parametrize(
    ("mode", "options", "expected"),
    [
        ("content_policy", {}, PromptRejectedError),
        ("content_policy", {"code": "moderation_blocked"}, PromptRejectedError),
        ("content_policy", {"code": None, "type": "invalid_request_error"}, PromptRejectedError),
        ("bad_request", {}, GeneratorBadResponseError),
        ("unauthorized", {}, GeneratorAuthenticationError),
        ("server_error", {}, GeneratorUnavailableError),
        ("no_data", {}, GeneratorBadResponseError),
        ("garbage_b64", {}, GeneratorBadResponseError),
        ("not_image", {}, GeneratorBadResponseError),
    ],
)
async def test_each_failure_becomes_its_domain_exception_without_retry(
    gen: OpenAIImageGenerator, upstream, mode: str, options: dict[str, Any], expected: type[Exception]
) -> None:
    upstream.set_mode(mode, **options)
    with pytest.raises(expected) as caught:
        await gen.generate("a prompt", options=NO_OPTIONS)
    assert type(caught.value) is expected
    if mode in {"content_policy", "bad_request", "unauthorized", "server_error"}:
        assert isinstance(caught.value.__cause__, openai.APIStatusError)
    assert API_KEY not in str(caught.value)
    assert upstream.stats()["requests"] == 1


async def test_a_prompt_refusal_tells_the_user_what_to_do(gen: OpenAIImageGenerator, upstream) -> None:
    upstream.set_mode("content_policy")
    with pytest.raises(PromptRejectedError, match="rephrase the prompt"):
        await gen.generate("something forbidden", options=NO_OPTIONS)


async def test_a_timeout_is_unavailable_and_not_retried(upstream: FakeOpenAI) -> None:
    upstream.set_mode("slow", delay_s=1)
    generator = adapter(upstream, timeout_s=0.3)
    try:
        with pytest.raises(GeneratorUnavailableError, match=r"no answer within 0\.3s"):
            await generator.generate("slow", options=NO_OPTIONS)
    finally:
        await generator.close()
    assert upstream.stats()["requests"] == 1


async def test_rate_limits_are_retried_up_to_max_retries_with_the_hint_kept(
    gen: OpenAIImageGenerator, upstream
) -> None:
    upstream.set_mode("rate_limit", retry_after_ms=20)
    with pytest.raises(GeneratorUnavailableError) as caught:
        await gen.generate("busy", options=NO_OPTIONS)
    assert upstream.stats()["requests"] == 3  # the first try and two retries
    assert caught.value.retry_after_s == pytest.approx(0.02)


async def test_a_rate_limit_that_clears_is_retried_to_success(gen: OpenAIImageGenerator, upstream) -> None:
    upstream.set_mode("rate_limit", retry_after="0", times=1)
    image = await gen.generate("eventually", options=NO_OPTIONS)
    assert image.data.startswith(b"\x89PNG")
    assert upstream.stats()["requests"] == 2


async def test_an_exhausted_quota_is_not_retried(gen: OpenAIImageGenerator, upstream) -> None:
    upstream.set_mode("rate_limit", retry_after="0", code="insufficient_quota")
    with pytest.raises(GeneratorUnavailableError):
        await gen.generate("no credit", options=NO_OPTIONS)
    assert upstream.stats()["requests"] == 1


async def test_a_long_retry_after_is_passed_on_instead_of_waited_for(
    gen: OpenAIImageGenerator, upstream
) -> None:
    upstream.set_mode("rate_limit", retry_after="120")
    with pytest.raises(GeneratorUnavailableError) as caught:
        await gen.generate("later", options=NO_OPTIONS)
    assert caught.value.retry_after_s == 120
    assert upstream.stats()["requests"] == 1


async def test_an_unreachable_upstream_is_retried_then_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    generator = OpenAIImageGenerator(
        api_key=API_KEY,
        base_url=f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        max_retries=2,
        retry_backoff_s=0.01,
    )
    caplog.set_level(logging.WARNING, logger="pixyproxy.adapters.openai_images")
    try:
        with pytest.raises(GeneratorUnavailableError, match="cannot reach the upstream"):
            await generator.generate("nobody home", options=NO_OPTIONS)
    finally:
        await generator.close()
    retries = [r for r in caplog.records if "APIConnectionError, retry" in r.getMessage()]
    assert len(retries) == 2


@pytest.fixture
def dropping_server() -> Iterator[tuple[str, list[int]]]:
    """A socket that reads a request and hangs up without answering; counts connections."""
    accepted: list[int] = []
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so the loop notices `stop`
    port = listener.getsockname()[1]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1", accepted
    stop.set()
    thread.join(timeout=5)
    listener.close()


async def test_a_connection_lost_after_sending_is_not_retried(dropping_server) -> None:
    # The request reached the server, which may have started (and billed) the image.
    base_url, accepted = dropping_server
    generator = OpenAIImageGenerator(api_key=API_KEY, base_url=base_url, max_retries=2, retry_backoff_s=0.01)
    try:
        with pytest.raises(GeneratorUnavailableError):
            await generator.generate("dropped", options=NO_OPTIONS)
    finally:
        await generator.close()
    assert len(accepted) == 1


def test_retry_after_reads_milliseconds_seconds_and_dates() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"retry-after": "7"}) == 7
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [(GenerationOptions(size="1536x864"), InvalidRequestError), (NO_OPTIONS, GeneratorBadResponseError)],
)
async def test_a_refused_size_is_the_users_error_only_when_the_user_chose_it(
    gen: OpenAIImageGenerator, upstream, options: GenerationOptions, expected: type[Exception]
) -> None:
    upstream.set_mode("bad_request", param="size")
    with pytest.raises(expected) as caught:
        await gen.generate("sized", options=options)
    assert type(caught.value) is expected


def test_the_repr_never_shows_the_key() -> None:
    generator = OpenAIImageGenerator(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    assert API_KEY not in repr(generator)


# --- the whole server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """`pixyproxy serve` with the OpenAI generator aimed at the fake."""
    root = tmp_path_factory.mktemp("openai-server")
    env = {
        **openai_env(fake_openai, api_key=API_KEY, timeout_s=1.5, max_retries=0),
        "PIXYPROXY_DATA_DIR": str(root / "data"),
        "PIXYPROXY_MAX_CONCURRENT_GENERATIONS": "4",
    }
    with running_server(env, root / "server.log") as server:
        yield server


def stored_state(server: RunningServer, client: httpx.Client) -> tuple[list[str], list[Path]]:
    """The GUIDs the server lists and the files in its blob store."""
    images_dir = server.log_path.parent / "data" / "images"
    files = sorted(p for p in images_dir.rglob("*") if p.is_file()) if images_dir.exists() else []
    return [d["guid"] for d in client.get("/image").json()], files


def test_the_server_stores_exactly_the_upstream_bytes(openai_server: RunningServer, upstream) -> None:
    upstream.set_mode("url")  # so the test can fetch the very bytes the upstream served
    with openai_server.client() as client:
        created = client.post("/image", json={"prompt": "a red fox in snow"})
        assert created.status_code == 201, created.text
        detail = created.json()
        content = client.get(f"/image/{detail['guid']}/content")
    assert content.status_code == 200
    assert content.headers["content-type"] == "image/png"
    assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
    generation = detail["generation"]
    assert detail["generator"] == "openai"
    assert generation["model"] == "gpt-image-1"
    assert generation["revised_prompt"] == "A detailed picture of a red fox in snow"
    assert generation["upstream_request_id"].startswith("req_")
    assert generation["usage"]["total_tokens"] == 284


def test_the_server_stores_base64_answers_byte_for_byte(openai_server: RunningServer, upstream) -> None:
    with openai_server.client() as client:
        created = client.post("/image", json={"prompt": "base64 please", "size": "512x512"})
        assert created.status_code == 201, created.text
        content = client.get(f"/image/{created.json()['guid']}/content").content
    assert hashlib.sha256(content).hexdigest() == created.json()["sha256"]
    assert content.startswith(b"\x89PNG")
    assert upstream.stats()["last_body"]["size"] == "512x512"


@pytest.mark.parametrize(
    ("mode", "options", "status", "slug"),
    [
        ("rate_limit", {"retry_after": "7"}, 503, "generator-unavailable"),
        ("content_policy", {}, 422, "prompt-rejected"),
        ("unauthorized", {}, 502, "generator-credentials-refused"),
        ("server_error", {}, 503, "generator-unavailable"),
        ("slow", {"delay_s": 3}, 503, "generator-unavailable"),
        ("no_data", {}, 502, "generator-bad-response"),
        ("garbage_b64", {}, 502, "generator-bad-response"),
        ("bad_request", {}, 502, "generator-bad-response"),
    ],
)
def test_each_upstream_failure_is_a_problem_and_stores_nothing(
    openai_server: RunningServer, upstream, mode: str, options: dict[str, Any], status: int, slug: str
) -> None:
    upstream.set_mode(mode, **options)
    with openai_server.client() as client:
        before = stored_state(openai_server, client)
        answer = client.post("/image", json={"prompt": "a failing prompt"})
        after = stored_state(openai_server, client)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status
    assert problem["type"].endswith("/" + slug)
    assert API_KEY not in answer.text
    if mode == "rate_limit":
        assert answer.headers["retry-after"] == "7"
    if mode == "content_policy":
        assert "rephrase" in problem["detail"]
    assert after == before  # no record and no bytes were stored


def test_the_api_key_never_reaches_the_logs(openai_server: RunningServer, upstream) -> None:
    upstream.set_mode("unauthorized")  # the fake echoes the key it got in its 401 message
    with openai_server.client() as client:
        answer = client.post("/image", json={"prompt": "who am I"})
    assert answer.status_code == 502
    logs = openai_server.logs()
    assert "REQUEST END POST /image 502" in logs
    assert API_KEY not in logs


def test_the_concurrency_bound_holds_against_the_upstream(openai_server: RunningServer, upstream) -> None:
    upstream.set_mode("slow", delay_s=0.3)

    def post(i: int) -> int:
        with httpx.Client(base_url=openai_server.base_url, timeout=60) as client:
            return client.post("/image", json={"prompt": f"crowd {i}"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(16)))
    stats = upstream.stats()
    assert statuses == [201] * 16
    assert stats["requests"] == 16
    assert 1 <= stats["max_in_flight"] <= 4


def test_serve_without_an_api_key_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(PIXYPROXY_GENERATOR="openai", PIXYPROXY_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "pixyproxy.entrypoints.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "OPENAI_API_KEY" in lines[0]
    assert "Traceback" not in done.stderr
