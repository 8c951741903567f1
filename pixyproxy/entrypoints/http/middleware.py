"""Request middleware: the request id, START/END log lines, request metrics, the body cap, and the
last-resort catch."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixyproxy.domain.exceptions import RequestTooLargeError
from pixyproxy.domain.models import ANONYMOUS
from pixyproxy.entrypoints.http.auth import caller_of
from pixyproxy.entrypoints.http.problems import exception_to_response
from pixyproxy.entrypoints.logging_setup import current_request_id, line_writer, new_request_id
from pixyproxy.entrypoints.metrics import Metrics

log = logging.getLogger("pixyproxy.request")

MAX_CLIENT_REQUEST_ID = 200


class RequestContextMiddleware:
    """Gives each request its id, logs and meters its outcome, caps its body and answers any stray error.

    Outermost of PixyProxy's middleware, it sees every final status, auth refusals included.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; lifespan and websocket scopes pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one HTTP request inside its request-id context."""
        request_id = new_request_id()
        token = current_request_id.set(request_id)
        method, path = scope["method"], scope["path"]
        client_id, declared = _client_headers(scope)  # one pass: Starlette's Headers cost more here
        client_id = client_id[:MAX_CLIENT_REQUEST_ID]
        info = line_writer(log, logging.INFO)  # once a request: None below INFO
        if info is None:
            pass
        elif client_id:  # the formatter escapes whatever controls it carries
            info("REQUEST START %s %s client-request-id=%r", method, path, client_id)
        else:
            info("REQUEST START %s %s", method, path)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            # the Content-Length the client declared, read above with X-Request-ID
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise RequestTooLargeError(self.max_body_bytes)
            await self.app(scope, self._capped(receive), send_with_id)
        except Exception as exc:
            if response_started:
                log.exception("error after the response started")
            else:
                await exception_to_response(exc, instance=path)(scope, receive, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            owner = caller_of(scope).name  # the key's name, never the key
            elapsed_ms = elapsed_s * 1000
            if info is None:
                pass
            elif owner == ANONYMOUS:  # no keys configured: the seed's line exactly
                info("REQUEST END %s %s %d %.1fms", method, path, status, elapsed_ms)
            else:
                info("REQUEST END %s %s %d %.1fms owner=%s", method, path, status, elapsed_ms, owner)
            self._metrics.observe_request(scope, status, elapsed_s, owner=owner)
            current_request_id.reset(token)

    def _capped(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive; past the cap, stop reading and refuse the request."""
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestTooLargeError(self.max_body_bytes)
            return message

        return receive_capped


def _client_headers(scope: Scope) -> tuple[str, str | None]:
    """X-Request-ID ("" when absent) and Content-Length (None when absent), each the first one sent,
    as Starlette's `Headers.get` reads them (ASGI servers give header names in lower case)."""
    client_id: str | None = None
    declared: str | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if client_id is None:
                client_id = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    return client_id or "", declared
