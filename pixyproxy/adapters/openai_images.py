"""Images from OpenAI's images API, or any OpenAI-compatible server, through the AsyncOpenAI SDK.

Retry policy: the SDK's own retries are off (max_retries=0). A retried timeout or 5xx may be
billed twice (the upstream may have finished the image we never received), so this adapter
retries only failures that cannot have been billed: a connection that was never established,
and 429 (the upstream refused the request before doing any work). Timeouts are answered as
GeneratorUnavailableError, so HTTP 503 rather than 504: clients get one "retry later" status for
every unavailable upstream, whatever the cause. They are never retried.
"""

from __future__ import annotations

import asyncio
import binascii
import email.utils
import io
import logging
import time
from collections.abc import Mapping

import httpx2
import openai
import pybase64
from openai.types import ImagesResponse
from PIL import Image, UnidentifiedImageError

from pixyproxy.domain.exceptions import (
    GeneratorAuthenticationError,
    GeneratorBadResponseError,
    GeneratorRateLimitedError,
    GeneratorUnavailableError,
    ImageGenerationException,
    InvalidRequestError,
    PromptRejectedError,
)
from pixyproxy.domain.models import GeneratedImage, GenerationInfo, GenerationOptions, sniff_content_type

log = logging.getLogger(__name__)

NAME = "openai"
# Codes OpenAI gives a prompt its safety system refused; the user can rephrase and retry.
_POLICY_CODES = {"content_policy_violation", "moderation_blocked"}
_MAX_DETAIL_CHARS = 300


class OpenAIImageGenerator:
    """One image per prompt from an OpenAI-compatible images endpoint."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-image-2.5-flare",
        size: str = "1024x1024",
        quality: str = "auto",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        max_download_bytes: int = 20 * 1024 * 1024,
        retry_backoff_s: float = 0.5,
        max_retry_wait_s: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self._model = model
        self._size = size
        self._quality = quality
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._max_download_bytes = max_download_bytes
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_wait_s = max_retry_wait_s
        # max_retries=0: the SDK would retry timeouts and 5xx, which may be billed twice.
        # Idle connections are dropped after 2 s: a server closing an idle keep-alive connection
        # just as we reuse it fails the request without an answer, a failure we must not retry
        # (it cannot be told from a crash mid-generation). Servers keep idle connections longer
        # than 2 s (uvicorn 5 s, most proxies a minute), so we always close first.
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=timeout_s,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=1000, max_keepalive_connections=100, keepalive_expiry=2.0
                )
            ),
        )
        # A separate client for image URLs, so the API key is never sent to a storage host.
        self._downloads = httpx2.AsyncClient(timeout=timeout_s, follow_redirects=True, max_redirects=3)

    def __repr__(self) -> str:
        return f"OpenAIImageGenerator(model={self._model!r}, size={self._size!r})"

    @property
    def name(self) -> str:
        """Provenance name recorded on every image."""
        return NAME

    async def generate(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        """Ask the upstream for one image, retrying only what cannot have been billed."""
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                image = await self._generate_once(prompt, options=options)
                break
            except openai.OpenAIError as err:
                delay = self._retry_delay(err, attempt)
                if delay is None:
                    raise self._translate(err, user_size=options.size is not None) from err
                failure = type(err).__name__
            attempt += 1
            log.warning("openai: %s, retry %d of %d in %.2fs", failure, attempt, self._max_retries, delay)
            await asyncio.sleep(delay)
        latency_ms = (time.perf_counter() - started) * 1000
        return image.model_copy(
            update={"generation": image.generation.model_copy(update={"latency_ms": latency_ms})}
        )

    async def close(self) -> None:
        """Close both HTTP clients."""
        await self._client.close()
        await self._downloads.aclose()

    async def _generate_once(self, prompt: str, *, options: GenerationOptions) -> GeneratedImage:
        # gpt-image-* always answer base64 and refuse response_format with a 400; the retired
        # dall-e models default to a URL, so they are asked for base64 explicitly.
        legacy = self._model.startswith("dall-e")
        extra: dict[str, str] = {"response_format": "b64_json"} if legacy else {}
        if not (legacy and self._quality == "auto"):  # dall-e knows only standard and hd
            extra["quality"] = self._quality
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._client.images.with_raw_response.generate(
                    prompt=prompt,
                    model=self._model,
                    n=1,
                    size=options.size or self._size,
                    extra_body=extra,
                )
        except TimeoutError as err:  # our own deadline over the whole call, not a phase of it
            raise GeneratorUnavailableError(f"no answer within {self._timeout_s:g}s") from err
        request_id = raw.headers.get("x-request-id")
        try:
            parsed = raw.parse()
        except (ValueError, TypeError) as err:
            raise GeneratorBadResponseError("the answer is not the images JSON") from err
        if not isinstance(parsed, ImagesResponse):
            raise GeneratorBadResponseError("the answer is not the images JSON")
        entries = parsed.data
        if not isinstance(entries, list) or not entries:
            raise GeneratorBadResponseError("the answer holds no image")
        entry = entries[0]
        data = await self._image_bytes(entry)
        revised = getattr(entry, "revised_prompt", None)
        generation = GenerationInfo(
            generator=NAME,
            model=self._model,
            revised_prompt=revised if isinstance(revised, str) else None,
            upstream_request_id=request_id,
            usage=_usage(parsed),
        )
        # The answer's body and its base64 text (2.8 MB for a 1 MiB image) go before the check, not
        # after it: with generations in flight at once, they set the worker's peak RSS (figure 5).
        del raw, parsed, entries, entry
        content_type = await asyncio.to_thread(_verified_type, data)
        return GeneratedImage(data=data, content_type=content_type, generation=generation)

    async def _image_bytes(self, entry: object) -> bytes:
        b64 = getattr(entry, "b64_json", None)
        if isinstance(b64, str) and b64:
            if len(b64) // 4 * 3 > self._max_download_bytes:
                raise GeneratorBadResponseError(f"the image is larger than {self._max_download_bytes} bytes")
            try:
                # pybase64 (SIMD): a 1 MiB image in 0.06 ms, where base64.b64decode took 3.7 ms of the
                # event loop's time, the largest single cost of a generation (make bench figure 3-cpu).
                # The same strict check: only the alphabet, padding only at the end.
                return pybase64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as err:
                raise GeneratorBadResponseError("the image is not valid base64") from err
        url = getattr(entry, "url", None)
        if isinstance(url, str) and url:
            return await self._download(url)
        raise GeneratorBadResponseError("the answer holds neither image data nor a URL")

    async def _download(self, url: str) -> bytes:
        """Fetch an image URL the upstream gave, refusing more than max_download_bytes."""
        if not url.startswith(("https://", "http://")):
            raise GeneratorBadResponseError("the image URL is not http(s)")
        limit = self._max_download_bytes
        try:
            async with self._downloads.stream("GET", url) as response:
                if response.status_code != 200:
                    raise GeneratorBadResponseError(f"the image URL answered {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise GeneratorBadResponseError(f"the image is larger than {limit} bytes")
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise GeneratorBadResponseError(f"the image is larger than {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx2.TimeoutException as err:
            raise GeneratorUnavailableError("the image download timed out") from err
        except httpx2.HTTPError as err:
            raise GeneratorUnavailableError("the image download failed") from err

    def _retry_delay(self, err: openai.OpenAIError, attempt: int) -> float | None:
        """Seconds to wait before retrying `err`, or None when it must not be retried."""
        if attempt >= self._max_retries:
            return None
        backoff = self._retry_backoff_s * 2.0**attempt
        if isinstance(err, openai.RateLimitError):
            if err.code == "insufficient_quota":  # a billing limit: waiting will not lift it
                return None
            hint = retry_after_s(err.response.headers)
            if hint is None:
                return backoff
            return hint if hint <= self._max_retry_wait_s else None
        if isinstance(err, openai.APITimeoutError):
            return None
        if isinstance(err, openai.APIConnectionError) and isinstance(err.__cause__, httpx2.ConnectError):
            return backoff  # the connection was never made, so the upstream never saw the request
        return None

    def _translate(self, err: openai.OpenAIError, *, user_size: bool) -> ImageGenerationException:
        """The domain exception for an SDK error; no message carries the API key."""
        if isinstance(err, openai.RateLimitError):
            return GeneratorRateLimitedError(
                "the upstream is rate limiting PixyProxy (429)",
                retry_after_s=retry_after_s(err.response.headers),
            )
        if isinstance(err, openai.BadRequestError):
            message = self._scrub(err.message)
            if _is_policy_refusal(err):
                return PromptRejectedError(
                    "the upstream's safety system refused it; rephrase the prompt and try again "
                    f"(upstream said: {message})"
                )
            if user_size and err.param == "size":
                return InvalidRequestError(
                    f"the generator does not accept this size: {message}", field="size"
                )
            log.warning("openai: 400 %s: %s", err.code, message)
            return GeneratorBadResponseError(
                f"the upstream refused the request (400 {err.code or ''})".strip()
            )
        if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
            log.warning("openai: the upstream refused PixyProxy's API key (%d)", err.status_code)
            return GeneratorAuthenticationError()
        if isinstance(err, openai.APIStatusError):
            if err.status_code >= 500:
                return GeneratorUnavailableError(
                    f"the upstream answered {err.status_code}",
                    retry_after_s=retry_after_s(err.response.headers),
                )
            log.warning("openai: %d %s: %s", err.status_code, err.code, self._scrub(err.message))
            return GeneratorBadResponseError(f"the upstream answered {err.status_code}")
        if isinstance(err, openai.APITimeoutError):
            return GeneratorUnavailableError(f"no answer within {self._timeout_s:g}s")
        if isinstance(err, openai.APIConnectionError):
            cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
            return GeneratorUnavailableError(f"cannot reach the upstream ({cause})")
        return GeneratorBadResponseError(f"unusable answer ({type(err).__name__})")

    def _scrub(self, text: str) -> str:
        """Upstream text, without the API key, short enough for a problem detail."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:_MAX_DETAIL_CHARS]


def _is_policy_refusal(err: openai.BadRequestError) -> bool:
    """Whether a 400 is the safety system refusing the prompt."""
    if err.code in _POLICY_CODES:
        return True
    return "safety system" in err.message.lower()


def _verified_type(data: bytes) -> str:
    """The content type read from the bytes, after Pillow has checked they decode."""
    content_type = sniff_content_type(data)
    if content_type is None:
        raise GeneratorBadResponseError("the bytes are not a PNG, JPEG or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise GeneratorBadResponseError("the image bytes do not decode") from err
    return content_type


def _usage(parsed: ImagesResponse) -> dict[str, int] | None:
    """Token usage flattened to name -> count, when the upstream reported it."""
    usage = getattr(parsed, "usage", None)
    if usage is None or not hasattr(usage, "model_dump"):
        return None
    flat: dict[str, int] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        elif isinstance(node, int) and not isinstance(node, bool):
            flat[prefix.rstrip(".")] = node

    walk("", usage.model_dump())
    return flat or None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asked us to wait: retry-after-ms, retry-after seconds or HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
