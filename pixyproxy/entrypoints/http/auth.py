"""Optional bearer API-key authentication, on when PIXYPROXY_API_KEYS or PIXYPROXY_API_KEYS_FILE
names any key. The file's keys are re-read by `reload_api_keys` (on SIGHUP), swapped in whole.

The caller the key identifies (its name, whether it is an administrator; never the key) is put in
the request's scope state as `caller`, where routes read it with `current_caller`.
"""

from __future__ import annotations

import hmac
import logging

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pixyproxy.domain.exceptions import AuthenticationRequiredError
from pixyproxy.entrypoints.api_keys import (
    ANONYMOUS_CALLER,
    Caller,
    KeyRing,
    NamedKey,
    combine_keys,
    read_api_keys_file,
)

log = logging.getLogger(__name__)

# The gallery page and its files hold no data; the page asks for a key before it calls the API.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})
OPEN_PREFIXES = ("/static/",)


class ApiKeyMiddleware:
    """Refuses every request but the health probes unless it carries `Authorization: Bearer <key>`."""

    def __init__(
        self, app: ASGIApp, *, keys: list[NamedKey] | None = None, ring: KeyRing | None = None
    ) -> None:
        self.app = app
        self._ring = ring if ring is not None else KeyRing(keys or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, note who it names, then pass the request on."""
        path = scope["path"] if scope["type"] == "http" else ""
        if path and self._ring.entries and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
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
        for key, caller in self._ring.entries:
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


def reload_api_keys(ring: KeyRing, inline: list[NamedKey], path: str) -> bool:
    """Re-read the keys file and swap `inline` plus its keys into `ring`. A file that fails
    validation, or that would leave no key at all (authentication silently off), keeps the old
    keys and logs one warning, which names no key. Returns whether the new keys took effect."""
    try:
        keys = combine_keys(inline, read_api_keys_file(path))
    except ValueError as err:
        log.warning("PIXYPROXY_API_KEYS_FILE not reloaded, the old keys stay: %s", err)
        return False
    if not keys and ring.entries:
        log.warning("PIXYPROXY_API_KEYS_FILE not reloaded, the old keys stay: it names no key")
        return False
    ring.replace(keys)
    log.info("PIXYPROXY_API_KEYS_FILE reloaded: %d keys", len(keys))
    return True
