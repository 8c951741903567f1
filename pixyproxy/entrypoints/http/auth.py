"""Optional bearer API-key authentication, on when PIXYPROXY_API_KEYS names any key.

The caller the key identifies (its name, whether it is an administrator; never the key) is put in
the request's scope state as `caller`, where routes read it with `current_caller`.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pixyproxy.domain.exceptions import AuthenticationRequiredError
from pixyproxy.entrypoints.api_keys import ANONYMOUS_CALLER, Caller, NamedKey

# The gallery page and its files hold no data; the page asks for a key before it calls the API.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})
OPEN_PREFIXES = ("/static/",)


class ApiKeyMiddleware:
    """Refuses every request but the health probes unless it carries `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, *, keys: list[NamedKey]) -> None:
        self.app = app
        self._keys = [(key.key.encode(), key.caller) for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, note who it names, then pass the request on."""
        path = scope["path"] if scope["type"] == "http" else ""
        if path and self._keys and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            caller = self._authenticate(Headers(scope=scope).get("authorization", ""))
            scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _authenticate(self, authorization: str) -> Caller:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationRequiredError()
        candidate = presented.strip().encode()
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        found: Caller | None = None
        for key, caller in self._keys:
            if hmac.compare_digest(candidate, key):
                found = caller
        if found is None:
            raise AuthenticationRequiredError("the API key is not valid")
        return found


def caller_of(scope: Scope) -> Caller:
    """The caller of a request: the key's, or `anonymous` when authentication is off."""
    caller = scope.get("state", {}).get("caller")
    return caller if isinstance(caller, Caller) else ANONYMOUS_CALLER


def current_caller(request: Request) -> Caller:
    """A FastAPI dependency: the caller of this request."""
    return caller_of(request.scope)
