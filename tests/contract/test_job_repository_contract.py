"""The JobRepository contract, run against every job repository adapter (memory, SQLite, MySQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from pixyproxy.adapters.memory_jobs import InMemoryJobRepository
from pixyproxy.adapters.mysql import MySqlJobRepository
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.adapters.sqlite_jobs import SqliteJobRepository
from pixyproxy.domain.exceptions import JobNotFoundError
from pixyproxy.domain.models import Job, JobError, JobStatus, NewJob, PageKey
from pixyproxy.ports import JobRepository
from tests.support.builders import BASE_TIME
from tests.support.mysql import fresh_mysql_repository

NOW = BASE_TIME + timedelta(minutes=1)
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 3


@pytest.fixture(params=["memory", "sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobRepository]:
    """Every JobRepository adapter, each fresh and empty (MySQL: a database of its own)."""
    if request.param == "mysql":
        async with fresh_mysql_repository() as images:
            yield MySqlJobRepository(images)
        return
    if request.param == "memory":
        yield InMemoryJobRepository()
        return
    database = SqliteImageRepository(tmp_path / "jobs.sqlite3")
    try:
        yield SqliteJobRepository(database)
    finally:
        await database.close()


def new_job(
    *,
    prompt: str = "a red fox in snow",
    size: str | None = "1024x1024",
    created_at: datetime | None = None,
    offset_us: int = 0,
    key: str | None = None,
    request_hash: str | None = None,
) -> NewJob:
    """A valid NewJob; `offset_us` shifts its time from a fixed base."""
    return NewJob(
        id=uuid4(),
        prompt=prompt,
        size=size,
        created_at=created_at or BASE_TIME + timedelta(microseconds=offset_us),
        idempotency_key=key,
        request_hash=request_hash if request_hash is not None else ("0" * 64 if key else None),
    )


async def added(jobs: JobRepository, job: NewJob) -> Job:
    """Add a job that must be new."""
    stored, created = await jobs.add(job)
    assert created
    return stored


async def claimed(jobs: JobRepository, job_id: UUID, *, now: datetime = NOW) -> Job:
    """Claim a job that must be claimable."""
    job = await jobs.claim(job_id, now=now, lease_until=now + LEASE, max_attempts=MAX_ATTEMPTS)
    assert job is not None
    return job


def assert_utc(*values: datetime | None) -> None:
    """Every timestamp a repository answers is aware and in UTC."""
    for value in values:
        assert value is not None
        assert value.utcoffset() == timedelta(0)


# --- adding and reading --------------------------------------------------------------------------


async def test_add_then_get_round_trips_every_field(jobs: JobRepository) -> None:
    utc = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    job = new_job(
        prompt="emoji 🦊 '; DROP TABLE jobs;-- %(id)s :id ? \\' \"q\"\ttab\nline",
        created_at=utc.astimezone(timezone(timedelta(hours=5))),
        key="emoji 🦊 key '; --",
        request_hash="f" * 64,
    )
    stored, created = await jobs.add(job)
    assert created
    fetched = await jobs.get(job.id)
    assert fetched == stored
    assert fetched.model_dump(include=set(NewJob.model_fields)) == job.model_dump()
    assert (fetched.status, fetched.attempts, fetched.cancel_requested, fetched.published) == (
        JobStatus.QUEUED,
        0,
        False,
        False,
    )
    assert (fetched.started_at, fetched.finished_at, fetched.lease_until) == (None, None, None)
    assert (fetched.image_guid, fetched.error) == (None, None)
    assert fetched.created_at == utc
    assert fetched.created_at.microsecond == 678901
    assert_utc(fetched.created_at)


async def test_a_job_without_size_or_key_round_trips(jobs: JobRepository) -> None:
    job = new_job(size=None)
    await added(jobs, job)
    fetched = await jobs.get(job.id)
    assert (fetched.size, fetched.idempotency_key, fetched.request_hash) == (None, None, None)


@pytest.mark.parametrize(
    ("webhook", "events"),
    [
        ("https://example.com/hooks/🦊?a=1&b='x'%20y#frag", ("start", "completed")),
        ("https://hooks.example.com/p", ("start",)),
        ("https://hooks.example.com/p", ("completed",)),
    ],
    ids=["both-events", "start-only", "completed-only"],
)
async def test_the_webhook_and_its_event_filter_round_trip(
    jobs: JobRepository, webhook: str, events: tuple[str, ...]
) -> None:
    plain = await added(jobs, new_job())
    for seen in (plain, await jobs.get(plain.id)):
        assert (seen.webhook, seen.webhook_events_filter) == (None, ("completed",))
    job = NewJob.model_validate(
        {**new_job(offset_us=1).model_dump(), "webhook": webhook, "webhook_events_filter": events}
    )
    stored = await added(jobs, job)
    newest = (await jobs.list_page(limit=1))[0]
    for seen in (stored, await jobs.get(job.id), newest, await claimed(jobs, job.id)):
        assert (seen.id, seen.webhook, seen.webhook_events_filter) == (job.id, webhook, events)


async def test_jobs_without_keys_never_collide(jobs: JobRepository) -> None:
    for i in range(3):
        await added(jobs, new_job(offset_us=i))
    assert len(await jobs.list_page(limit=10)) == 3


async def test_unknown_id_is_not_found(jobs: JobRepository) -> None:
    job_id = uuid4()
    with pytest.raises(JobNotFoundError) as caught:
        await jobs.get(job_id)
    assert caught.value.job_id == str(job_id)


# --- idempotency keys ----------------------------------------------------------------------------


async def test_a_held_key_answers_the_holder_and_inserts_nothing(jobs: JobRepository) -> None:
    holder = await added(jobs, new_job(key="k1", request_hash="a" * 64))
    second = new_job(key="k1", request_hash="b" * 64, offset_us=5)
    answered, created = await jobs.add(second)
    assert not created
    assert answered == holder
    with pytest.raises(JobNotFoundError):
        await jobs.get(second.id)
    assert [j.id for j in await jobs.list_page(limit=10)] == [holder.id]


@pytest.mark.parametrize(
    ("first", "second"),
    [("key", "key "), ("key", "KEY"), ("caf\u00e9", "cafe\u0301"), ("k", "k\t")],
    ids=["trailing-space", "case", "unicode-normalisation", "trailing-tab"],
)
async def test_idempotency_keys_are_compared_exactly(jobs: JobRepository, first: str, second: str) -> None:
    await added(jobs, new_job(key=first))
    other = await added(jobs, new_job(key=second, offset_us=1))
    held, created = await jobs.add(new_job(key=second, offset_us=2))
    assert not created
    assert (held.id, held.idempotency_key) == (other.id, second)


async def test_forgetting_old_keys_lets_them_be_used_again(jobs: JobRepository) -> None:
    old = await added(jobs, new_job(key="old"))
    await added(jobs, new_job(key="new", created_at=BASE_TIME + timedelta(hours=2)))
    assert await jobs.forget_idempotency_keys(older_than=BASE_TIME + timedelta(hours=1)) == 1
    assert (await jobs.get(old.id)).idempotency_key is None
    again, created = await jobs.add(new_job(key="old", offset_us=1))
    assert created
    assert again.id != old.id
    _, created = await jobs.add(new_job(key="new", offset_us=2))
    assert not created
    # The key's new holder is as old as the first: the next sweep frees it as well.
    assert await jobs.forget_idempotency_keys(older_than=BASE_TIME + timedelta(hours=1)) == 1
    assert await jobs.forget_idempotency_keys(older_than=BASE_TIME + timedelta(hours=1)) == 0


async def test_releasing_a_key_frees_it_only_once_the_job_finished(jobs: JobRepository) -> None:
    job = await added(jobs, new_job(key="k"))
    await jobs.release_idempotency_key(job.id)  # queued: kept
    assert (await jobs.add(new_job(key="k", offset_us=1)))[1] is False
    running = await claimed(jobs, job.id)
    await jobs.release_idempotency_key(job.id)  # running: kept
    assert (await jobs.get(job.id)).idempotency_key == "k"
    assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.SUCCEEDED, now=NOW)
    await jobs.release_idempotency_key(job.id)
    assert (await jobs.get(job.id)).idempotency_key is None
    assert (await jobs.add(new_job(key="k", offset_us=2)))[1] is True
    await jobs.release_idempotency_key(uuid4())  # an unknown job: nothing to do


async def test_concurrent_adds_with_one_key_insert_exactly_one(jobs: JobRepository) -> None:
    results = await asyncio.gather(*(jobs.add(new_job(key="race", offset_us=i)) for i in range(10)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert len(await jobs.list_page(limit=100)) == 1


# --- listing -------------------------------------------------------------------------------------


async def test_listing_is_newest_first_and_pages_cleanly_across_ties(jobs: JobRepository) -> None:
    spread = [await added(jobs, new_job(offset_us=i * 1000)) for i in range(4)]
    tied = [await added(jobs, new_job(offset_us=1500)) for _ in range(4)]
    expected = sorted(spread + tied, key=lambda j: (j.created_at, j.id), reverse=True)
    assert [j.id for j in await jobs.list_page(limit=100)] == [j.id for j in expected]
    seen: list[UUID] = []
    after = None
    while page := await jobs.list_page(limit=3, after=after):
        assert len(page) <= 3
        seen.extend(j.id for j in page)
        after = PageKey(created_at=page[-1].created_at, guid=page[-1].id)
    assert seen == [j.id for j in expected]


async def test_listing_filters_by_status(jobs: JobRepository) -> None:
    all_jobs = [await added(jobs, new_job(offset_us=i)) for i in range(6)]
    for job in all_jobs[::2]:
        await claimed(jobs, job.id)
    running = [j.id for j in reversed(all_jobs[::2])]
    queued = [j.id for j in reversed(all_jobs[1::2])]
    assert [j.id for j in await jobs.list_page(limit=10, status=JobStatus.RUNNING)] == running
    assert [j.id for j in await jobs.list_page(limit=10, status=JobStatus.QUEUED)] == queued
    assert await jobs.list_page(limit=10, status=JobStatus.SUCCEEDED) == []
    first = await jobs.list_page(limit=2, status=JobStatus.RUNNING)
    after = PageKey(created_at=first[-1].created_at, guid=first[-1].id)
    rest = await jobs.list_page(limit=2, status=JobStatus.RUNNING, after=after)
    assert [j.id for j in first + rest] == running


async def test_empty_repository_lists_nothing(jobs: JobRepository) -> None:
    assert await jobs.list_page(limit=10) == []
    assert await jobs.list_stale(now=NOW, limit=10) == []
    assert await jobs.list_unfinished(limit=10) == []


# --- claiming and leases -------------------------------------------------------------------------


async def test_claiming_a_queued_job_runs_it(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    claim = await jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=MAX_ATTEMPTS)
    assert claim is not None
    assert (claim.status, claim.attempts, claim.lease_until, claim.started_at) == (
        JobStatus.RUNNING,
        1,
        NOW + LEASE,
        NOW,
    )
    assert_utc(claim.lease_until, claim.started_at)
    assert await jobs.get(job.id) == claim


async def test_a_job_added_with_a_lease_is_recorded_claimed_by_its_first_attempt(jobs: JobRepository) -> None:
    # The request that accepts a job and runs it itself (no broker) records it claimed: no claim's
    # round trip. It is then held exactly as a claimed job is.
    job = new_job().model_copy(update={"lease_until": NOW + LEASE, "published": True})
    stored = await added(jobs, job)
    assert (stored.status, stored.attempts, stored.lease_until, stored.started_at) == (
        JobStatus.RUNNING,
        1,
        NOW + LEASE,
        job.created_at,
    )
    assert_utc(stored.lease_until, stored.started_at)
    assert await jobs.get(job.id) == stored == job.as_added()
    assert await jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=MAX_ATTEMPTS) is None
    assert await jobs.list_stale(now=NOW, limit=10) == []
    later = NOW + LEASE + timedelta(seconds=1)
    assert await jobs.list_stale(now=later, limit=10) == [job.id]  # its request died: taken again
    assert await jobs.finish(job.id, attempt=1, status=JobStatus.SUCCEEDED, now=NOW, image_guid=job.id)
    assert (await jobs.get(job.id)).status == JobStatus.SUCCEEDED


async def test_a_live_lease_refuses_a_second_claim(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    first = await claimed(jobs, job.id)
    later = NOW + LEASE - timedelta(microseconds=1)
    assert await jobs.claim(job.id, now=later, lease_until=later + LEASE, max_attempts=MAX_ATTEMPTS) is None
    assert await jobs.get(job.id) == first


async def test_an_expired_lease_lets_another_attempt_claim(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    await claimed(jobs, job.id)
    later = NOW + LEASE + timedelta(seconds=1)
    second = await claimed(jobs, job.id, now=later)
    assert (second.attempts, second.lease_until, second.started_at) == (2, later + LEASE, NOW)


async def test_claims_stop_at_max_attempts(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    assert await jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=0) is None
    assert (await jobs.get(job.id)).status == JobStatus.QUEUED
    first = await jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=1)
    assert first is not None
    later = NOW + LEASE + timedelta(seconds=1)
    assert await jobs.claim(job.id, now=later, lease_until=later + LEASE, max_attempts=1) is None
    assert await jobs.get(job.id) == first


async def test_unknown_and_finished_jobs_are_not_claimable(jobs: JobRepository) -> None:
    assert await jobs.claim(uuid4(), now=NOW, lease_until=NOW + LEASE, max_attempts=MAX_ATTEMPTS) is None
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.FAILED, now=NOW)
    far = NOW + 10 * LEASE
    assert await jobs.claim(job.id, now=far, lease_until=far + LEASE, max_attempts=MAX_ATTEMPTS) is None


async def test_concurrent_claims_of_one_job_let_exactly_one_win(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    results = await asyncio.gather(
        *(jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=MAX_ATTEMPTS) for _ in range(10))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].attempts == 1
    assert (await jobs.get(job.id)).attempts == 1


async def test_the_holder_renews_its_lease(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    renewed = await jobs.renew(job.id, attempt=running.attempts, lease_until=NOW + 2 * LEASE)
    assert renewed is not None
    assert renewed.lease_until == NOW + 2 * LEASE
    assert_utc(renewed.lease_until)
    assert await jobs.get(job.id) == renewed
    # Renewing to the instant it already holds still answers the job (MySQL changes no row).
    assert await jobs.renew(job.id, attempt=running.attempts, lease_until=NOW + 2 * LEASE) == renewed


async def test_a_stale_attempt_cannot_renew(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    assert await jobs.renew(job.id, attempt=0, lease_until=NOW + LEASE) is None  # queued: no holder
    first = await claimed(jobs, job.id)
    later = NOW + LEASE + timedelta(seconds=1)
    second = await claimed(jobs, job.id, now=later)
    assert await jobs.renew(job.id, attempt=first.attempts, lease_until=later + 5 * LEASE) is None
    assert await jobs.get(job.id) == second
    assert await jobs.renew(uuid4(), attempt=1, lease_until=NOW) is None


# --- finishing -----------------------------------------------------------------------------------


async def test_the_holder_finishes_a_job_with_its_image(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    image_guid = uuid4()
    done_at = NOW + timedelta(seconds=3, microseconds=7)
    assert await jobs.finish(
        job.id, attempt=running.attempts, status=JobStatus.SUCCEEDED, now=done_at, image_guid=image_guid
    )
    done = await jobs.get(job.id)
    assert (done.status, done.finished_at, done.image_guid, done.error, done.lease_until) == (
        JobStatus.SUCCEEDED,
        done_at,
        image_guid,
        None,
        None,
    )
    assert (done.attempts, done.started_at) == (1, NOW)
    assert_utc(done.finished_at, done.started_at)
    # Finishing again (a redelivered message) changes nothing.
    assert not await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.FAILED, now=NOW)
    assert await jobs.get(job.id) == done


async def test_the_holder_finishes_a_job_with_its_error(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    error = JobError(kind="UpstreamRateLimitedError", detail='slow down 🦊 "now" \'; --', retry_after_s=2.5)
    assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.FAILED, now=NOW, error=error)
    failed = await jobs.get(job.id)
    assert (failed.status, failed.error, failed.image_guid, failed.finished_at) == (
        JobStatus.FAILED,
        error,
        None,
        NOW,
    )


async def test_a_stale_attempt_cannot_finish(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    first = await claimed(jobs, job.id)
    later = NOW + LEASE + timedelta(seconds=1)
    second = await claimed(jobs, job.id, now=later)
    assert not await jobs.finish(job.id, attempt=first.attempts, status=JobStatus.SUCCEEDED, now=later)
    assert await jobs.get(job.id) == second


async def test_a_queued_or_unknown_job_cannot_be_finished(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    assert not await jobs.finish(job.id, attempt=0, status=JobStatus.SUCCEEDED, now=NOW)
    assert not await jobs.finish(job.id, attempt=1, status=JobStatus.SUCCEEDED, now=NOW)
    assert await jobs.get(job.id) == job
    assert not await jobs.finish(uuid4(), attempt=1, status=JobStatus.SUCCEEDED, now=NOW)


# --- cancelling ----------------------------------------------------------------------------------


async def test_cancelling_a_queued_job_ends_it(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    canceled = await jobs.cancel(job.id, now=NOW)
    assert (canceled.status, canceled.finished_at, canceled.cancel_requested) == (
        JobStatus.CANCELED,
        NOW,
        True,
    )
    assert_utc(canceled.finished_at)
    assert await jobs.get(job.id) == canceled
    # Twice is harmless, and a canceled job is never claimed.
    assert await jobs.cancel(job.id, now=NOW + timedelta(hours=1)) == canceled
    assert await jobs.claim(job.id, now=NOW, lease_until=NOW + LEASE, max_attempts=MAX_ATTEMPTS) is None


async def test_cancelling_a_running_job_asks_its_worker(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    asked = await jobs.cancel(job.id, now=NOW)
    assert (asked.status, asked.cancel_requested, asked.finished_at, asked.attempts) == (
        JobStatus.RUNNING,
        True,
        None,
        running.attempts,
    )
    assert await jobs.cancel(job.id, now=NOW) == asked
    # The worker still holds the job: it renews, sees the request, and finishes it as canceled.
    renewed = await jobs.renew(job.id, attempt=running.attempts, lease_until=NOW + 2 * LEASE)
    assert renewed is not None
    assert renewed.cancel_requested
    assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.CANCELED, now=NOW)
    assert (await jobs.get(job.id)).status == JobStatus.CANCELED


async def test_cancelling_a_finished_job_changes_nothing(jobs: JobRepository) -> None:
    job = await added(jobs, new_job())
    running = await claimed(jobs, job.id)
    assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.SUCCEEDED, now=NOW)
    done = await jobs.get(job.id)
    assert await jobs.cancel(job.id, now=NOW + timedelta(hours=1)) == done
    assert await jobs.get(job.id) == done


async def test_cancelling_an_unknown_job_is_not_found(jobs: JobRepository) -> None:
    with pytest.raises(JobNotFoundError):
        await jobs.cancel(uuid4(), now=NOW)


# --- sweeps --------------------------------------------------------------------------------------


async def test_stale_jobs_are_the_unpublished_and_the_abandoned(jobs: JobRepository) -> None:
    unpublished = await added(jobs, new_job(offset_us=1))
    published = await added(jobs, new_job(offset_us=2))
    live = await added(jobs, new_job(offset_us=3))
    abandoned = await added(jobs, new_job(offset_us=4))
    finished = await added(jobs, new_job(offset_us=5))
    for job in (published, live, abandoned, finished):
        await jobs.mark_published(job.id)
    await jobs.mark_published(uuid4())  # an unknown job: nothing to do
    assert (await jobs.get(published.id)).published
    assert not (await jobs.get(unpublished.id)).published
    await claimed(jobs, abandoned.id, now=NOW - 2 * LEASE)
    await claimed(jobs, live.id)
    done = await claimed(jobs, finished.id, now=NOW - 2 * LEASE)
    assert await jobs.finish(finished.id, attempt=done.attempts, status=JobStatus.FAILED, now=NOW - LEASE)
    assert await jobs.list_stale(now=NOW, limit=10) == [unpublished.id, abandoned.id]
    assert await jobs.list_stale(now=NOW, limit=1) == [unpublished.id]
    # Once the live lease expires its job is stale too.
    later = NOW + LEASE + timedelta(seconds=1)
    assert await jobs.list_stale(now=later, limit=10) == [unpublished.id, live.id, abandoned.id]


async def test_unfinished_jobs_are_listed_oldest_first(jobs: JobRepository) -> None:
    queued = await added(jobs, new_job(offset_us=3))
    running = await added(jobs, new_job(offset_us=1))
    finished = await added(jobs, new_job(offset_us=2))
    canceled = await added(jobs, new_job(offset_us=0))
    await claimed(jobs, running.id)
    done = await claimed(jobs, finished.id)
    assert await jobs.finish(finished.id, attempt=done.attempts, status=JobStatus.SUCCEEDED, now=NOW)
    await jobs.cancel(canceled.id, now=NOW)
    assert await jobs.list_unfinished(limit=10) == [running.id, queued.id]
    assert await jobs.list_unfinished(limit=1) == [running.id]


async def test_purging_deletes_only_jobs_finished_before_the_bound(jobs: JobRepository) -> None:
    bound = NOW + timedelta(hours=1)
    old_done = await added(jobs, new_job(offset_us=1))
    old_canceled = await added(jobs, new_job(offset_us=2))
    new_done = await added(jobs, new_job(offset_us=3))
    queued = await added(jobs, new_job(offset_us=4))
    running = await added(jobs, new_job(offset_us=5))
    for job, finished_at in ((old_done, bound - timedelta(microseconds=1)), (new_done, bound)):
        holder = await claimed(jobs, job.id)
        assert await jobs.finish(job.id, attempt=holder.attempts, status=JobStatus.SUCCEEDED, now=finished_at)
    await jobs.cancel(old_canceled.id, now=NOW)
    await claimed(jobs, running.id)
    assert await jobs.purge_finished(older_than=bound) == 2
    for gone in (old_done, old_canceled):
        with pytest.raises(JobNotFoundError):
            await jobs.get(gone.id)
    left = {j.id for j in await jobs.list_page(limit=10)}
    assert left == {new_done.id, queued.id, running.id}
    assert await jobs.purge_finished(older_than=bound) == 0


async def test_a_job_keeps_its_owner_and_listing_filters_by_owner(jobs: JobRepository) -> None:
    mine = [await added(jobs, new_job(offset_us=i).model_copy(update={"owner": "alice"})) for i in range(3)]
    theirs = await added(jobs, new_job(offset_us=10).model_copy(update={"owner": "bob"}))
    anonymous = await added(jobs, new_job(offset_us=11))
    assert (await jobs.get(theirs.id)).owner == "bob"
    assert anonymous.owner == "anonymous"
    first = await jobs.list_page(limit=2, owner="alice")
    assert [j.id for j in first] == [mine[2].id, mine[1].id]
    after = PageKey(created_at=first[-1].created_at, guid=first[-1].id)
    assert [j.id for j in await jobs.list_page(limit=2, after=after, owner="alice")] == [mine[0].id]
    assert [j.id for j in await jobs.list_page(limit=10, owner="bob")] == [theirs.id]
    assert await jobs.list_page(limit=10, owner="carol") == []
    assert await jobs.list_page(limit=10, owner="alice'; DROP TABLE jobs; --") == []
    assert len(await jobs.list_page(limit=10)) == 5


# --- the final event's outbox flag ----------------------------------------------------------------


def with_webhook(job: NewJob) -> NewJob:
    return job.model_copy(update={"webhook": "https://hooks.example/pixy"})


async def test_a_finished_job_with_a_webhook_is_pending_until_its_event_is_recorded(
    jobs: JobRepository,
) -> None:
    hooked = await added(jobs, with_webhook(new_job(offset_us=1)))
    plain = await added(jobs, new_job(offset_us=2))
    for job in (hooked, plain):
        running = await claimed(jobs, job.id)
        assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.SUCCEEDED, now=NOW)
    later = NOW + timedelta(seconds=1)
    # Only the job with a webhook, and only once it finished before the bound.
    assert [j.id for j in await jobs.list_events_pending(finished_before=later, limit=10)] == [hooked.id]
    assert await jobs.list_events_pending(finished_before=NOW, limit=10) == []
    pending = (await jobs.list_events_pending(finished_before=later, limit=10))[0]
    assert pending == await jobs.get(hooked.id)  # the whole job, to render its event from
    await jobs.clear_events_pending(hooked.id)
    assert await jobs.list_events_pending(finished_before=later, limit=10) == []
    await jobs.clear_events_pending(hooked.id)  # twice is harmless
    await jobs.clear_events_pending(uuid4())  # and an unknown job is no error


async def test_a_canceled_queued_job_with_a_webhook_is_pending_too(jobs: JobRepository) -> None:
    job = await added(jobs, with_webhook(new_job()))
    await jobs.cancel(job.id, now=NOW)
    later = NOW + timedelta(seconds=1)
    assert [j.id for j in await jobs.list_events_pending(finished_before=later, limit=10)] == [job.id]


async def test_events_pending_are_listed_oldest_first_up_to_the_limit(jobs: JobRepository) -> None:
    ids = []
    for i in range(3):
        job = await added(jobs, with_webhook(new_job(offset_us=i)))
        running = await claimed(jobs, job.id)
        done_at = NOW + timedelta(seconds=3 - i)  # the last added finished first
        assert await jobs.finish(job.id, attempt=running.attempts, status=JobStatus.FAILED, now=done_at)
        ids.append(job.id)
    bound = NOW + timedelta(minutes=1)
    assert [j.id for j in await jobs.list_events_pending(finished_before=bound, limit=2)] == [ids[2], ids[1]]
