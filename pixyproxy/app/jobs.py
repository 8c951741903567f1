"""Generation jobs: accept, run, wait, cancel and sweep. They know only ports and the image use-cases.

The job row is the source of truth and every transition is a conditional update in the
repository; a queue message only wakes a worker up, so a redelivered or duplicated message is
harmless and a lost one is found again by the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from pixyproxy.app.requests import (
    DEFAULT_PAGE_LIMIT,
    GenerateImageRequest,
    decode_cursor,
    encode_cursor,
    parse_generate_request,
    parse_guid,
    parse_idempotency_key,
    parse_limit,
)
from pixyproxy.app.service import ImageService
from pixyproxy.app.webhooks import NoWebhooks, WebhookService
from pixyproxy.domain.exceptions import (
    DuplicateImageError,
    IdempotencyConflictError,
    ImageDeletedError,
    ImageGenerationException,
    ImageNotFoundError,
    JobCanceledError,
    JobFailedError,
    JobNotFoundError,
    JobQueueUnavailableError,
    JobTimeoutError,
    QuotaExceededError,
    QuotaUnavailableError,
    RepositoryUnavailableError,
)
from pixyproxy.domain.models import (
    ANONYMOUS,
    ImageDetail,
    Job,
    JobError,
    JobStatus,
    NewJob,
    PageKey,
    WebhookDelivery,
    utc_now,
)
from pixyproxy.ports import JobEvents, JobQueue, JobRepository
from pixyproxy.ports.quota import QuotaDecision, QuotaGate

log = logging.getLogger(__name__)

ABANDONED = JobError(
    kind="GeneratorUnavailableError",
    detail="the job's workers stopped before finishing it as many times as it may be attempted",
)
UNEXPECTED = JobError(kind="ImageGenerationException", detail="an unexpected error occurred")
# Pauses between tries of recording a job's outcome; None: give up (the lease expires, the job is
# taken again and finds its image).
FINISH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, None)
TELL_RETRY_DELAYS_S = (0.2, 1.0, None)
# A finished job's webhook event is written right after the finish, retries included (TELL_RETRY_DELAYS_S);
# one still missing this long after is taken to be lost with its process, and written by the sweep.
EVENTS_GRACE = timedelta(seconds=30)
# How long a failed request for several images waits for a worker to stop its other jobs.
DISCARD_WAIT_S = 10.0
MAX_IDEMPOTENCY_KEY_CHARS = 255


class NoJobEvents:
    """JobEvents that nobody listens to."""

    async def started(self, job: Job) -> None:
        """Nothing."""

    async def finished(self, job: Job) -> None:
        """Nothing."""


@dataclass(frozen=True)
class JobView:
    """A job with its image's detail once it has one, and its webhook deliveries."""

    job: Job
    image: ImageDetail | None
    deliveries: list[WebhookDelivery]


@dataclass(frozen=True)
class JobPage:
    """One page of a newest-first job listing and the cursor of the next page, if there is one."""

    items: list[JobView]
    next_cursor: str | None


@dataclass(frozen=True)
class _Ran:
    """A job as the attempt that ran it finished it, with the image it made (None: made earlier, or none)."""

    job: Job
    image: ImageDetail | None = None


@dataclass(frozen=True)
class JobTiming:
    """How long jobs lease, retry, wait and are kept."""

    lease: timedelta = timedelta(seconds=30)
    max_attempts: int = 3
    retention: timedelta = timedelta(days=7)
    idempotency_retention: timedelta = timedelta(hours=24)
    sync_wait_s: float = 600.0
    cancel_check_s: float = 1.0


class JobService:
    """The job use-cases, over the job repository, the job queue and the image use-cases."""

    def __init__(
        self,
        *,
        jobs: JobRepository,
        queue: JobQueue,
        images: ImageService,
        timing: JobTiming | None = None,
        events: JobEvents | None = None,
        webhooks: WebhookService | NoWebhooks | None = None,
        quota: QuotaGate | None = None,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], UUID] = uuid4,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._images = images
        self._timing = timing or JobTiming()
        self._events = events or NoJobEvents()
        self._webhooks = webhooks or NoWebhooks()
        self._quota = quota
        self._clock = clock
        self._new_id = new_id

    # Accepting --------------------------------------------------------------------------------

    async def submit(
        self,
        request: GenerateImageRequest | object,
        *,
        idempotency_key: str | None = None,
        publish: bool = True,
        run_here: bool = False,
        owner: str = ANONYMOUS,
        charge: bool = True,
    ) -> tuple[Job, bool]:
        """Record a queued job and publish it; (the job, True). With an idempotency key already used
        with the same body: (that job, False); with another body: IdempotencyConflictError.

        A broker that cannot be reached does not refuse the job: it stays queued, unpublished, and
        the sweep publishes it once the broker is back. `run_here`: the caller runs the job itself
        (no broker), so it is never published, by this call or by the sweep, and a new job is recorded
        already claimed by the caller (running, attempt 1, leased). `owner` (the caller's key
        name) owns the job and its image; idempotency keys are each owner's own. `charge`: spend one
        image of the owner's generation quota first (QuotaExceededError when none is left).
        """
        validated = parse_generate_request(request)
        if validated.webhook is not None:
            await self._webhooks.check(validated.webhook)
        key = parse_idempotency_key(idempotency_key) if idempotency_key is not None else None
        if charge:  # once the request is known to be valid: a refused one spends nothing
            await self.charge(owner, 1)
        if key is not None and owner != ANONYMOUS:
            # Two owners' equal keys are two keys: neither replays, nor learns of, the other's job.
            key = f"{owner}:{key}"
        request_hash = hashlib.sha256(validated.model_dump_json().encode()).hexdigest() if key else None
        if key is not None:
            await self._jobs.forget_idempotency_keys(
                older_than=self._clock() - self._timing.idempotency_retention
            )
        for _ in range(3):
            now = self._clock()
            new_job = NewJob(
                id=self._new_id(),
                prompt=validated.prompt,
                size=validated.size,
                created_at=now,
                lease_until=now + self._timing.lease if run_here else None,
                idempotency_key=key,
                request_hash=request_hash,
                published=run_here,
                webhook=validated.webhook,
                webhook_events_filter=tuple(validated.webhook_events_filter or ("completed",)),
                owner=owner,
            )
            job, created = await self._jobs.add(new_job)
            if created:
                if publish and not run_here:
                    await self._publish(job.id)
                return job, True
            if job.request_hash != request_hash:
                raise IdempotencyConflictError(key or "")
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
                return job, False
            # A retry of a request that failed may try again: free the key and add anew.
            await self._jobs.release_idempotency_key(job.id)
        raise IdempotencyConflictError(key or "")

    async def generate_now(
        self,
        request: GenerateImageRequest | object,
        *,
        idempotency_key: str | None = None,
        on_submit: Callable[[Job, bool], None] | None = None,
        owner: str = ANONYMOUS,
        charge: bool = True,
    ) -> ImageDetail:
        """Generate as a job and wait for it: the image's detail, or the job's error raised again.

        `on_submit` is told the job and whether this call created it, as soon as it is recorded.
        `charge`: spend one image of the owner's generation quota first.
        """
        inline = self._queue.in_process
        job, created = await self.submit(
            request, idempotency_key=idempotency_key, run_here=inline, owner=owner, charge=charge
        )
        if on_submit is not None:
            on_submit(job, created)
        if inline and (created or job.status == JobStatus.QUEUED):
            # No broker: run it here, in this request, exactly as a worker would. A job this call
            # created is recorded claimed already; one an earlier request left queued is claimed now.
            try:
                ran = await (self._run_claimed(job) if created else self._run(job.id))
            except BaseException:
                # This request answers with the error (503, say); its job must not then run in the
                # background and make an image the client was told was not made.
                await asyncio.shield(self._cancel_quietly(job.id, ours=job if created else None))
                raise
            if ran is not None:  # finished by this request: its outcome is known, no need to read it back
                return await self.outcome(ran.job, image=ran.image)
        return await self.outcome(await self.wait(job.id, timeout_s=self._timing.sync_wait_s))

    async def generate_many(
        self,
        request: GenerateImageRequest | object,
        *,
        count: int,
        idempotency_key: str | None = None,
        owner: str = ANONYMOUS,
    ) -> list[ImageDetail]:
        """`count` images of one request, as `count` jobs run at once: all their details, or the first
        error, after canceling the request's other jobs and deleting the images they made.

        With an idempotency key, image i has the key derived from it (`key#i`), so a retry returns the
        same images; a retry of a request that failed generates them again.
        """
        validated = parse_generate_request(request)
        if idempotency_key is not None:
            parse_idempotency_key(idempotency_key)
        if validated.webhook is not None:
            await self._webhooks.check(validated.webhook)
        # All `count` images or none: a quota with fewer left refuses the request before any job.
        await self.charge(owner, count)
        created: list[UUID] = []

        def note(job: Job, new: bool) -> None:
            if new:  # a replayed job belongs to an earlier request, which was answered with its image
                created.append(job.id)

        keys = [
            None if idempotency_key is None else derived_idempotency_key(idempotency_key, i)
            for i in range(count)
        ]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self.generate_now(
                            validated, idempotency_key=key, on_submit=note, owner=owner, charge=False
                        )
                    )
                    for key in keys
                ]
        except BaseExceptionGroup as failed:
            await asyncio.shield(self._discard(created))
            raise _first_error(failed) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._discard(created))
            raise
        return [task.result() for task in tasks]

    async def charge(self, owner: str, cost: int) -> QuotaDecision:
        """Spend `cost` images of the owner's generation quota, all or none. Raises
        QuotaExceededError, having spent nothing, when fewer are left; QuotaUnavailableError when
        the quota's storage is down and the policy is to refuse."""
        if self._quota is None:
            return QuotaDecision(allowed=True)
        decision = await self._quota.take(owner, cost)
        if not decision.allowed and decision.degraded:  # nothing could be counted, and the policy is deny
            raise QuotaUnavailableError("generation")
        if not decision.allowed:
            remaining = decision.remaining
            # When the windows short of `cost` have moved on; a cost above a window's limit never fits.
            short = [w.reset_s for w in decision.windows if w.remaining < cost]
            raise QuotaExceededError(
                owner,
                quota="generation",
                cost=cost,
                remaining=0 if remaining is None else remaining,
                retry_after_s=max(max(short, default=decision.retry_after_s), 1.0),
            )
        return decision

    async def _discard(self, job_ids: list[UUID]) -> None:
        """Cancel these jobs, delete the images they made and free their keys: none of it is kept."""
        await asyncio.gather(*(self._discard_one(job_id) for job_id in job_ids))

    async def _discard_one(self, job_id: UUID) -> None:
        try:
            await self.cancel(job_id)  # queued: canceled at once; on a worker: stopped within a second
            job = await self._jobs.get(job_id)
            if self._queue.in_process and job.status == JobStatus.RUNNING:
                # This request ran it and has stopped it: nobody else will finish it.
                await self._finish(job, JobStatus.CANCELED)
            elif not job.status.finished:
                await self.wait(job_id, timeout_s=DISCARD_WAIT_S)
            with contextlib.suppress(ImageNotFoundError):
                await self._images.delete(job_id)  # a job's image has the job's id as its GUID
            await self._jobs.release_idempotency_key(job_id)
        except ImageGenerationException as err:
            log.warning("job %s of a failed request may keep its image: %s", job_id, err)

    async def wait(self, job_id: UUID, *, timeout_s: float) -> Job:
        """The job once finished, or as it stands after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            job = await self._jobs.get(job_id)
            remaining = deadline - time.monotonic()
            if job.status.finished or remaining <= 0:
                return job
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)

    async def outcome(self, job: Job, *, image: ImageDetail | None = None) -> ImageDetail:
        """The image of a succeeded job; a failed or canceled one raises, an unfinished one times out.
        A succeeded job whose image was deleted since raises ImageDeletedError. `image`: the job's
        image as its run just made it, which then need not be read."""
        if job.status == JobStatus.SUCCEEDED and job.image_guid is not None:
            if image is not None and image.guid == job.image_guid:
                return image
            try:
                return await self._images.get_detail(job.image_guid)
            except ImageNotFoundError:
                raise ImageDeletedError(job.image_guid) from None
        if job.status == JobStatus.FAILED and job.error is not None:
            raise JobFailedError(
                job.id, kind=job.error.kind, detail=job.error.detail, retry_after_s=job.error.retry_after_s
            )
        if job.status == JobStatus.CANCELED:
            raise JobCanceledError(job.id)
        raise JobTimeoutError(job.id)

    # Reading and canceling --------------------------------------------------------------------

    async def get(self, job_id: str | UUID, *, visible_to: str | None = None) -> JobView:
        """One job with its image. Raises JobNotFoundError, also for another owner's job when
        `visible_to` names an owner (tenant isolation)."""
        return await self._view(await self._visible_job(_parse_job_id(job_id), visible_to))

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        cursor: str | None = None,
        owner: str | None = None,
        visible_to: str | None = None,
    ) -> JobPage:
        """A page of jobs, newest first, of one status and one owner if asked, and the cursor of the
        next page; with `visible_to`, only that owner's."""
        after = decode_cursor(cursor) if cursor else None
        if visible_to is not None and owner not in (None, visible_to):
            return JobPage(items=[], next_cursor=None)
        jobs = await self._jobs.list_page(
            limit=parse_limit(limit) + 1, after=after, status=status, owner=visible_to or owner
        )
        page, more = jobs[:limit], len(jobs) > limit
        next_cursor = (
            encode_cursor(PageKey(created_at=page[-1].created_at, guid=page[-1].id)) if more else None
        )
        return JobPage(items=[await self._view(job) for job in page], next_cursor=next_cursor)

    async def cancel(self, job_id: str | UUID, *, visible_to: str | None = None) -> JobView:
        """Cancel a job: a queued one at once, a running one when its worker next checks (a second
        or so). A finished job is unchanged; canceling twice is harmless. Another owner's job, with
        `visible_to`, is JobNotFoundError."""
        job_id = _parse_job_id(job_id)
        before = await self._visible_job(job_id, visible_to)
        after = await self._jobs.cancel(job_id, now=self._clock())
        if before.status == JobStatus.QUEUED and after.status == JobStatus.CANCELED:
            await self._tell("finished", after)
        return await self._view(after)

    async def _visible_job(self, job_id: UUID, visible_to: str | None) -> Job:
        job = await self._jobs.get(job_id)
        if visible_to is not None and job.owner != visible_to:
            raise JobNotFoundError(job_id)
        return job

    async def _view(self, job: Job) -> JobView:
        image = None
        if job.image_guid is not None:
            with contextlib.suppress(ImageNotFoundError):
                image = await self._images.get_detail(job.image_guid)
        deliveries = await self._webhooks.list_for_job(job.id) if job.webhook else []
        return JobView(job=job, image=image, deliveries=deliveries)

    async def _cancel_quietly(self, job_id: UUID, *, ours: Job | None = None) -> None:
        """Cancel the job of a request that stopped. `ours`: the attempt this request recorded and
        ran (stopped now); nobody else would finish it, so it ends canceled here."""
        try:
            job = await self._jobs.cancel(job_id, now=self._clock())
            if ours is not None and job.status == JobStatus.RUNNING and job.attempts == ours.attempts:
                await self._finish(ours, JobStatus.CANCELED)
        except ImageGenerationException:
            log.warning("could not cancel job %s whose request was cancelled", job_id)

    # Running ----------------------------------------------------------------------------------

    async def run_job(self, job_id: UUID) -> None:
        """Claim the job and do it: the worker's use-case, once per message.

        A job another worker holds (live lease) or that is finished is left alone: the message was a
        duplicate. A job whose workers died as often as it may be attempted is marked failed.
        """
        await self._run(job_id)

    async def _run(self, job_id: UUID) -> _Ran | None:
        """run_job's work; the job as this attempt finished it, or None when it did not (not claimed,
        lost to another attempt, or this process stopping)."""
        now = self._clock()
        job = await self._jobs.claim(
            job_id, now=now, lease_until=now + self._timing.lease, max_attempts=self._timing.max_attempts
        )
        if job is None:
            await self._settle_unclaimable(job_id, now)
            return None
        return await self._run_claimed(job)

    async def _run_claimed(self, job: Job) -> _Ran | None:
        await self._tell("started", job)
        return await self._execute(job)

    async def _settle_unclaimable(self, job_id: UUID, now: datetime) -> None:
        try:
            job = await self._jobs.get(job_id)
        except JobNotFoundError:
            log.warning("a message named job %s, which does not exist (purged?)", job_id)
            return
        lease_over = job.lease_until is not None and job.lease_until < now
        if job.status == JobStatus.RUNNING and lease_over and job.attempts >= self._timing.max_attempts:
            log.warning("job %s abandoned after %d attempts", job_id, job.attempts)
            if await self._jobs.finish(
                job_id, attempt=job.attempts, status=JobStatus.FAILED, now=now, error=ABANDONED
            ):
                abandoned = {"status": JobStatus.FAILED, "finished_at": now, "error": ABANDONED}
                await self._tell("finished", job.model_copy(update=abandoned))

    async def _execute(self, job: Job) -> _Ran | None:
        if job.cancel_requested:
            # Canceled while an earlier attempt ran, which then died: it ends canceled, not run again.
            return await self._finish(job, JobStatus.CANCELED)
        if job.attempts > 1 and await self._image_exists(job.id):
            # An earlier attempt made the image and died before it could say so.
            log.info("job %s: attempt %d found the image an earlier attempt made", job.id, job.attempts)
            return await self._succeed(job)
        request = GenerateImageRequest(prompt=job.prompt, size=job.size)  # checked at accept
        # The image's GUID is the job's id: whichever attempt inserts it first, there is one image.
        work = asyncio.ensure_future(
            self._images.generate(request, guid=job.id, attempt=job.attempts, owner=job.owner)
        )
        stop_reason: list[str] = []
        keeper = asyncio.ensure_future(self._keep_lease(job, work, stop_reason))
        try:
            image = await work
        except asyncio.CancelledError:
            if not stop_reason or _cancelling():
                # This process is stopping: hand the job back (lease expired) for another worker now.
                await asyncio.shield(self._release(job))
                raise
            if stop_reason[0] != "canceled":
                return None
            ran = await self._finish(job, JobStatus.CANCELED)
            log.info("job %s canceled while running; nothing stored", job.id)
            return ran
        except DuplicateImageError as exc:
            if await self._image_exists(job.id):
                # Another attempt (ours lost its lease while it worked) made the job's image first.
                return await self._succeed(job)
            return await self._finish(job, JobStatus.FAILED, error=_error_of(exc))
        except ImageGenerationException as exc:
            return await self._finish(job, JobStatus.FAILED, error=_error_of(exc))
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            return await self._finish(job, JobStatus.FAILED, error=UNEXPECTED)
        finally:
            keeper.cancel()
        return await self._succeed(job, image)

    async def _succeed(self, job: Job, image: ImageDetail | None = None) -> _Ran | None:
        """Record the job's image (its GUID is the job's id; `image`, when this attempt made it); after
        a retried job, sweep up the bytes its dead attempts may have left."""
        ran = await self._finish(job, JobStatus.SUCCEEDED, image_guid=job.id)
        if job.attempts > 1:
            await self._images.forget_other_attempts(
                image or await self._images.get_detail(job.id), attempts=job.attempts
            )
        return None if ran is None else _Ran(ran.job, image)

    async def _image_exists(self, guid: UUID) -> bool:
        try:
            await self._images.get_detail(guid)
        except ImageNotFoundError:
            return False
        return True

    async def _finish(
        self, job: Job, status: JobStatus, *, image_guid: UUID | None = None, error: JobError | None = None
    ) -> _Ran | None:
        """Record the outcome if this attempt still holds the job: the job as finished, or None when
        another attempt holds it now. A database blip is retried: the outcome (an image made, above
        all) must not be lost for a dropped connection."""
        now = self._clock()
        for delay in FINISH_RETRY_DELAYS_S:
            try:
                finished = await self._jobs.finish(
                    job.id, attempt=job.attempts, status=status, now=now, image_guid=image_guid, error=error
                )
                break
            except RepositoryUnavailableError as err:
                if delay is None:
                    raise
                log.warning("job %s: could not record %s yet (%s); retrying", job.id, status, err.reason)
                await asyncio.sleep(delay)
        if finished:
            done = {"status": status, "finished_at": now, "image_guid": image_guid, "error": error}
            finished_job = job.model_copy(update=done)
            await self._tell("finished", finished_job)
            return _Ran(finished_job)
        current = await self._jobs.get(job.id)
        if current.status == status and current.image_guid == image_guid:
            return _Ran(current)  # a retry of a finish that had committed: it is done
        # Another attempt holds the job now (our lease ran out): it will find the same image.
        log.warning("job %s: attempt %d no longer holds it (%s)", job.id, job.attempts, current.status)
        return None

    async def _tell(self, event: str, job: Job) -> None:
        listeners: tuple[JobEvents, ...] = (self._events, self._webhooks)
        for listener in listeners:
            told = await self._tell_one(listener, event, job)
            if told and listener is self._webhooks and event == "finished" and job.webhook is not None:
                await self._clear_events_pending(job.id)

    async def _tell_one(self, listener: JobEvents, event: str, job: Job) -> bool:
        """Tell one listener, retrying a database blip; whether it was told."""
        for delay in TELL_RETRY_DELAYS_S:
            try:
                await (listener.started(job) if event == "started" else listener.finished(job))
                return True
            except RepositoryUnavailableError as err:
                # A webhook delivery is a row: a database blip must not lose the event.
                if delay is None:
                    log.error("job %s: the %s event was not recorded: %s", job.id, event, err.reason)
                    return False
                await asyncio.sleep(delay)
            except Exception:
                # Listeners must not raise; if one does, the job's outcome still stands.
                log.exception("a listener failed on job %s %s", job.id, event)
                return False
        return False

    async def _clear_events_pending(self, job_id: UUID) -> None:
        try:
            await self._jobs.clear_events_pending(job_id)
        except ImageGenerationException as err:  # the sweep writes the event again, which adds nothing
            log.warning("job %s: could not clear its events-pending flag: %s", job_id, err)

    async def _release(self, job: Job) -> None:
        try:
            await self._jobs.renew(
                job.id, attempt=job.attempts, lease_until=self._clock() - timedelta(microseconds=1)
            )
        except ImageGenerationException:
            log.warning("could not hand job %s back; it is retried when its lease expires", job.id)

    async def _keep_lease(self, job: Job, work: asyncio.Future[ImageDetail], stop_reason: list[str]) -> None:
        """Renew the lease while the work runs, and stop the work if the job is canceled or lost."""
        renew_every = self._timing.lease.total_seconds() / 3
        last_renewal = time.monotonic()
        while not work.done():
            await asyncio.sleep(self._timing.cancel_check_s)
            try:
                if time.monotonic() - last_renewal >= renew_every:
                    current = await self._jobs.renew(
                        job.id, attempt=job.attempts, lease_until=self._clock() + self._timing.lease
                    )
                    last_renewal = time.monotonic()
                else:
                    current = await self._jobs.get(job.id)
                    if current.attempts != job.attempts or current.status != JobStatus.RUNNING:
                        current = None
            except ImageGenerationException as exc:
                log.warning("job %s: could not check its lease (%s); trying again", job.id, exc)
                continue
            if current is None:
                stop_reason.append("lost")
            elif current.cancel_requested:
                stop_reason.append("canceled")
            else:
                continue
            # Cancelling the work closes the upstream call's connection; nothing gets stored.
            work.cancel()
            return

    # Sweeping ---------------------------------------------------------------------------------

    async def publish_stale(self, *, limit: int = 500) -> int:
        """Publish jobs that need a message (never published; or running on a dead worker); how many."""
        published = 0
        for job_id in await self._jobs.list_stale(now=self._clock(), limit=limit):
            if not await self._publish(job_id):
                break
            published += 1
        return published

    async def record_missed_events(self, *, limit: int = 100) -> int:
        """Write the webhook event of each job finished over EVENTS_GRACE ago whose event was never
        written: its process died between the finish and the delivery row. The finish flags the job in
        the same write (the outbox); writing an event twice adds nothing. How many were written."""
        missed = await self._jobs.list_events_pending(
            finished_before=self._clock() - EVENTS_GRACE, limit=limit
        )
        written = 0
        for job in missed:
            if await self._tell_one(self._webhooks, "finished", job):
                await self._clear_events_pending(job.id)
                written += 1
        if written:
            log.warning("wrote the webhook events of %d finished jobs whose process stopped first", written)
        return written

    async def recover(self, *, limit: int = 100_000) -> int:
        """Publish every unfinished job again: an in-process queue lost its messages with the process."""
        unfinished = await self._jobs.list_unfinished(limit=limit)
        for job_id in unfinished:
            await self._publish(job_id)
        if unfinished:
            log.info("picked up %d unfinished jobs", len(unfinished))
        return len(unfinished)

    async def purge(self) -> int:
        """Delete finished jobs older than the retention; how many."""
        return await self._jobs.purge_finished(older_than=self._clock() - self._timing.retention)

    async def _publish(self, job_id: UUID) -> bool:
        try:
            await self._queue.publish(job_id)
        except JobQueueUnavailableError as err:
            log.warning("job %s stays queued until the broker is back: %s", job_id, err.reason)
            return False
        await self._jobs.mark_published(job_id)
        return True


def derived_idempotency_key(key: str, index: int) -> str:
    """The idempotency key of image `index` of a request for several: `key#index`, or, when that
    would be longer than a key may be, the same made from the key's hash."""
    derived = f"{key}#{index}"
    if len(derived) > MAX_IDEMPOTENCY_KEY_CHARS:
        derived = f"sha256:{hashlib.sha256(key.encode()).hexdigest()}#{index}"
    return derived


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group, however deeply nested: the one the request answers with."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _error_of(exc: ImageGenerationException) -> JobError:
    return JobError(
        kind=type(exc).__name__, detail=str(exc), retry_after_s=getattr(exc, "retry_after_s", None)
    )


def _parse_job_id(value: str | UUID) -> UUID:
    try:
        return parse_guid(value)
    except ImageGenerationException:
        raise JobNotFoundError(value) from None


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
