"""An OpenAI-compatible images server for tests, run by uvicorn in a subprocess on loopback.

It answers `POST /v1/images/generations` with real PNG bytes, and can be switched at run time
(`POST /_control/mode`) to each failure an upstream shows, or to a large image (`image_bytes`:
random pixels, about that many bytes of PNG, as base64). `GET /_control/stats` reports the
number of generation requests, the most ever in flight at once, and the last request body.

Run as `python -m tests.support.fake_openai --port N`; tests use `running_fake_openai()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.real_parts import free_port

MODES = {
    "ok",
    "rate_limit",
    "content_policy",
    "bad_request",
    "unauthorized",
    "server_error",
    "slow",
    "url",
    "no_data",
    "garbage_b64",
    "not_image",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def png_bytes(seed: int, side: int = 32) -> bytes:
    """A small noisy PNG, different for every seed."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (side, side))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(side * side)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(size_bytes: int) -> bytes:
    """A PNG of random pixels, about `size_bytes` long (noise does not compress), the same every time."""
    from PIL import Image

    side = max(1, math.ceil(math.sqrt(size_bytes / 3)))
    pixels = random.Random(size_bytes).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class _State:
    mode: dict[str, Any] = field(default_factory=lambda: {"mode": "ok"})
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    last_body: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    # Requests whose client closed the connection before the answer: an abandoned generation.
    disconnected: int = 0
    # Base64 of noise_png(n), by n: a large image is made once, not on every request.
    large_b64: dict[int, str] = field(default_factory=dict)


def _error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def legacy_url(model: str, body: dict[str, Any]) -> bool:
    """Whether a dall-e request gets a URL: they default to one unless asked for base64."""
    return model.startswith("dall-e") and body.get("response_format") != "b64_json"


def _image_answer(body: dict[str, Any], entry: dict[str, Any]) -> JSONResponse:
    """The images JSON around one entry, with its revised prompt and usage."""
    prompt = str(body.get("prompt", ""))
    answer = {
        "created": int(time.time()),
        "data": [{"revised_prompt": f"A detailed picture of {prompt[:100]}", **entry}],
        "usage": {
            "input_tokens": 12,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
            "output_tokens": 272,
            "total_tokens": 284,
        },
    }
    return JSONResponse(answer, headers={"x-request-id": f"req_{uuid.uuid4().hex}"})


def create_app() -> Starlette:
    """The fake server's ASGI app, with its own state."""
    state = _State()

    async def generations(request: Request) -> Response:
        state.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await _answer(request)
        finally:
            state.in_flight -= 1

    async def _answer(request: Request) -> Response:
        body = await request.json()
        state.last_body = body
        settings = state.mode
        mode = settings["mode"]
        times = settings.get("times")
        if times is not None:  # fail this many times, then answer normally
            if times <= 0:
                mode = "ok"
            else:
                settings["times"] = times - 1
        if settings.get("delay_s") and await _client_left_within(request, float(settings["delay_s"])):
            state.disconnected += 1
            return Response(status_code=499)
        auth = request.headers.get("authorization", "")
        if mode == "unauthorized" or not auth.startswith("Bearer "):
            key = auth.removeprefix("Bearer ")
            # Echo the key in full: the service must never pass an upstream message like this on.
            return _error(
                401,
                f"Incorrect API key provided: {key}.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        model = str(body.get("model", ""))
        if model.startswith("gpt-image") and "response_format" in body:
            return _error(
                400,
                "Unknown parameter: 'response_format'.",
                type_="invalid_request_error",
                code="unknown_parameter",
            )
        if mode == "rate_limit":
            headers = {"retry-after": str(settings.get("retry_after", "1"))}
            if "retry_after_ms" in settings:
                headers["retry-after-ms"] = str(settings["retry_after_ms"])
            return _error(
                429,
                "Rate limit reached for images per minute.",
                type_="requests",
                code=settings.get("code", "rate_limit_exceeded"),
                headers=headers,
            )
        if mode == "content_policy":
            return _error(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may contain "
                "text that is not allowed by our safety system.",
                type_=str(settings.get("type", "image_generation_user_error")),
                code=settings.get("code", "content_policy_violation"),
            )
        if mode == "bad_request":
            param = settings.get("param")
            message = f"Invalid value for '{param or 'n'}'."
            return _error(400, message, type_="invalid_request_error", code="invalid_value", param=param)
        if mode == "server_error":
            return _error(
                500, "The server had an error processing your request.", type_="server_error", code=None
            )
        if mode == "no_data":
            return JSONResponse({"created": int(time.time()), "data": []})
        if mode == "garbage_b64":
            return JSONResponse({"created": int(time.time()), "data": [{"b64_json": "not*base64!!"}]})
        if mode == "not_image":
            text = base64.b64encode(b"<html>not an image</html>").decode()
            return JSONResponse({"created": int(time.time()), "data": [{"b64_json": text}]})
        image_bytes = int(settings.get("image_bytes", 0))
        if image_bytes and mode != "url" and not legacy_url(model, body):
            # A large image (the bench's 1 MiB): the same noise every time, encoded once.
            if image_bytes not in state.large_b64:
                state.large_b64[image_bytes] = base64.b64encode(noise_png(image_bytes)).decode()
            return _image_answer(body, {"b64_json": state.large_b64[image_bytes]})
        image = png_bytes(state.requests)
        entry: dict[str, Any] = {}
        if mode == "url" or legacy_url(model, body):
            name = f"{uuid.uuid4().hex}.png"
            state.files[name] = image + b"\0" * int(settings.get("pad_bytes", 0))
            chunked = "?chunked=1" if settings.get("chunked") else ""
            entry["url"] = f"{request.base_url}_files/{name}{chunked}"
        else:
            entry["b64_json"] = base64.b64encode(image).decode()
        return _image_answer(body, entry)

    async def _client_left_within(request: Request, delay_s: float) -> bool:
        """Wait `delay_s`; True as soon as the client closes its connection instead."""
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    async def files(request: Request) -> Response:
        data = state.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        if request.query_params.get("chunked"):

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(data), 1024):
                    yield data[start : start + 1024]

            return StreamingResponse(chunks(), media_type="image/png")
        return Response(data, media_type="image/png")

    async def set_mode(request: Request) -> Response:
        wanted = await request.json()
        if wanted.get("mode", "ok") not in MODES:
            return JSONResponse({"error": f"unknown mode {wanted.get('mode')!r}"}, status_code=400)
        state.mode = {"mode": "ok", **wanted}
        return JSONResponse(state.mode)

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "requests": state.requests,
                "in_flight": state.in_flight,
                "max_in_flight": state.max_in_flight,
                "last_body": state.last_body,
                "disconnected": state.disconnected,
            }
        )

    async def reset(request: Request) -> Response:
        state.mode = {"mode": "ok"}
        state.requests = state.max_in_flight = state.disconnected = 0
        state.last_body = None
        state.files.clear()
        return JSONResponse({"reset": True})

    return Starlette(
        routes=[
            Route("/v1/images/generations", generations, methods=["POST"]),
            Route("/_files/{name}", files, methods=["GET"]),
            Route("/_control/mode", set_mode, methods=["POST"]),
            Route("/_control/stats", stats, methods=["GET"]),
            Route("/_control/reset", reset, methods=["POST"]),
        ]
    )


@dataclass
class FakeOpenAI:
    """A handle on the running fake: its URLs and its control endpoints."""

    url: str

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be set to."""
        return f"{self.url}/v1"

    def reset(self) -> None:
        """Back to normal answers, counters at zero, once no earlier request is still in flight.

        A client that timed out leaves its slow request running here; waiting for it keeps
        it out of the next test's in-flight count.
        """
        self.set_mode("ok")
        deadline = time.monotonic() + 30
        while self.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        httpx.post(f"{self.url}/_control/reset", timeout=5).raise_for_status()

    def set_mode(self, mode: str, **options: Any) -> None:
        """Switch every following generation request to `mode` (see MODES)."""
        httpx.post(f"{self.url}/_control/mode", json={"mode": mode, **options}, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Requests counted, in flight now and at most at once, the last request body."""
        response = httpx.get(f"{self.url}/_control/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def running_fake_openai(log_path: Path | None = None) -> Iterator[FakeOpenAI]:
    """Start the fake in a subprocess, wait until it answers, and stop it afterwards."""
    port = free_port()
    output = log_path.open("ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openai", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    fake = FakeOpenAI(url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the fake OpenAI server exited with {process.returncode}")
            try:
                fake.stats()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the fake OpenAI server did not answer within 30s") from None
                time.sleep(0.05)
        yield fake
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    """Serve the fake on loopback."""
    import uvicorn

    parser = argparse.ArgumentParser(description="fake OpenAI images server for tests")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
