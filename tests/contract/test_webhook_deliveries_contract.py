"""The WebhookDeliveries contract, run against every adapter (memory, SQLite, MySQL)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from pixyproxy.adapters.memory_webhooks import InMemoryWebhookDeliveries
from pixyproxy.adapters.mysql import MySqlWebhookDeliveries
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.adapters.sqlite_webhooks import SqliteWebhookDeliveries
from pixyproxy.domain.models import (
    NewWebhookDelivery,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEventType,
)
from pixyproxy.ports import WebhookDeliveries
from tests.support.builders import BASE_TIME
from tests.support.mysql import fresh_mysql_repository

NOW = BASE_TIME + timedelta(minutes=1)
LEASE = timedelta(minutes=5)
US = timedelta(microseconds=1)
PENDING, DELIVERED, FAILED = (
    WebhookDeliveryStatus.PENDING,
    WebhookDeliveryStatus.DELIVERED,
    WebhookDeliveryStatus.FAILED,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def deliveries(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WebhookDeliveries]:
    """Every WebhookDeliveries adapter, each fresh and empty (MySQL: a database of its own)."""
    if request.param == "mysql":
        async with fresh_mysql_repository() as images:
            yield MySqlWebhookDeliveries(images)
        return
    if request.param == "memory":
        yield InMemoryWebhookDeliveries()
        return
    database = SqliteImageRepository(tmp_path / "webhooks.sqlite3")
    try:
        yield SqliteWebhookDeliveries(database)
    finally:
        await database.close()


def new_delivery(
    *,
    job_id: UUID | None = None,
    due: datetime = NOW,
    created_at: datetime = BASE_TIME,
    event: WebhookEventType = "image.job.succeeded",
    body: str = '{"type":"image.job.succeeded"}',
    delivery_id: str | None = None,
) -> NewWebhookDelivery:
    """A valid pending delivery, due at `due`."""
    return NewWebhookDelivery(
        id=delivery_id or "msg_" + uuid4().hex,
        job_id=job_id or uuid4(),
        event=event,
        url="https://example.com/hooks/pixyproxy",
        body=body,
        created_at=created_at,
        next_attempt_at=due,
    )


async def added(deliveries: WebhookDeliveries, delivery: NewWebhookDelivery) -> NewWebhookDelivery:
    """Add a delivery and hand it back."""
    await deliveries.add(delivery)
    return delivery


async def only(deliveries: WebhookDeliveries, delivery: NewWebhookDelivery) -> WebhookDelivery:
    """The stored state of the one delivery of its job."""
    (stored,) = await deliveries.list_for_job(delivery.job_id)
    assert stored.id == delivery.id
    return stored


async def claim(deliveries: WebhookDeliveries, *, now: datetime = NOW, limit: int = 100) -> list[str]:
    """The ids a claim at `now` (leasing for LEASE) hands out, in its order."""
    return [d.id for d in await deliveries.claim_due(now=now, lease_until=now + LEASE, limit=limit)]


async def attempt(
    deliveries: WebhookDeliveries,
    delivery_id: str,
    status: WebhookDeliveryStatus,
    *,
    at: datetime = NOW,
    next_at: datetime | None = None,
    last_status: str = "503",
) -> None:
    """Record one attempt made `at`, next due at `next_at` (default: a minute later)."""
    await deliveries.record_attempt(
        delivery_id,
        status=status,
        last_status=last_status,
        attempted_at=at,
        next_attempt_at=next_at or at + timedelta(minutes=1),
    )


def assert_utc(*values: datetime | None) -> None:
    """Every timestamp an adapter answers is aware and in UTC."""
    for value in values:
        assert value is not None
        assert value.utcoffset() == timedelta(0)


# --- adding and listing --------------------------------------------------------------------------


async def test_add_then_list_for_job_round_trips_every_field(deliveries: WebhookDeliveries) -> None:
    job_id = uuid4()
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    body = (
        '{"prompt":"emoji 🦊 漢字 \'; DROP TABLE webhook_deliveries;-- %(id)s :id ?'
        + ' \\\\ \\"q\\"\\ttab\\nline"}'
        + "🦊" * 20_000  # 80,000 bytes of UTF-8: more than a MySQL TEXT holds
    )
    delivery = NewWebhookDelivery(
        id="msg_2x3Yz" + "a" * 55,  # 64 characters, the most a webhook-id may have
        job_id=job_id,
        event="image.job.failed",
        url="https://example.com/hooks/🦊?a=1&b='x'%20y#frag",
        body=body,
        created_at=created.astimezone(timezone(timedelta(hours=5))),
        next_attempt_at=created + timedelta(seconds=1, microseconds=7),
    )
    await deliveries.add(delivery)
    await deliveries.add(new_delivery())  # another job's

    (stored,) = await deliveries.list_for_job(job_id)
    assert stored == WebhookDelivery(**delivery.model_dump())
    assert stored.model_dump(include=set(NewWebhookDelivery.model_fields)) == delivery.model_dump()
    assert (stored.status, stored.attempts, stored.last_status) == (PENDING, 0, None)
    assert (stored.last_attempt_at, stored.lease_until) == (None, None)
    assert stored.body == body
    assert stored.created_at == created
    assert stored.next_attempt_at.microsecond == 678908
    assert_utc(stored.next_attempt_at)
    assert await deliveries.list_for_job(uuid4()) == []


async def test_a_jobs_deliveries_are_listed_oldest_first(deliveries: WebhookDeliveries) -> None:
    job_id = uuid4()
    late = await added(
        deliveries, new_delivery(job_id=job_id, created_at=BASE_TIME + US, delivery_id="msg_a")
    )
    tied = [
        await added(deliveries, new_delivery(job_id=job_id, delivery_id=name)) for name in ("msg_c", "msg_b")
    ]
    first = await added(
        deliveries, new_delivery(job_id=job_id, created_at=BASE_TIME - US, delivery_id="msg_z")
    )
    assert [d.id for d in await deliveries.list_for_job(job_id)] == [first.id, "msg_b", "msg_c", late.id]
    assert {d.id for d in tied} == {"msg_b", "msg_c"}


async def test_adding_a_known_id_changes_nothing(deliveries: WebhookDeliveries) -> None:
    delivery = await added(deliveries, new_delivery())
    await deliveries.add(delivery)
    other = new_delivery(
        job_id=delivery.job_id,
        delivery_id=delivery.id,
        event="image.job.started",
        body="{}",
        created_at=BASE_TIME + timedelta(hours=1),
        due=NOW + timedelta(hours=1),
    )
    await deliveries.add(other)
    assert await deliveries.list_for_job(delivery.job_id) == [WebhookDelivery(**delivery.model_dump())]
    # Nor does it reset one that has been attempted already.
    assert await claim(deliveries) == [delivery.id]
    await attempt(deliveries, delivery.id, DELIVERED, last_status="204")
    before = await only(deliveries, delivery)
    await deliveries.add(delivery)
    assert await only(deliveries, delivery) == before
    assert before.status == DELIVERED


# --- claiming ------------------------------------------------------------------------------------


async def test_claim_takes_due_pending_unleased_deliveries_oldest_due_first(
    deliveries: WebhookDeliveries,
) -> None:
    third = await added(deliveries, new_delivery(due=NOW - timedelta(seconds=1)))
    first = await added(deliveries, new_delivery(due=NOW - timedelta(seconds=3)))
    at_now = await added(deliveries, new_delivery(due=NOW))
    second = await added(deliveries, new_delivery(due=NOW - timedelta(seconds=2)))
    await added(deliveries, new_delivery(due=NOW + US))  # not due yet
    delivered = await added(deliveries, new_delivery(due=NOW - timedelta(hours=3)))
    failed = await added(deliveries, new_delivery(due=NOW - timedelta(hours=2)))
    leased = await added(deliveries, new_delivery(due=NOW - timedelta(hours=1)))
    earlier = NOW - timedelta(hours=1)
    assert await claim(deliveries, now=earlier, limit=3) == [delivered.id, failed.id, leased.id]
    await attempt(deliveries, delivered.id, DELIVERED, at=earlier, next_at=earlier)
    await attempt(deliveries, failed.id, FAILED, at=earlier, next_at=earlier)
    assert await claim(deliveries, now=earlier) == []
    assert await claim(deliveries, now=NOW - LEASE) == [leased.id]  # leased again, till NOW

    claimed = await deliveries.claim_due(now=NOW, lease_until=NOW + LEASE, limit=2)
    assert [d.id for d in claimed] == [first.id, second.id]
    for delivery in claimed:
        assert (delivery.status, delivery.attempts, delivery.lease_until) == (PENDING, 0, NOW + LEASE)
        assert_utc(delivery.lease_until, delivery.created_at, delivery.next_attempt_at)
        assert await only(deliveries, delivery) == delivery
    assert await claim(deliveries, now=NOW) == [third.id, at_now.id]
    assert await claim(deliveries, now=NOW) == []


async def test_limit_zero_and_an_empty_store_claim_nothing(deliveries: WebhookDeliveries) -> None:
    assert await claim(deliveries) == []
    await added(deliveries, new_delivery(due=NOW - timedelta(seconds=1)))
    assert await claim(deliveries, limit=0) == []


async def test_a_live_lease_refuses_a_second_claim_until_it_expires(deliveries: WebhookDeliveries) -> None:
    delivery = await added(deliveries, new_delivery())
    assert await claim(deliveries) == [delivery.id]
    assert await claim(deliveries, now=NOW + LEASE - US) == []
    assert await claim(deliveries, now=NOW + LEASE) == []  # the lease holds up to its last instant
    later = NOW + LEASE + US
    (again,) = await deliveries.claim_due(now=later, lease_until=later + LEASE, limit=10)
    assert (again.id, again.attempts, again.lease_until) == (delivery.id, 0, later + LEASE)
    assert await claim(deliveries, now=later) == []


async def test_concurrent_claims_hand_out_each_delivery_exactly_once(deliveries: WebhookDeliveries) -> None:
    all_ids = {(await added(deliveries, new_delivery(due=NOW - i * US))).id for i in range(20)}
    handed_out: Counter[str] = Counter()
    for _ in range(20):  # rounds of five senders at once, until one round finds nothing left
        rounds = await asyncio.gather(*(claim(deliveries, limit=3) for _ in range(5)))
        handed_out.update(delivery_id for ids in rounds for delivery_id in ids)
        if not any(rounds):
            break
    assert set(handed_out) == all_ids
    assert set(handed_out.values()) == {1}
    assert await claim(deliveries) == []


async def test_five_concurrent_claims_of_everything_share_it_out(deliveries: WebhookDeliveries) -> None:
    all_ids = {(await added(deliveries, new_delivery(due=NOW - i * US))).id for i in range(20)}
    rounds = await asyncio.gather(*(claim(deliveries, limit=20) for _ in range(5)))
    handed_out = Counter(delivery_id for ids in rounds for delivery_id in ids)
    assert set(handed_out.values()) <= {1}
    # A claim skips what another holds, never waits for it: what none took is still there.
    assert set(handed_out) | set(await claim(deliveries)) == all_ids


# --- attempts ------------------------------------------------------------------------------------


async def test_recording_a_failed_attempt_releases_the_lease_until_it_is_due_again(
    deliveries: WebhookDeliveries,
) -> None:
    delivery = await added(deliveries, new_delivery())
    assert await claim(deliveries) == [delivery.id]
    attempted_at = NOW + timedelta(seconds=2, microseconds=3)
    retry_at = NOW + timedelta(minutes=1)
    await attempt(
        deliveries, delivery.id, PENDING, at=attempted_at, next_at=retry_at, last_status="timeout ⏱"
    )
    stored = await only(deliveries, delivery)
    assert (stored.status, stored.attempts, stored.last_status) == (PENDING, 1, "timeout ⏱")
    assert (stored.last_attempt_at, stored.next_attempt_at, stored.lease_until) == (
        attempted_at,
        retry_at,
        None,
    )
    assert_utc(stored.last_attempt_at, stored.next_attempt_at)
    assert await claim(deliveries, now=retry_at - US) == []
    # Due again before the old lease (NOW + LEASE) would have expired: recording released it.
    assert await claim(deliveries, now=retry_at) == [delivery.id]
    await attempt(deliveries, delivery.id, PENDING, at=retry_at, next_at=retry_at, last_status="500")
    assert (await only(deliveries, delivery)).attempts == 2
    assert await claim(deliveries, now=retry_at) == [delivery.id]


@pytest.mark.parametrize("status", [DELIVERED, FAILED])
async def test_a_finished_delivery_is_never_claimed_again(
    deliveries: WebhookDeliveries, status: WebhookDeliveryStatus
) -> None:
    delivery = await added(deliveries, new_delivery())
    assert await claim(deliveries) == [delivery.id]
    await attempt(deliveries, delivery.id, PENDING, next_at=NOW)
    assert await claim(deliveries) == [delivery.id]
    await attempt(deliveries, delivery.id, status, at=NOW + US, next_at=NOW, last_status="410")
    stored = await only(deliveries, delivery)
    assert (stored.status, stored.attempts, stored.last_status, stored.lease_until) == (
        status,
        2,
        "410",
        None,
    )
    assert stored.last_attempt_at == NOW + US
    assert await claim(deliveries, now=NOW + timedelta(days=365)) == []


# --- purging -------------------------------------------------------------------------------------


async def test_purge_drops_only_finished_deliveries_created_before_the_bound(
    deliveries: WebhookDeliveries,
) -> None:
    bound = BASE_TIME + timedelta(days=1)
    job_id = uuid4()

    async def one(created_at: datetime, status: WebhookDeliveryStatus | None) -> str:
        delivery = await added(deliveries, new_delivery(job_id=job_id, created_at=created_at, due=NOW))
        if status is not None:
            await attempt(deliveries, delivery.id, status)
        return delivery.id

    old_delivered = await one(bound - US, DELIVERED)
    old_failed = await one(BASE_TIME, FAILED)
    old_pending = await one(BASE_TIME, None)
    old_retrying = await one(BASE_TIME, PENDING)
    new_delivered = await one(bound, DELIVERED)
    new_pending = await one(bound + US, None)
    assert {old_delivered, old_failed} <= {d.id for d in await deliveries.list_for_job(job_id)}
    assert await deliveries.purge(older_than=bound) == 2
    left = {d.id for d in await deliveries.list_for_job(job_id)}
    assert left == {old_pending, old_retrying, new_delivered, new_pending}
    assert await deliveries.purge(older_than=bound) == 0
