"""A real `pixyproxy serve` whose Redis goes away mid-run and comes back: with `allow` it serves on
unmetered and says so in /readyz and /metrics; with `deny` it refuses with 503; either way the quota
holds again once Redis answers, and the outage is logged once, never with a key.

Redis itself is never stopped (it is shared): the server reaches it through a proxy the test cuts.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.redis import require_redis
from tests.support.server import RunningServer, running_server
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

TAG = uuid.uuid4().hex[:8]  # an owner of its own, so runs sharing one Redis never meet
KEY = f"sk-carol-SECRET-{TAG}"
OWNER = f"carol-{TAG}"


@pytest.fixture
def redis_proxy() -> Iterator[tuple[TcpProxy, str]]:
    url = urlsplit(require_redis())
    with tcp_proxy((url.hostname or "127.0.0.1", url.port or 6379)) as proxy:
        yield proxy, f"redis://127.0.0.1:{proxy.port}{url.path}"


def serve(tmp_path: Path, storage: str, on_error: str) -> Iterator[RunningServer]:
    env = {
        "PIXYPROXY_API_KEYS": f"{OWNER}-{on_error}:{KEY}",
        "PIXYPROXY_GENERATION_RATE": "2/minute",
        "PIXYPROXY_RATE_LIMIT_STORAGE": storage,
        "PIXYPROXY_RATE_LIMIT_ON_ERROR": on_error,
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),
    }
    with running_server(env, tmp_path / "serve.log") as server:
        yield server


def generate(client: httpx.Client) -> httpx.Response:
    return client.post("/image", json={"prompt": "a fox in the rain"})


def ready(client: httpx.Client) -> httpx.Response:
    return client.get("/readyz")


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the series does not exist yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def spend_the_quota(client: httpx.Client) -> None:
    assert [generate(client).status_code for _ in range(2)] == [201, 201]
    refused = generate(client)
    assert refused.status_code == 429, refused.text
    assert ready(client).json()["degraded"] is False


def test_with_allow_an_outage_serves_unmetered_and_the_quota_returns_with_redis(
    tmp_path: Path, redis_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, storage = redis_proxy
    for server in serve(tmp_path, storage, "allow"):
        with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            spend_the_quota(client)

            proxy.cut()
            made = [generate(client) for _ in range(3)]
            assert [m.status_code for m in made] == [201] * 3, [m.text for m in made]
            during = ready(client)
            assert during.status_code == 200
            assert during.json()["ready"] is True
            assert during.json()["degraded"] is True
            allowed = metric(
                client, "pixyproxy_quota_storage_errors_total", quota="generations", decision="allowed"
            )
            assert allowed == 3

            proxy.restore()
            deadline = time.monotonic() + 15
            while ready(client).json()["degraded"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready(client).json()["degraded"] is False
            # The two images counted before the outage are still counted: over quota again.
            assert generate(client).status_code == 429
        logs = server.logs()
    assert logs.count("the generations quota storage failed") == 1  # once per outage, not per request
    assert "quota storage answers again" in logs
    assert KEY not in logs


def test_with_deny_an_outage_refuses_with_503_and_makes_nothing(
    tmp_path: Path, redis_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, storage = redis_proxy
    for server in serve(tmp_path, storage, "deny"):
        with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            before = len(client.get("/image").json())
            proxy.cut()
            refused = generate(client)
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"].endswith("quota-unavailable")
            assert int(refused.headers["retry-after"]) >= 1
            assert ready(client).status_code == 503
            assert len(client.get("/image").json()) == before  # nothing made while it was refused
            refused_count = metric(
                client, "pixyproxy_quota_storage_errors_total", quota="generations", decision="refused"
            )
            assert refused_count == 1

            proxy.restore()
            deadline = time.monotonic() + 15
            while ready(client).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready(client).status_code == 200
            spend_the_quota(client)
        logs = server.logs()
    assert logs.count("the generations quota storage failed") == 1
    assert KEY not in logs
