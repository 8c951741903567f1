"""Optional bearer API-key authentication, on when PIXYPROXY_API_KEYS names any key."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pixyproxy.domain.exceptions import AuthenticationRequiredError

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class ApiKeyMiddleware:
    """Refuses every request but the health probes unless it carries `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, *, keys: list[str]) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, then pass the request on."""
        if scope["type"] == "http" and self._keys and scope["path"] not in OPEN_PATHS:
            self._authenticate(Headers(scope=scope).get("authorization", ""))
        await self.app(scope, receive, send)

    def _authenticate(self, authorization: str) -> None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationRequiredError()
        candidate = presented.strip().encode()
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise AuthenticationRequiredError("the API key is not valid")
