"""A webhook receiver for tests: a real HTTP server on loopback that verifies every delivery with the
`standardwebhooks` package, as a customer's receiver would, and answers as a test scripts it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.real_parts import free_port

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Delivery:
    """One request the receiver got."""

    headers: dict[str, str]
    body: str
    verified: bool
    payload: dict[str, Any] | None
    at: float


@dataclass
class WebhookReceiver:
    """The receiver's record and its script: `statuses` are answered in order, then `default_status`."""

    port: int
    secret: str = TEST_SECRET
    statuses: list[int] = field(default_factory=list)
    default_status: int = 204
    retry_after: str | None = None
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Where to point a job's webhook."""
        return f"http://127.0.0.1:{self.port}/hooks"

    def deliveries(self) -> list[Delivery]:
        """What has arrived so far."""
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, *, timeout_s: float = 20) -> list[Delivery]:
        """At least `count` deliveries, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(got := self.deliveries()) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.deliveries())} webhook deliveries arrived, expected {count}")

    def app(self) -> Starlette:
        """The receiver's ASGI app."""
        verifier = Webhook(self.secret)

        async def hooks(request: Request) -> Response:
            body = (await request.body()).decode()
            headers = dict(request.headers)
            try:
                payload = verifier.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                payload, verified = None, False
            with self.lock:
                self.received.append(Delivery(headers, body, verified, payload, time.monotonic()))
                status = self.statuses.pop(0) if self.statuses else self.default_status
            extra = {"retry-after": self.retry_after} if self.retry_after and status >= 400 else {}
            return Response(status_code=status if verified else 400, headers=extra)

        return Starlette(routes=[Route("/hooks", hooks, methods=["POST"])])


@contextmanager
def webhook_receiver(*, port: int | None = None) -> Iterator[WebhookReceiver]:
    """A running receiver for the block (a uvicorn server in a thread), stopped after."""
    receiver = WebhookReceiver(port=port or free_port())
    config = uvicorn.Config(
        receiver.app(), host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the webhook receiver did not start"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
