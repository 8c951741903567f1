"""The request quota, and the RateLimit-Policy / RateLimit headers on every answer.

Headers follow draft-ietf-httpapi-ratelimit-headers in its structured-field form (draft 08 on):
each window is a named policy, `RateLimit-Policy: "generations-1minute";q=20;w=60`, and
`RateLimit: "generations-1minute";r=17;t=42` says what is left (`r`) and in how many seconds the
window frees units again (`t`). The generation quota is spent by the use-case that knows the cost;
this layer only spends one request per request and reports both.
"""

from __future__ import annotations

import math

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixyproxy.domain.exceptions import ImageGenerationException, QuotaExceededError, QuotaUnavailableError
from pixyproxy.entrypoints.http.auth import OPEN_PATHS, OPEN_PREFIXES, caller_of
from pixyproxy.entrypoints.http.problems import exception_to_response
from pixyproxy.ports.quota import QuotaDecision, QuotaGate, QuotaWindow


def policy_header(windows: list[QuotaWindow]) -> str:
    """The RateLimit-Policy value of these windows."""
    return ", ".join(f'"{w.name}";q={w.limit};w={w.window_s}' for w in windows)


def ratelimit_header(windows: list[QuotaWindow]) -> str:
    """The RateLimit value of these windows."""
    return ", ".join(f'"{w.name}";r={w.remaining};t={math.ceil(w.reset_s)}' for w in windows)


class QuotaMiddleware:
    """Spends one unit of the caller's request quota (429 when none is left) and adds the RateLimit
    headers of both quotas to every answer. Sits inside the key check, which names the caller."""

    def __init__(self, app: ASGIApp, *, requests: QuotaGate, generations: QuotaGate) -> None:
        self.app = app
        self._requests = requests
        self._generations = generations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Take one request unit, then answer with the quota headers added."""
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        owner = caller_of(scope).name
        taken = await self._requests.take(owner, 1)
        if not taken.allowed:
            refusal: ImageGenerationException = (
                QuotaUnavailableError("request")  # storage down, policy deny: 503, not the caller's fault
                if taken.degraded
                else QuotaExceededError(
                    owner, quota="request", cost=1, remaining=0, retry_after_s=max(taken.retry_after_s, 1.0)
                )
            )
            response = exception_to_response(refusal, instance=path)
            response.headers.update(await self._headers(owner, taken))
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Read now, after the use-case has spent what the request cost.
                MutableHeaders(scope=message).update(await self._headers(owner, taken))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _headers(self, owner: str, taken: QuotaDecision) -> dict[str, str]:
        windows = list(taken.windows)
        if self._generations.configured:
            windows += (await self._generations.peek(owner)).windows
        if not windows:
            return {}
        return {"RateLimit-Policy": policy_header(windows), "RateLimit": ratelimit_header(windows)}
