"""Garbage collection: bytes with no record (a crash between the two writes of a generation) and
records with no bytes (a crash between the two steps of a delete, which removes the bytes first)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from pixyproxy.app.thumbnails import THUMBNAIL_WIDTHS, thumbnail_key
from pixyproxy.domain.models import BlobInfo
from pixyproxy.ports import BlobStore, ImageRepository

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What a garbage-collection pass found and did."""

    records: int
    blobs: int
    orphan_blobs: list[BlobInfo] = field(default_factory=list)
    missing_blobs: list[tuple[UUID, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept_young: list[str] = field(default_factory=list)
    forgotten: list[UUID] = field(default_factory=list)


class GarbageCollector:
    """Compares the repository's filenames with the blob store's keys."""

    def __init__(self, *, repository: ImageRepository, blob_store: BlobStore) -> None:
        self._repository = repository
        self._blob_store = blob_store

    async def collect(
        self, *, now: datetime, grace: timedelta, delete: bool, forget_missing: bool = False
    ) -> GcReport:
        """Report orphans both ways; with `delete`, remove orphan bytes older than `grace`; with
        `forget_missing`, delete the records whose bytes are gone (each checked once more first),
        finishing deletes that stopped between their two steps.

        The grace period protects bytes of a generation under way: they are stored a moment
        before their record, and must not be taken for orphans in that moment.
        """
        records = await self._repository.list_all_filenames()
        blobs = await self._blob_store.list_blobs()
        recorded = {filename for _, filename in records}
        # A recorded image's thumbnails are derived bytes it owns; only a deleted image's are orphans.
        recorded |= {thumbnail_key(guid, width) for guid, _ in records for width in THUMBNAIL_WIDTHS}
        stored = {blob.key for blob in blobs}
        report = GcReport(
            records=len(records),
            blobs=len(blobs),
            orphan_blobs=sorted((b for b in blobs if b.key not in recorded), key=lambda b: b.key),
            missing_blobs=sorted((r for r in records if r[1] not in stored), key=lambda r: r[1]),
        )
        if delete:
            for blob in report.orphan_blobs:
                if now - blob.modified_at < grace:
                    report.kept_young.append(blob.key)
                    continue
                await self._blob_store.delete(blob.key)
                report.deleted.append(blob.key)
                log.info("gc deleted orphan bytes %s (%d bytes)", blob.key, blob.size_bytes)
        for guid, filename in report.missing_blobs:
            log.warning("gc: record %s points at missing bytes %s", guid, filename)
            gone = forget_missing and not await self._blob_store.exists(filename)
            if gone and await self._repository.delete(guid):
                report.forgotten.append(guid)
                log.info("gc deleted record %s, whose bytes %s were gone", guid, filename)
        return report
