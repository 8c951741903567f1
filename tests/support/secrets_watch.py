"""Every secret a test hands a PixyProxy process, beside the log that process writes, so that the
integration session can check at its end that no key, upstream token or signing secret reached a
log line, in any test, whatever the test itself looked at."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Settings whose whole value is a secret.
SECRET_SETTINGS = ("OPENAI_API_KEY", "PIXYPROXY_WEBHOOK_SECRET")
MIN_SECRET_CHARS = 8  # shorter values (a test's "x") would match ordinary text


@dataclass(frozen=True)
class Watched:
    """A process's log and the secrets it was given."""

    log_path: Path
    secrets: dict[str, str]  # the secret -> the setting it came from
    keys_file: Path | None


_watched: list[Watched] = []


def api_keys_of(text: str) -> list[str]:
    """The keys (never the names) of `name:key` items, one per comma or line; bare items are keys."""
    keys = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if item and not item.startswith("#"):
            keys.append(item.partition(":")[2].strip() if ":" in item else item)
    return [key for key in keys if key]


def secrets_in(env: Mapping[str, str]) -> dict[str, str]:
    """The secrets among these settings, each with the name of the setting it came from."""
    found = {key: "PIXYPROXY_API_KEYS" for key in api_keys_of(env.get("PIXYPROXY_API_KEYS", ""))}
    found.update({env[name]: name for name in SECRET_SETTINGS if env.get(name)})
    return {secret: name for secret, name in found.items() if len(secret) >= MIN_SECRET_CHARS}


def watch(log_path: Path, env: Mapping[str, str]) -> None:
    """Remember a process's log and the secrets of its environment (and keys file, read at the end)."""
    keys_file = env.get("PIXYPROXY_API_KEYS_FILE")
    _watched.append(Watched(log_path, secrets_in(env), Path(keys_file) if keys_file else None))


def leaks() -> list[str]:
    """Each secret found in the log of a process it was given to, as `log: setting`."""
    found = []
    for watched in _watched:
        secrets = dict(watched.secrets)
        if watched.keys_file is not None and watched.keys_file.exists():
            secrets.update({k: "PIXYPROXY_API_KEYS_FILE" for k in api_keys_of(watched.keys_file.read_text())})
        try:
            text = watched.log_path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        found += [
            f"{watched.log_path}: a value of {name}" for secret, name in secrets.items() if secret in text
        ]
    return found


def watched_logs() -> int:
    """How many logs are watched so far."""
    return len(_watched)
