"""The HTTP webhook sender against a real receiver on loopback that verifies with `standardwebhooks`;
and the SSRF guard, which refuses private destinations before any connection is attempted."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from standardwebhooks import Webhook

from pixyproxy.adapters.webhook_http import HttpWebhookSender
from pixyproxy.domain.exceptions import WebhookRefusedError
from pixyproxy.domain.models import utc_now
from tests.support.webhook_receiver import TEST_SECRET, WebhookReceiver, webhook_receiver

BODY = json.dumps(
    {"type": "image.job.succeeded", "timestamp": "2026-11-28T19:00:00+00:00", "data": {"id": "x"}}
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
async def sender() -> AsyncIterator[HttpWebhookSender]:
    """A sender allowed to call loopback, where the test receiver listens."""
    running = HttpWebhookSender(secret=TEST_SECRET, timeout_s=2, allow_private=True)
    yield running
    await running.close()


async def test_a_delivery_verifies_with_standardwebhooks(
    sender: HttpWebhookSender, receiver: WebhookReceiver
) -> None:
    result = await sender.send(receiver.url, webhook_id="msg_1", timestamp=utc_now(), body=BODY)
    assert result.status_code == 204
    [delivery] = receiver.deliveries()
    assert delivery.verified
    assert delivery.payload == json.loads(BODY)
    assert delivery.headers["webhook-id"] == "msg_1"
    assert delivery.headers["content-type"] == "application/json"
    assert TEST_SECRET not in str(delivery.headers)


async def test_a_wrong_secret_or_a_tampered_body_is_rejected_by_the_receiver(
    receiver: WebhookReceiver,
) -> None:
    other = HttpWebhookSender(
        secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", timeout_s=2, allow_private=True
    )
    try:
        result = await other.send(receiver.url, webhook_id="msg_2", timestamp=utc_now(), body=BODY)
    finally:
        await other.close()
    assert result.status_code == 400
    assert not receiver.deliveries()[0].verified
    # A signature over one body does not verify another.
    now = utc_now()
    signature = Webhook(TEST_SECRET).sign("msg_3", now, BODY)
    headers = {
        "webhook-id": "msg_3",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    with pytest.raises(Exception, match="signature"):
        Webhook(TEST_SECRET).verify(BODY.replace("x", "y"), headers)


async def test_a_redirect_is_not_followed(sender: HttpWebhookSender, receiver: WebhookReceiver) -> None:
    receiver.statuses = [307]
    result = await sender.send(receiver.url, webhook_id="msg_4", timestamp=utc_now(), body=BODY)
    assert result.status_code == 307
    assert len(receiver.deliveries()) == 1


async def test_a_receiver_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts, never answers
        port = silent.getsockname()[1]
        sender = HttpWebhookSender(secret=TEST_SECRET, timeout_s=0.5, allow_private=True)
        try:
            result = await sender.send(
                f"http://127.0.0.1:{port}/", webhook_id="m", timestamp=utc_now(), body=BODY
            )
        finally:
            await sender.close()
    assert result.status_code is None
    assert result.detail == "timeout"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "[::1]",
        "169.254.169.254",
        "localhost",
        "192.168.1.1",
        "[::ffff:127.0.0.1]",
        "224.0.0.1",
    ],
)
async def test_private_destinations_are_refused_without_a_connection(host: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as trap:
        trap.settimeout(0.2)
        port = trap.getsockname()[1]
        url = f"http://{host}:{port}/hook"
        guarded = HttpWebhookSender(secret=TEST_SECRET, timeout_s=2, allow_private=False)
        try:
            with pytest.raises(WebhookRefusedError):
                await guarded.check_destination(url)
            result = await guarded.send(url, webhook_id="m", timestamp=utc_now(), body=BODY)
        finally:
            await guarded.close()
        assert result.status_code is None
        assert result.detail.startswith("refused")
        with pytest.raises(TimeoutError):
            trap.accept()  # nobody connected


async def test_a_public_address_passes_the_guard() -> None:
    guarded = HttpWebhookSender(secret=TEST_SECRET, timeout_s=2, allow_private=False)
    try:
        await guarded.check_destination("https://93.184.216.34/hook")
    finally:
        await guarded.close()


async def test_nothing_is_sent_without_a_secret(receiver: WebhookReceiver) -> None:
    unsigned = HttpWebhookSender(secret=None, timeout_s=2, allow_private=True)
    try:
        result = await unsigned.send(receiver.url, webhook_id="m", timestamp=utc_now(), body=BODY)
    finally:
        await unsigned.close()
    assert result.status_code is None
    assert receiver.deliveries() == []
