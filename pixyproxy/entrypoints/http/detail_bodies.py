"""The detail of a record and the JSON body of `GET /image/{guid}`, made once per record rather
than once per request.

FastAPI validates and serialises a route's return value against its `response_model` on every
request; for the detail read that was a tenth of the server's time (make bench figure 1's profile:
`TypeAdapter.dump_json`, `serialize_response`, `ImageDetail.from_record`). The body is a function of
the record alone, and a cached repository (pixyproxy.app.caching) hands out the same record object
for as long as it trusts it: so the bytes made from a record are kept beside it, and used again only
for that very object. A record read afresh, after the cache's short ttl or without a cache, is
serialised afresh. Who may see a record is decided before its body is asked for, so the bytes carry
no one's permission.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import TypeAdapter

from pixyproxy.domain.models import ImageDetail, ImageRecord

DEFAULT_MAX_ENTRIES = 1024

# The serialiser FastAPI uses for `response_model=ImageDetail` (by alias, nothing excluded), so the
# bytes are the ones it would send.
_DETAIL = TypeAdapter(ImageDetail)


class DetailBodies:
    """ImageDetails and their JSON bytes by GUID, each kept with the record object made from."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._kept: dict[UUID, tuple[ImageRecord, ImageDetail, bytes]] = {}

    def detail(self, record: ImageRecord) -> ImageDetail:
        """The detail of `record`, as `ImageDetail.from_record` makes it."""
        return self._made_from(record)[1]

    def body(self, record: ImageRecord) -> bytes:
        """The detail of `record` as JSON bytes, byte for byte what FastAPI's response_model makes."""
        return self._made_from(record)[2]

    def _made_from(self, record: ImageRecord) -> tuple[ImageRecord, ImageDetail, bytes]:
        kept = self._kept.get(record.guid)
        if kept is not None and kept[0] is record:
            return kept
        detail = ImageDetail.from_record(record)
        made = (record, detail, _DETAIL.dump_json(detail, by_alias=True))
        if self._max_entries > 0:
            if len(self._kept) >= self._max_entries and record.guid not in self._kept:
                del self._kept[next(iter(self._kept))]  # the oldest kept
            self._kept[record.guid] = made
        return made
