"""The HTTP webhook sender against a real receiver on loopback that verifies with `standardwebhooks`;
and the SSRF guard, which refuses private destinations before any connection is attempted."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from standardwebhooks import Webhook

from pixyproxy.adapters import webhook_http
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


async def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DNS server that rebinds: the check's lookup says loopback (allowed here, as if public), any
    # later one says 10.66.66.66. `rebind.invalid` resolves nowhere else, so the delivery arrives only
    # if the connection went to the address the guard checked, without a second lookup.
    lookups: list[str] = []

    async def rebinding(self: HttpWebhookSender, host: str, url: str) -> list[webhook_http.IpAddress]:
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1" if len(lookups) == 1 else "10.66.66.66")]

    monkeypatch.setattr(HttpWebhookSender, "_addresses_of", rebinding)
    monkeypatch.setattr(webhook_http, "is_public", lambda address: str(address) == "127.0.0.1")
    guarded = HttpWebhookSender(secret=TEST_SECRET, timeout_s=2, allow_private=False)
    parts = urlsplit(receiver.url)
    port = parts.port
    try:
        result = await guarded.send(
            parts._replace(netloc=f"rebind.invalid:{port}").geturl(),
            webhook_id="msg_pin",
            timestamp=utc_now(),
            body=BODY,
        )
    finally:
        await guarded.close()
    assert result.status_code == 204, result.detail
    assert lookups == ["rebind.invalid"]  # one lookup: the one that was checked
    [delivery] = receiver.deliveries()
    assert delivery.verified
    assert delivery.headers["host"] == f"rebind.invalid:{port}"


@pytest.mark.parametrize(
    ("url", "address", "pinned", "host", "sni"),
    [
        ("http://hooks.example/a?b=1", "93.184.216.34", "http://93.184.216.34/a?b=1", "hooks.example", None),
        (
            "https://hooks.example:8443/a",
            "93.184.216.34",
            "https://93.184.216.34:8443/a",
            "hooks.example:8443",
            "hooks.example",
        ),
        (
            "https://hooks.example/a",
            "2606:2800:220:1::1",
            "https://[2606:2800:220:1::1]/a",
            "hooks.example",
            "hooks.example",
        ),
    ],
)
def test_a_pinned_url_keeps_the_name_for_host_and_tls(
    url: str, address: str, pinned: str, host: str, sni: str | None
) -> None:
    target, host_header, extensions = webhook_http._pinned(url, ipaddress.ip_address(address))
    assert target == pinned
    assert host_header == host
    assert extensions.get("sni_hostname") == sni
