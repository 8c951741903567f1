"""Two real `pixyproxy serve` processes share one generation quota through a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.redis import require_redis
from tests.support.server import RunningServer, running_server

TAG = uuid.uuid4().hex[:8]  # owners of their own, so runs sharing one Redis never meet
ALICE_KEY, BOB_KEY = f"sk-alice-SECRET-{TAG}", f"sk-bob-SECRET-{TAG}"
ALICE, BOB = f"alice-{TAG}", f"bob-{TAG}"
WINDOW_S = 10


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    redis_url = require_redis()
    root = tmp_path_factory.mktemp("shared-quota")
    env = {
        "PIXYPROXY_API_KEYS": f"{ALICE}:{ALICE_KEY},{BOB}:{BOB_KEY}",
        "PIXYPROXY_TENANT_ISOLATION": "true",
        "PIXYPROXY_GENERATION_RATE": f"3/{WINDOW_S}second",
        "PIXYPROXY_RATE_LIMIT_STORAGE": redis_url,
    }
    with (
        running_server({**env, "PIXYPROXY_DATA_DIR": str(root / "a")}, root / "a.log") as first,
        running_server({**env, "PIXYPROXY_DATA_DIR": str(root / "b")}, root / "b.log") as second,
    ):
        yield first, second


def generate(server: RunningServer, key: str) -> httpx.Response:
    with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        return client.post("/image", json={"prompt": "a shared fox"})


def test_one_quota_holds_across_both_servers_and_resets(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    made = [generate(first, ALICE_KEY), generate(second, ALICE_KEY), generate(first, ALICE_KEY)]
    assert [m.status_code for m in made] == [201, 201, 201], [m.text for m in made]
    assert {m.json()["owner"] for m in made} == {ALICE}
    # The 4th image is refused on either server: the count lives in Redis, not in a process.
    for server in (first, second):
        refused = generate(server, ALICE_KEY)
        assert refused.status_code == 429, refused.text
        assert refused.json()["type"].endswith("rate-limited")
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_S
        assert f'"generations-{WINDOW_S}second";r=0;' in refused.headers["ratelimit"]
    # Another owner has a quota of its own.
    other = generate(second, BOB_KEY)
    assert other.status_code == 201
    assert f'"generations-{WINDOW_S}second";r=2;' in other.headers["ratelimit"]
    # Once the window has moved past the first images, the owner may generate again.
    time.sleep(int(generate(first, ALICE_KEY).headers["retry-after"]) + 0.5)
    again = generate(second, ALICE_KEY)
    assert again.status_code == 201, again.text


def test_keys_never_reach_the_logs(two_servers: tuple[RunningServer, RunningServer]) -> None:
    first, second = two_servers
    generate(first, ALICE_KEY)
    generate(second, "sk-wrong-SECRET-key")
    for server in (first, second):
        logs = server.logs()
        assert "REQUEST END POST /image" in logs
        for secret in (ALICE_KEY, BOB_KEY, "sk-wrong-SECRET-key"):
            assert secret not in logs
    assert f"owner={ALICE}" in first.logs() + second.logs()
