"""Named API keys and the caller they identify: who made an image, who may see it.

`PIXYPROXY_API_KEYS` holds `name:key` pairs and bare keys, comma-separated. A bare key is named by
the first 8 hex digits of its SHA-256, so its name says nothing of it. Names starting with `admin`
are administrators. A key itself is only ever compared, never stored with a record, logged or shown.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from pixyproxy.domain.models import ANONYMOUS

KEY_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAMED = re.compile(rf"({KEY_NAME_PATTERN}):(.*)")
ADMIN_PREFIX = "admin"


@dataclass(frozen=True)
class Caller:
    """Who is asking: the name of the key presented (`anonymous` without auth) and whether it is an
    administrator. Request-scoped; it never carries the key."""

    name: str
    is_admin: bool = False

    def visible_scope(self, *, isolation: bool) -> str | None:
        """The owner this caller is confined to, or None when it may see everyone's."""
        return self.name if isolation and not self.is_admin else None


ANONYMOUS_CALLER = Caller(ANONYMOUS)


@dataclass(frozen=True)
class NamedKey:
    """One configured key and its name; the key is left out of repr, so it never reaches a log."""

    name: str
    key: str = field(repr=False)

    @property
    def caller(self) -> Caller:
        """The caller this key identifies."""
        return Caller(self.name, is_admin=self.name.startswith(ADMIN_PREFIX))


def bare_key_name(key: str) -> str:
    """The name of a key given without one: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_api_keys(raw: str) -> list[NamedKey]:
    """The keys of a `PIXYPROXY_API_KEYS` value. Raises ValueError, whose message never quotes a key.

    An item is `name:key` when the text before its first colon is a valid name (letters, digits,
    `.`, `_`, `-`, up to 64); otherwise the whole item is a bare key.
    """
    keys: list[NamedKey] = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        match = _NAMED.fullmatch(item)
        name, key = (match.group(1), match.group(2).strip()) if match else (bare_key_name(item), item)
        if not key:
            raise ValueError(f"api_keys: item {position} ({name}) has an empty key")
        if name == ANONYMOUS:
            raise ValueError(f"api_keys: item {position}: the name {ANONYMOUS!r} is reserved")
        if any(k.name == name for k in keys):
            raise ValueError(f"api_keys: the name {name!r} is given twice")
        if any(k.key == key for k in keys):
            raise ValueError(f"api_keys: item {position} ({name}) repeats an earlier key")
        keys.append(NamedKey(name, key))
    return keys
