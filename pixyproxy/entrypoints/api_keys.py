"""Named API keys and the caller they identify: who made an image, who may see it.

`PIXYPROXY_API_KEYS` holds `name:key` pairs and bare keys, comma-separated. A bare key is named by
the first 8 hex digits of its SHA-256, so its name says nothing of it. Names starting with `admin`
are administrators. `PIXYPROXY_API_KEYS_FILE` names a file of more, one `name:key` a line, re-read on
SIGHUP. A key itself is only ever compared, never stored with a record, logged or shown.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

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
        _add_key(keys, name, key, setting="api_keys", where=f"item {position}")
    return keys


def parse_api_keys_file(text: str) -> list[NamedKey]:
    """The keys of a `PIXYPROXY_API_KEYS_FILE`: one `name:key` a line; blank lines and `#` comments
    are skipped. Raises ValueError naming the line (and the name), never quoting a key."""
    keys: list[NamedKey] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = _NAMED.fullmatch(line)
        if not match:
            raise ValueError(f"api_keys_file: line {number} is not name:key")
        _add_key(
            keys, match.group(1), match.group(2).strip(), setting="api_keys_file", where=f"line {number}"
        )
    return keys


def _add_key(keys: list[NamedKey], name: str, key: str, *, setting: str, where: str) -> None:
    """Append one key after the checks both sources share; the error names `where`, never the key."""
    if not key:
        raise ValueError(f"{setting}: {where} ({name}) has an empty key")
    if name == ANONYMOUS:
        raise ValueError(f"{setting}: {where}: the name {ANONYMOUS!r} is reserved")
    if any(k.name == name for k in keys):
        raise ValueError(f"{setting}: the name {name!r} is given twice")
    if any(k.key == key for k in keys):
        raise ValueError(f"{setting}: {where} ({name}) repeats an earlier key")
    keys.append(NamedKey(name, key))


def read_api_keys_file(path: str) -> list[NamedKey]:
    """The keys of the file at `path`. Raises ValueError (never quoting a key) if unreadable or bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ValueError(f"api_keys_file: cannot read the file: {reason}") from None
    return parse_api_keys_file(text)


def combine_keys(inline: list[NamedKey], from_file: list[NamedKey]) -> list[NamedKey]:
    """The keys of `PIXYPROXY_API_KEYS` and of the file together. Raises ValueError if a name or a
    key is in both (the message names the name, never the key)."""
    for named in from_file:
        if any(k.name == named.name for k in inline):
            raise ValueError(f"api_keys_file: the name {named.name!r} is also in PIXYPROXY_API_KEYS")
        if any(k.key == named.key for k in inline):
            raise ValueError(f"api_keys_file: ({named.name}) repeats a key of PIXYPROXY_API_KEYS")
    return [*inline, *from_file]


class KeyRing:
    """The key table the auth middleware checks, swapped whole on a reload: readers see the old
    table or the new one, never a mix (one attribute assignment, on the event loop's thread)."""

    def __init__(self, keys: list[NamedKey]) -> None:
        self._entries = self._table(keys)

    @staticmethod
    def _table(keys: list[NamedKey]) -> tuple[tuple[bytes, Caller], ...]:
        return tuple((named.key.encode(), named.caller) for named in keys)

    @property
    def entries(self) -> tuple[tuple[bytes, Caller], ...]:
        """(key bytes, caller) of every key; empty means no authentication."""
        return self._entries

    def replace(self, keys: list[NamedKey]) -> None:
        """Swap in a new table at once."""
        self._entries = self._table(keys)
