"""The QuotaGate contract, run against the `limits` adapter on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from pixyproxy.adapters.quota_limits import LimitsQuotaGate, limits_storage
from pixyproxy.domain.exceptions import QuotaUnavailableError
from pixyproxy.ports.quota import QuotaGate
from tests.support.redis import require_redis


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else require_redis()


@pytest.fixture
async def gate(storage_uri: str) -> AsyncIterator[QuotaGate]:
    # A scope of its own per test, so runs sharing one Redis never see each other's counts.
    quota = LimitsQuotaGate(
        "3/minute;5/hour", storage=limits_storage(storage_uri), scope=f"test-{uuid.uuid4().hex[:12]}"
    )
    yield quota
    await quota.close()


async def test_takes_until_the_smallest_window_is_spent(gate: QuotaGate) -> None:
    assert gate.configured
    for left in (2, 1, 0):
        decision = await gate.take("alice")
        assert decision.allowed
        assert decision.remaining == left
    refused = await gate.take("alice")
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0 < refused.retry_after_s <= 60


async def test_a_cost_above_what_is_left_is_refused_whole(gate: QuotaGate) -> None:
    assert (await gate.take("alice", 2)).allowed
    refused = await gate.take("alice", 2)  # 1 left
    assert not refused.allowed
    after = await gate.peek("alice")
    assert after.remaining == 1  # the refusal spent nothing
    assert (await gate.take("alice", 1)).allowed


async def test_windows_report_limit_and_length(gate: QuotaGate) -> None:
    decision = await gate.take("alice", 1)
    by_length = {w.window_s: w for w in decision.windows}
    assert set(by_length) == {60, 3600}
    assert (by_length[60].limit, by_length[60].remaining) == (3, 2)
    assert (by_length[3600].limit, by_length[3600].remaining) == (5, 4)
    assert all(0 < w.reset_s <= w.window_s for w in decision.windows)


async def test_owners_are_counted_apart(gate: QuotaGate) -> None:
    assert (await gate.take("alice", 3)).allowed
    assert not (await gate.take("alice", 1)).allowed
    bob = await gate.take("bob", 3)
    assert bob.allowed
    assert bob.remaining == 0


async def test_peek_spends_nothing(gate: QuotaGate) -> None:
    for _ in range(5):
        assert (await gate.peek("carol")).remaining == 3
    assert (await gate.take("carol", 3)).allowed


async def test_concurrent_takes_never_overspend(gate: QuotaGate) -> None:
    decisions = await asyncio.gather(*(gate.take("dave") for _ in range(10)))
    assert sum(d.allowed for d in decisions) == 3
    assert (await gate.peek("dave")).remaining == 0


async def test_two_gates_on_one_storage_share_the_count(storage_uri: str) -> None:
    scope = f"test-{uuid.uuid4().hex[:12]}"
    first = LimitsQuotaGate("3/minute", storage=limits_storage(storage_uri), scope=scope)
    # memory:// is one process's count: two gates share it only through one storage object.
    storage = limits_storage(storage_uri) if storage_uri.startswith("redis") else first._storage
    second = LimitsQuotaGate("3/minute", storage=storage, scope=scope)
    assert (await first.take("erin", 2)).allowed
    assert not (await second.take("erin", 2)).allowed
    assert (await second.take("erin", 1)).allowed
    assert not (await first.take("erin", 1)).allowed


async def test_no_rate_allows_everything_and_reports_no_windows(storage_uri: str) -> None:
    gate = LimitsQuotaGate(None, storage=limits_storage(storage_uri), scope="unused")
    assert not gate.configured
    decision = await gate.take("alice", 1000)
    assert decision.allowed
    assert decision.windows == ()
    assert decision.remaining is None


@pytest.mark.parametrize(("on_error", "allowed"), [("allow", True), ("deny", False)])
async def test_an_unreachable_storage_follows_the_on_error_policy(on_error: str, allowed: bool) -> None:
    # Port 9 (discard) refuses connections on loopback: a Redis that is down.
    gate = LimitsQuotaGate(
        "3/minute",
        storage=limits_storage("redis://127.0.0.1:9/0"),
        scope="down",
        on_error=on_error,  # type: ignore[arg-type]
    )
    assert gate.fails_open is allowed
    decision = await gate.take("alice")
    assert decision.allowed is allowed
    assert decision.degraded
    assert decision.windows == ()
    assert (await gate.peek("alice")).allowed is allowed
    with pytest.raises(QuotaUnavailableError):
        await gate.ping()


async def test_a_reachable_storage_answers_the_ping_and_is_not_degraded(gate: QuotaGate) -> None:
    await gate.ping()
    assert not (await gate.take("alice")).degraded
    assert not (await gate.peek("alice")).degraded


async def test_a_hanging_storage_costs_one_timeout_then_is_rested() -> None:
    # A listener that accepts and never answers: a Redis that hangs instead of refusing.
    hung = socket.create_server(("127.0.0.1", 0))
    try:
        gate = LimitsQuotaGate(
            "3/minute",
            storage=limits_storage(f"redis://127.0.0.1:{hung.getsockname()[1]}/0"),
            scope="hung",
            retry_after_s=30,
        )
        started = time.monotonic()
        first = await gate.take("alice")
        assert first.degraded
        assert first.allowed
        assert time.monotonic() - started < 5  # the client's own 1 s timeouts, not a hang
        started = time.monotonic()
        for _ in range(5):
            again = await gate.take("alice")
            assert again.degraded
            assert again.allowed
        assert time.monotonic() - started < 0.5  # not asked again while it rests
    finally:
        hung.close()
