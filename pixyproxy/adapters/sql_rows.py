"""The one place an image record becomes an SQL row and back, for the SQLite and MySQL repositories.

Both tables have the same columns; only how a timestamp is stored differs. Each repository hands
in its pair of timestamp conversions and uses the mapping it gets back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from pixyproxy.domain.models import (
    GenerationInfo,
    ImageRecord,
    Job,
    JobError,
    JobStatus,
    NewImage,
    NewJob,
    NewWebhookDelivery,
    WebhookDelivery,
    WebhookDeliveryStatus,
)

JOB_COLUMNS = (
    "id, prompt, size, status, attempts, created_at, started_at, finished_at, lease_until,"
    " cancel_requested, published, image_guid, error, idem_key, request_hash, webhook, webhook_events, owner"
)
DELIVERY_COLUMNS = (
    "id, job_id, event, url, body, status, attempts, last_status, created_at, next_attempt_at,"
    " last_attempt_at, lease_until"
)
# A job row written before webhooks existed has NULL webhook_events: the filter's default.
_DEFAULT_WEBHOOK_EVENTS = NewJob.model_fields["webhook_events_filter"].default


# A job's event filter is one of a handful of values, written and read with every job: json.dumps
# with separators builds an encoder per call (5 % of an accept's time, make bench figure 6's profile).
@functools.lru_cache(maxsize=32)
def _events_text(events: tuple[str, ...]) -> str:
    return json.dumps(list(events), separators=(",", ":"))


@functools.lru_cache(maxsize=32)
def _events_of(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))


class Row(Protocol):
    """A row read by column name: a dict, an aiomysql DictCursor row or a sqlite3.Row."""

    def __getitem__(self, column: str, /) -> Any: ...


@dataclass(frozen=True)
class RowMapping:
    """Image and idempotency rows, with the timestamps stored the way one database wants them."""

    to_db_time: Callable[[datetime], Any]
    from_db_time: Callable[[Any], datetime]

    def image_to_row(self, image: NewImage) -> dict[str, Any]:
        """The SQL parameters of a record."""
        return {
            "guid": str(image.guid),
            "prompt": image.prompt,
            "filename": image.filename,
            "content_type": image.content_type,
            "size_bytes": image.size_bytes,
            "sha256": image.sha256,
            "generation": image.generation.model_dump_json(),
            "created_at": self.to_db_time(image.created_at),
            "updated_at": self.to_db_time(image.updated_at),
            "owner": image.owner,
        }

    def row_to_image(self, row: Row) -> ImageRecord:
        """The record of a row."""
        return ImageRecord(
            id=int(row["id"]),
            guid=UUID(row["guid"]),
            prompt=row["prompt"],
            filename=row["filename"],
            content_type=row["content_type"],
            size_bytes=int(row["size_bytes"]),
            sha256=row["sha256"],
            generation=GenerationInfo.model_validate_json(row["generation"]),
            created_at=self.from_db_time(row["created_at"]),
            updated_at=self.from_db_time(row["updated_at"]),
            owner=row["owner"],
        )

    def job_to_row(self, job: NewJob) -> dict[str, Any]:
        """The SQL parameters of a new job."""
        status, attempts, started_at = job.added_state()  # leased: claimed by the request that runs it
        return {
            "id": str(job.id),
            "prompt": job.prompt,
            "size": job.size,
            "created_at": self.to_db_time(job.created_at),
            "idem_key": job.idempotency_key,
            "request_hash": job.request_hash,
            "published": int(job.published),
            "status": status.value,
            "attempts": attempts,
            "lease_until": None if job.lease_until is None else self.to_db_time(job.lease_until),
            "started_at": None if started_at is None else self.to_db_time(started_at),
            "webhook": job.webhook,
            "webhook_events": _events_text(job.webhook_events_filter),
            "owner": job.owner,
        }

    def row_to_job(self, row: Row) -> Job:
        """The job of a row (all of JOB_COLUMNS)."""
        key = row["idem_key"]
        events = row["webhook_events"]
        return Job(
            id=UUID(row["id"]),
            prompt=row["prompt"],
            size=row["size"],
            status=JobStatus(row["status"]),
            attempts=int(row["attempts"]),
            created_at=self.from_db_time(row["created_at"]),
            started_at=self._optional_time(row["started_at"]),
            finished_at=self._optional_time(row["finished_at"]),
            lease_until=self._optional_time(row["lease_until"]),
            cancel_requested=bool(row["cancel_requested"]),
            published=bool(row["published"]),
            image_guid=UUID(row["image_guid"]) if row["image_guid"] else None,
            error=JobError.model_validate_json(row["error"]) if row["error"] else None,
            idempotency_key=key.decode() if isinstance(key, bytes | bytearray) else key,
            request_hash=row["request_hash"],
            webhook=row["webhook"],
            webhook_events_filter=_events_of(events) if events else _DEFAULT_WEBHOOK_EVENTS,
            owner=row["owner"],
        )

    def delivery_to_row(self, delivery: NewWebhookDelivery) -> dict[str, Any]:
        """The SQL parameters of a new (pending, never attempted) delivery."""
        return {
            "id": delivery.id,
            "job_id": str(delivery.job_id),
            "event": delivery.event,
            "url": delivery.url,
            "body": delivery.body,
            "status": WebhookDeliveryStatus.PENDING.value,
            "created_at": self.to_db_time(delivery.created_at),
            "next_attempt_at": self.to_db_time(delivery.next_attempt_at),
        }

    def row_to_delivery(self, row: Row) -> WebhookDelivery:
        """The delivery of a row (all of DELIVERY_COLUMNS)."""
        return WebhookDelivery(
            id=row["id"],
            job_id=UUID(row["job_id"]),
            event=row["event"],
            url=row["url"],
            body=row["body"],
            status=WebhookDeliveryStatus(row["status"]),
            attempts=int(row["attempts"]),
            last_status=row["last_status"],
            created_at=self.from_db_time(row["created_at"]),
            next_attempt_at=self.from_db_time(row["next_attempt_at"]),
            last_attempt_at=self._optional_time(row["last_attempt_at"]),
            lease_until=self._optional_time(row["lease_until"]),
        )

    def _optional_time(self, value: Any) -> datetime | None:
        return None if value is None else self.from_db_time(value)
