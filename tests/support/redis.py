"""The real Redis the quota tests share: 127.0.0.1:6379 unless PIXYPROXY_TEST_REDIS_URL says otherwise."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from tests.support.real_parts import missing_real_part

START_HINT = (
    'start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
)


def redis_url() -> str:
    """The Redis URL the tests use (database 15, away from a developer's own data)."""
    return os.environ.get("PIXYPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_redis() -> str:
    """The Redis URL, after checking Redis answers PING; fails in CI, skips elsewhere."""
    url = redis_url()
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise OSError("no PONG")
    except OSError:
        missing_real_part(f"Redis at {url}", START_HINT)
    return url
