"""Image models: the internal record, the public detail, and what generators and blob stores hand back."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from pixyproxy.domain import search
from pixyproxy.domain.exceptions import InvalidBlobKeyError

_FROZEN = ConfigDict(frozen=True, extra="forbid")

CONTENT_TYPE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# The owner of what a request without an API key makes (authentication off).
ANONYMOUS = "anonymous"


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def sha256_hex(data: bytes) -> str:
    """The lower-case hex sha256 of the bytes."""
    return hashlib.sha256(data).hexdigest()


def sniff_content_type(data: bytes) -> str | None:
    """The image content type read from the bytes' magic number, or None if not PNG, JPEG or WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


_BLOB_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}(/[A-Za-z0-9][A-Za-z0-9._-]{0,199}){0,7}")


def validate_blob_key(key: str) -> str:
    """Return the key if it is a safe relative key (no traversal, absolute path, NUL), else raise."""
    if not _BLOB_KEY.fullmatch(key) or any(part in {".", ".."} for part in key.split("/")):
        raise InvalidBlobKeyError(key)
    return key


def filename_for(guid: UUID, content_type: str, *, attempt: int = 1) -> str:
    """The stored file name (and blob key) of an image: its GUID and the extension of its type.

    A job's later attempts make the same GUID under names of their own (`<guid>-2.png`), so two
    attempts racing never write one key, and the loser's clean-up never removes the winner's bytes.
    """
    suffix = f"-{attempt}" if attempt > 1 else ""
    return f"{guid}{suffix}.{CONTENT_TYPE_EXTENSIONS.get(content_type, 'bin')}"


class GenerationInfo(BaseModel):
    """Provenance: what made an image, as far as the generator told us."""

    model_config = _FROZEN

    generator: str = Field(description="The generator adapter that made the image, e.g. 'openai'.")
    model: str | None = Field(default=None, description="The model name the generator used.")
    revised_prompt: str | None = Field(
        default=None, description="The prompt as the upstream rewrote it, if it did."
    )
    upstream_request_id: str | None = Field(
        default=None, description="The upstream's own request id, for support tickets."
    )
    latency_ms: float | None = Field(default=None, description="How long generation took.")
    usage: dict[str, int] | None = Field(default=None, description="Token usage as reported by the upstream.")


class GenerationOptions(BaseModel):
    """Per-request generation options a generator may honour."""

    model_config = _FROZEN

    size: str | None = None


class GeneratedImage(BaseModel):
    """What a generator returns: the bytes, their type, and provenance."""

    model_config = _FROZEN

    data: bytes
    content_type: str
    generation: GenerationInfo


class NewImage(BaseModel):
    """An image record before the repository has given it an internal id."""

    model_config = _FROZEN

    guid: UUID
    prompt: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    generation: GenerationInfo
    created_at: AwareDatetime
    updated_at: AwareDatetime
    owner: str = ANONYMOUS  # the name of the API key that made it, never the key

    @field_validator("created_at", "updated_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class ImageRecord(NewImage):
    """The internal image record: a NewImage plus its database id, which never leaves the service."""

    id: int


class ImageDetail(BaseModel):
    """The public view of an image. Carries the GUID, never the internal id."""

    model_config = _FROZEN

    guid: UUID
    prompt: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    generator: str
    generation: GenerationInfo
    created_at: AwareDatetime
    updated_at: AwareDatetime
    owner: str = Field(default=ANONYMOUS, description="The name of the API key that made it.")

    @classmethod
    def from_record(cls, record: NewImage) -> ImageDetail:
        """The public detail of a record."""
        return cls(
            guid=record.guid,
            prompt=record.prompt,
            filename=record.filename,
            content_type=record.content_type,
            size_bytes=record.size_bytes,
            sha256=record.sha256,
            generator=record.generation.generator,
            generation=record.generation,
            created_at=record.created_at,
            updated_at=record.updated_at,
            owner=record.owner,
        )


class PageKey(BaseModel):
    """Where a newest-first listing resumes: strictly after this (created_at, guid).

    For images `guid` is the image's GUID; for jobs, the job's id.
    """

    model_config = _FROZEN

    created_at: AwareDatetime
    guid: UUID


class ImageFilter(BaseModel):
    """What a listing is narrowed to: every condition given must hold.

    `words` are search terms (search.query_terms of what was asked); an empty tuple finds nothing.
    `created_after` and `created_before` are exclusive.
    """

    model_config = _FROZEN

    words: tuple[str, ...] | None = None
    generator: str | None = None
    model: str | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    owner: str | None = None

    @field_validator("created_after", "created_before")
    @classmethod
    def _bound_to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def admits(self, record: NewImage, *, prompt_terms: frozenset[str]) -> bool:
        """Whether a record passes every condition but the words (those need the record's terms)."""
        if self.words is not None and not search.matches(self.words, prompt_terms):
            return False
        if self.generator is not None and record.generation.generator != self.generator:
            return False
        if self.model is not None and record.generation.model != self.model:
            return False
        if self.owner is not None and record.owner != self.owner:
            return False
        if self.created_after is not None and record.created_at <= self.created_after:
            return False
        return self.created_before is None or record.created_at < self.created_before


class ImageContent(BaseModel):
    """An image's bytes with what is needed to serve them."""

    model_config = _FROZEN

    data: bytes
    content_type: str
    sha256: str


class BlobInfo(BaseModel):
    """One object in a blob store, as listed for garbage collection."""

    model_config = _FROZEN

    key: str
    size_bytes: int
    modified_at: AwareDatetime


class JobStatus(StrEnum):
    """Where a generation job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        """Whether the job will never change again."""
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


class JobError(BaseModel):
    """Why a job failed: the domain exception's class name, its message and any retry hint."""

    model_config = _FROZEN

    kind: str
    detail: str
    retry_after_s: float | None = None


# What a webhook may be told: "start" (image.job.started) and "completed" (succeeded, failed, canceled).
WebhookEventFilter = Literal["start", "completed"]
WebhookEventType = Literal[
    "image.job.started", "image.job.succeeded", "image.job.failed", "image.job.canceled"
]


class NewJob(BaseModel):
    """A job as accepted, before any worker has seen it; or, leased, as the request that accepted it
    is about to run it."""

    model_config = _FROZEN

    id: UUID
    prompt: str
    size: str | None
    created_at: AwareDatetime
    webhook: str | None = None
    webhook_events_filter: tuple[WebhookEventFilter, ...] = ("completed",)
    idempotency_key: str | None = None
    request_hash: str | None = None
    # Whether a runner has been told of the job: its message published, or it runs in the request
    # that accepted it. The sweep publishes queued jobs that no runner was told of.
    published: bool = False
    owner: str = ANONYMOUS  # the name of the API key that asked for it, never the key
    # On a Job: while `running`, until when its attempt holds it. On a NewJob: set when the request
    # that accepts the job runs it itself (no broker); the job is then recorded already claimed, which
    # saves the claim's round trip.
    lease_until: AwareDatetime | None = None

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("lease_until")
    @classmethod
    def _lease_to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def added_state(self) -> tuple[JobStatus, int, datetime | None]:
        """Status, attempts and start of the job as JobRepository.add records it: `queued`; or,
        leased, `running` in its first attempt, started when it was created."""
        if self.lease_until is None:
            return JobStatus.QUEUED, 0, None
        return JobStatus.RUNNING, 1, self.created_at

    def as_added(self) -> Job:
        """The job as JobRepository.add records it (added_state)."""
        status, attempts, started_at = self.added_state()
        return Job(**self.model_dump(), status=status, attempts=attempts, started_at=started_at)


class Job(NewJob):
    """A generation job: the database's word on where it stands. A message only carries its id."""

    status: JobStatus
    attempts: int = 0
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    cancel_requested: bool = False
    image_guid: UUID | None = None
    error: JobError | None = None

    @field_validator("started_at", "finished_at")
    @classmethod
    def _optional_to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)


class WebhookDeliveryStatus(StrEnum):
    """Where one event's delivery to one webhook stands."""

    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # retries spent, or the receiver answered 410 Gone


class NewWebhookDelivery(BaseModel):
    """One event to deliver to one webhook URL; the body is fixed once, each attempt signed afresh."""

    model_config = _FROZEN

    id: str = Field(description="The webhook-id header: the same on every attempt of this event.")
    job_id: UUID
    event: WebhookEventType
    url: str
    body: str
    created_at: AwareDatetime
    next_attempt_at: AwareDatetime

    @field_validator("created_at", "next_attempt_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class WebhookDelivery(NewWebhookDelivery):
    """A delivery and what its attempts so far have met."""

    status: WebhookDeliveryStatus = WebhookDeliveryStatus.PENDING
    attempts: int = 0
    last_status: str | None = Field(default=None, description="The last HTTP status, or why there was none.")
    last_attempt_at: AwareDatetime | None = None
    lease_until: AwareDatetime | None = None

    @field_validator("last_attempt_at", "lease_until")
    @classmethod
    def _optional_to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)
