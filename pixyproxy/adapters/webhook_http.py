"""Webhook delivery over HTTP (httpx), signed as Standard Webhooks (`standardwebhooks`), with the
SSRF guard: a destination that is or resolves to a loopback, private, link-local or multicast
address is refused before any connection is attempted, and the connection goes to the address that
was checked (a second DNS answer never gets a say)."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from pixyproxy.domain.exceptions import WebhookRefusedError
from pixyproxy.ports import SendResult

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 5.0
USER_AGENT = "PixyProxy-Webhooks/1"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IpAddress) -> bool:
    """Whether an address may be called: not loopback, private, link-local, multicast or otherwise special."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class HttpWebhookSender:
    """Signs and POSTs webhook bodies; one httpx client, no redirects followed."""

    def __init__(self, *, secret: str | None, timeout_s: float, allow_private: bool) -> None:
        # The secret stays inside the Webhook signer: it is never logged, shown or sent.
        self._signer = Webhook(secret) if secret else None
        self._allow_private = allow_private
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, headers={"user-agent": USER_AGENT}
        )

    def __repr__(self) -> str:
        signing = "on" if self._signer else "off"
        return f"HttpWebhookSender(signing={signing}, allow_private={self._allow_private})"

    @property
    def can_sign(self) -> bool:
        """Whether a secret is configured."""
        return self._signer is not None

    async def check_destination(self, url: str) -> None:
        """Refuse private destinations, resolving the host name first (DNS can point anywhere)."""
        await self._checked_addresses(url)

    async def _checked_addresses(self, url: str) -> list[IpAddress]:
        """The host's addresses once every one is public (none to check when private ones are allowed)."""
        if self._allow_private:
            return []
        host = urlsplit(url).hostname or ""
        addresses = await self._addresses_of(host, url)
        for address in addresses:
            if not is_public(address):
                raise WebhookRefusedError(
                    url, f"the webhook's host {host} is a loopback, private, link-local or multicast address"
                )
        return addresses

    async def _addresses_of(self, host: str, url: str) -> list[IpAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as err:
            raise WebhookRefusedError(url, f"the webhook's host {host} cannot be resolved") from err
        addresses: list[IpAddress] = []
        for *_, sockaddr in found:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        return addresses

    async def send(self, url: str, *, webhook_id: str, timestamp: datetime, body: str) -> SendResult:
        """One attempt: checked, signed with its own timestamp, POSTed; every outcome is a SendResult."""
        if self._signer is None:
            return SendResult(None, "not sent: no signing secret is configured")
        try:
            addresses = await self._checked_addresses(url)
        except WebhookRefusedError as err:
            return SendResult(None, f"refused: {err}")
        moment = timestamp.astimezone(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, moment, body),
        }
        target, extensions = url, dict[str, str]()
        if addresses:
            # Connect to the address just checked, never to what a second lookup might answer (DNS
            # rebinding); the name still goes in Host and, for https, in SNI and the certificate check.
            target, host_header, extensions = _pinned(url, addresses[0])
            headers["host"] = host_header
            if extensions:
                # The pool knows connections by address, not by name: a TLS connection verified for
                # one name must not carry the next delivery to another name at the same address.
                headers["connection"] = "close"
        try:
            response = await self._client.post(
                target, content=body.encode(), headers=headers, extensions=extensions
            )
        except httpx.TimeoutException:
            return SendResult(None, "timeout")
        except httpx.HTTPError as err:
            return SendResult(None, f"connection failed: {type(err).__name__}")
        return SendResult(
            response.status_code,
            f"HTTP {response.status_code}",
            retry_after_s=_retry_after_s(response.headers.get("retry-after")),
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _pinned(url: str, address: IpAddress) -> tuple[str, str, dict[str, str]]:
    """`url` aimed at `address`: the URL to connect to, the Host header, and the request extensions
    that keep TLS verifying the certificate against the name (httpcore's `sni_hostname`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = literal + port
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    host_header = (f"[{host}]" if ":" in host else host) + port
    return parts._replace(netloc=netloc).geturl(), host_header, extensions


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
