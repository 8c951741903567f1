"""Incoming requests, validated with pydantic before any use-case runs."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from pixyproxy.domain import search
from pixyproxy.domain.exceptions import InvalidRequestError
from pixyproxy.domain.models import ImageFilter, PageKey, WebhookEventFilter

MAX_PROMPT_CHARS = 4000
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000

# Control characters other than tab and newline, including DEL and the C1 range.
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The schema pattern says the same to clients: no forbidden control character, and some
# non-whitespace character, so a prompt that is all whitespace is refused before stripping.
PROMPT_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"
GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Visible ASCII only: a key travels in an HTTP header and is compared byte for byte.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
# What each pattern asks for, in words: both the parsers here and the HTTP layer's schema checks say it.
PROMPT_MESSAGE = "must contain some text, and no control characters other than newline and tab"
GUID_MESSAGE = "must be a UUID such as 3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b"
IDEMPOTENCY_KEY_MESSAGE = "must be 1 to 255 visible ASCII characters"
WEBHOOK_MESSAGE = "must be an absolute http or https URL in ASCII, without credentials"
# The sizes image APIs commonly offer; every generator PixyProxy ships can draw each of them.
ImageSize = Literal["256x256", "512x512", "1024x1024", "1024x1536", "1536x1024", "1024x1792", "1792x1024"]
# The most JSON bytes one prompt character (counted after NFC) can arrive as: U+1F82 sent decomposed
# (NFD) is four \uXXXX escapes. A unit test checks this against every code point.
LONGEST_ESCAPED_CHAR_BYTES = 24
ASCII_ESCAPED_CHAR_BYTES = 6
MAX_WEBHOOK_CHARS = 2048
# Whitespace between JSON tokens, as pretty-printing clients send it.
JSON_WHITESPACE_ALLOWANCE = 1024


def largest_valid_body_bytes() -> int:
    """The size of the largest valid POST /image body: every field at its maximum, each character
    escaped at its longest. The body cap is never below it, so no valid request is refused as too large.
    """
    longest_size = max(get_args(ImageSize), key=len)
    events = list(get_args(WebhookEventFilter))
    fields = {"prompt": "", "size": "", "webhook": "", "webhook_events_filter": [""] * len(events)}
    skeleton = json.dumps(fields)
    # The ASCII-only fields may still arrive with every character written as a \u00XX escape.
    ascii_chars = len(longest_size) + MAX_WEBHOOK_CHARS + sum(len(e) for e in events)
    return (
        len(skeleton)
        + MAX_PROMPT_CHARS * LONGEST_ESCAPED_CHAR_BYTES
        + ascii_chars * ASCII_ESCAPED_CHAR_BYTES
        + JSON_WHITESPACE_ALLOWANCE
    )


def normalize_text(value: object) -> object:
    """Text in Unicode NFC, so that one text typed on two keyboards is one text; other values unchanged."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


EventsFilter = Annotated[list[WebhookEventFilter], Field(min_length=1, max_length=2)]


class GenerateImageRequest(BaseModel):
    """The body of POST /image."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    prompt: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=PROMPT_PATTERN),
    ] = Field(
        description=(
            "What to draw. Normalised to Unicode NFC and stripped of surrounding whitespace; "
            "1 to 4,000 characters (after NFC); no control characters except newline and tab."
        ),
        examples=["a red fox in snow"],
    )
    size: ImageSize | None = Field(
        default=None,
        description="Image size as WIDTHxHEIGHT; the generator's configured default when absent.",
        examples=["512x512"],
    )
    webhook: Annotated[str, StringConstraints(max_length=MAX_WEBHOOK_CHARS)] | None = Field(
        default=None,
        description=(
            "An absolute http or https URL told of the job's events (Standard Webhooks, signed). "
            "Hosts that are or resolve to loopback, private, link-local or multicast addresses are refused."
        ),
        examples=["https://example.com/hooks/pixyproxy"],
    )
    webhook_events_filter: EventsFilter | None = Field(
        default=None,
        description='Which events the webhook is told: "start" and/or "completed" (the default).',
        examples=[["start", "completed"]],
    )

    @field_validator("webhook")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.username is not None
            or not value.isascii()
            or not value.isprintable()
            or " " in value
        ):
            raise ValueError(WEBHOOK_MESSAGE)
        try:
            parts.port  # noqa: B018  # raises for a port out of range
        except ValueError:
            raise ValueError(WEBHOOK_MESSAGE) from None
        return value

    @field_validator("webhook_events_filter")
    @classmethod
    def _distinct_events(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("webhook_events_filter must not name an event twice")
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _nfc_prompt(cls, value: object) -> object:
        # Before the length and pattern checks, so they count what is stored.
        return normalize_text(value)

    @field_validator("prompt")
    @classmethod
    def _clean_prompt(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("prompt must not be empty or only whitespace")
        if _FORBIDDEN_CONTROL.search(stripped):
            raise ValueError("prompt must not contain control characters other than newline and tab")
        return stripped


def parse_generate_request(payload: object) -> GenerateImageRequest:
    """Validate a raw payload (from the web or the CLI) into a GenerateImageRequest."""
    if isinstance(payload, GenerateImageRequest):
        return payload
    try:
        return GenerateImageRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequestError(str(first["msg"]).removeprefix("Value error, "), field=field) from None


def parse_guid(value: str | UUID) -> UUID:
    """A GUID from its text; anything but a canonical UUID is an InvalidRequestError."""
    if isinstance(value, UUID):
        return value
    try:
        guid = UUID(value) if len(value) == 36 else None
    except ValueError:
        guid = None
    if guid is None or str(guid) != value.lower():
        raise InvalidRequestError(GUID_MESSAGE, field="guid")
    return guid


def parse_idempotency_key(key: str) -> str:
    """The key if it is 1 to 255 visible ASCII characters, else an InvalidRequestError."""
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise InvalidRequestError(IDEMPOTENCY_KEY_MESSAGE, field="Idempotency-Key")
    return key


def parse_limit(limit: int) -> int:
    """A page size within 1..MAX_PAGE_LIMIT."""
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidRequestError(f"must be between 1 and {MAX_PAGE_LIMIT}", field="limit")
    return limit


def encode_cursor(key: PageKey) -> str:
    """An opaque cursor for the page after `key`."""
    raw = f"{key.created_at.isoformat()}|{key.guid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    """The PageKey behind an opaque cursor; a tampered cursor is an InvalidRequestError."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, guid = raw.split("|")
        return PageKey(created_at=datetime.fromisoformat(created_at), guid=UUID(guid))
    except (ValueError, binascii.Error, UnicodeDecodeError, ValidationError):
        raise InvalidRequestError("is not a cursor this service issued", field="cursor") from None


MAX_SEARCH_CHARS = 200
MAX_GENERATOR_CHARS = 100
MAX_MODEL_CHARS = 255
# The times a database can hold; a bound beyond them is the same as the limit itself.
_EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


# ISO-8601 as the filters take it: a date, optionally a time (to the microsecond), optionally a zone.
ISO_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
ISO_TIME_MESSAGE = "must be an ISO-8601 date or date and time, such as 2026-11-27T21:10:58Z"


def _time_bound(value: datetime | str | None, *, field: str) -> datetime | None:
    """A filter time in UTC (a time without a zone is taken as UTC), within what databases hold."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            if not re.fullmatch(ISO_TIME_PATTERN, value):
                raise ValueError(value)
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequestError(ISO_TIME_MESSAGE, field=field) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # an offset that carries year 1 or 9999 past datetime's range
        utc = _EARLIEST if value.year < 5000 else _LATEST
    return min(max(utc, _EARLIEST), _LATEST)


def _optional_text(value: str | None, *, field: str, max_chars: int) -> str | None:
    text = unicodedata.normalize("NFC", value).strip() if value is not None else ""
    if len(text) > max_chars:
        raise InvalidRequestError(f"must be at most {max_chars} characters", field=field)
    return text or None


def parse_image_filter(
    *,
    words: str | None = None,
    generator: str | None = None,
    model: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
) -> ImageFilter | None:
    """The listing filter of a request, or None when it asks for none. Words are normalised to NFC
    and split into search terms (quotes and operators are not terms); blank text is no filter."""
    text = _optional_text(words, field="q", max_chars=MAX_SEARCH_CHARS)
    try:
        terms = search.query_terms(text) if text is not None else None
    except ValueError as err:
        raise InvalidRequestError(str(err), field="q") from None
    found = ImageFilter(
        words=terms,
        generator=_optional_text(generator, field="generator", max_chars=MAX_GENERATOR_CHARS),
        model=_optional_text(model, field="model", max_chars=MAX_MODEL_CHARS),
        created_after=_time_bound(created_after, field="created_after"),
        created_before=_time_bound(created_before, field="created_before"),
    )
    return None if found == ImageFilter() else found
