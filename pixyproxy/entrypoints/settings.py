"""Reads containers.yml (with ${ENV:default} overrides) and validates every value at start-up.

A wrong or missing value becomes one ConfigurationError naming the environment variable
that sets it, so start-up stops with one clear line instead of failing on first use.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pixyproxy.adapters.quota_limits import parse_rate, parse_rate_overrides
from pixyproxy.app.requests import largest_valid_body_bytes
from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.api_keys import NamedKey, combine_keys, parse_api_keys, read_api_keys_file

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "containers.yml"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")  # ${NAME:default}

Positive = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Size = Annotated[str, Field(pattern=r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RepositorySettings(_Section):
    """Which repository, and how to reach it."""

    kind: Literal["sqlite", "mysql", "memory"]
    sqlite_path: str
    # normal: a commit survives a crash of PixyProxy; full: also the machine losing power (an fsync each).
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    mysql_url: SecretStr | None = None
    mysql_pool_size: Positive
    mysql_connect_timeout_s: PositiveSeconds
    init_schema: bool
    cache_entries: Annotated[int, Field(ge=0)]
    # At most 5 s: a record deleted on another worker or server must stop being served within 5 s.
    cache_ttl_s: Annotated[float, Field(gt=0, le=5)]

    @model_validator(mode="after")
    def _mysql_needs_url(self) -> RepositorySettings:
        if self.kind == "mysql":
            url = self.mysql_url.get_secret_value() if self.mysql_url else ""
            if not url.startswith(("mysql://", "mysql+aiomysql://")):
                raise ValueError(
                    "mysql_url: required for the mysql repository, as mysql://user:password@host:3306/database"
                )
        return self


class BlobStoreSettings(_Section):
    """Which blob store, and where."""

    kind: Literal["local", "s3", "memory"]
    local_root: str
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str
    s3_prefix: str | None = ""
    s3_create_bucket: bool
    s3_timeout_s: PositiveSeconds
    s3_max_attempts: Positive
    presign: bool
    presign_expires_s: Annotated[int, Field(gt=0, le=604800)]

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> BlobStoreSettings:
        if self.kind == "s3" and not self.s3_bucket:
            raise ValueError("s3_bucket: required for the s3 blob store")
        return self


class GeneratorSettings(_Section):
    """Which generator, and its limits."""

    kind: Literal["procedural", "openai", "memory"]
    procedural_size: Size
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str
    openai_size: Size | Literal["auto"]
    openai_quality: str
    openai_timeout_s: PositiveSeconds
    openai_max_retries: Annotated[int, Field(ge=0, le=10)]
    openai_max_download_bytes: Positive
    max_concurrent: Positive
    queue_timeout_s: Annotated[float, Field(ge=0)]

    @field_validator("openai_api_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: object) -> object:
        return None if value is None else str(value)

    @model_validator(mode="after")
    def _openai_needs_key(self) -> GeneratorSettings:
        if self.kind == "openai" and not (self.openai_api_key and self.openai_api_key.get_secret_value()):
            raise ValueError("openai_api_key: required for the openai generator; set OPENAI_API_KEY")
        return self


class HttpSettings(_Section):
    """Request limits and authentication."""

    max_body_bytes: Annotated[int, Field(gt=0)] | None = None
    api_keys: SecretStr | None = None
    api_keys_file: str | None = None  # one `name:key` a line; re-read on SIGHUP
    idempotency_retention_s: Positive
    shutdown_grace_s: Annotated[float, Field(ge=0)]
    keep_alive_s: PositiveSeconds
    # A header value: visible ASCII and spaces, no line breaks.
    content_cache_control: Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,200}$")]
    # x-accel-redirect: content answers with the headers and an X-Accel-Redirect to this internal
    # location prefix, and nginx in front sends the file (see README, "Serving image bytes with nginx").
    content_offload: Literal["none", "x-accel-redirect"] = "none"
    content_offload_prefix: Annotated[str, Field(pattern=r"^/([A-Za-z0-9._~-]+/)+$")] = "/_pixyproxy_content/"
    public_url: str | None = None
    trusted_proxies: str | None = None
    tenant_isolation: bool = False  # non-admin keys see only their own images and jobs

    @field_validator("api_keys", "public_url", "trusted_proxies", mode="before")
    @classmethod
    def _keys_as_text(cls, value: object) -> object:
        return None if value is None else str(value)

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return None if value is None else str(value).strip() or None

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s) URL such as https://images.example.com")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for item in (value or "").split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()!r} is not an IP address or CIDR network") from None
        return value or None

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks whose X-Forwarded-Proto and X-Forwarded-Host are believed."""
        items = (self.trusted_proxies or "").split(",")
        return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]

    @model_validator(mode="after")
    def _cap_fits_every_valid_request(self) -> HttpSettings:
        if self.max_body_bytes is not None and self.max_body_bytes < largest_valid_body_bytes():
            raise ValueError(
                f"max_body_bytes: must be at least {largest_valid_body_bytes()}, the largest valid request"
                f" (got {self.max_body_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _keys_parse(self) -> HttpSettings:
        self.named_keys()  # a ValueError names the item, never the key
        return self

    def body_cap(self) -> int:
        """The request body cap: the configured one, else the largest valid request."""
        return self.max_body_bytes or largest_valid_body_bytes()

    def key_list(self) -> list[str]:
        """The configured bearer keys; empty means no authentication."""
        return [named.key for named in self.named_keys()]

    def inline_keys(self) -> list[NamedKey]:
        """The keys of `PIXYPROXY_API_KEYS` with their names (`name:key`, or a bare key named by its hash)."""
        return parse_api_keys(self.api_keys.get_secret_value() if self.api_keys else "")

    def named_keys(self) -> list[NamedKey]:
        """Every configured key: `PIXYPROXY_API_KEYS`'s, then the keys file's as it reads now."""
        inline = self.inline_keys()
        if not self.api_keys_file:
            return inline
        return combine_keys(inline, read_api_keys_file(self.api_keys_file))


class JobSettings(_Section):
    """The job queue and how jobs are leased, retried and kept."""

    queue: Literal["memory", "rabbitmq"]
    amqp_url: SecretStr
    amqp_queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
    lease_s: Annotated[float, Field(ge=3)]
    max_attempts: Annotated[int, Field(ge=1, le=100)]
    retention_s: Positive
    sync_wait_s: PositiveSeconds
    sweep_interval_s: PositiveSeconds

    @field_validator("amqp_url", mode="before")
    @classmethod
    def _url_as_text(cls, value: object) -> object:
        return "" if value is None else str(value)

    @model_validator(mode="after")
    def _rabbitmq_needs_url(self) -> JobSettings:
        if self.queue == "rabbitmq" and not self.amqp_url.get_secret_value().startswith(
            ("amqp://", "amqps://")
        ):
            raise ValueError("amqp_url: required for the rabbitmq queue, as amqp://user:password@host:5672/")
        return self


class QuotaSettings(_Section):
    """Per-owner quotas (the `limits` library's notation) and where their counts live."""

    generation_rate: str | None = None  # images per owner, e.g. 20/minute;500/day
    request_rate: str | None = None  # requests per owner, every route but the health probes
    rate_overrides: str | None = None  # per key name: batch-bot=200/minute;2000/day,alice=5/minute
    storage: Annotated[str, Field(pattern=r"^(memory|redis|rediss)://")]
    on_error: Literal["allow", "deny"]

    @field_validator("generation_rate", "request_rate", mode="before")
    @classmethod
    def _rate(cls, value: object) -> object:
        text = None if value is None else str(value).strip() or None
        try:
            parse_rate(text)
        except ValueError:
            raise ValueError("must be windows such as 20/minute;500/day") from None
        return text

    @field_validator("rate_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: object) -> object:
        text = None if value is None else str(value).strip() or None
        parse_rate_overrides(text)  # a ValueError says which item and why
        return text


class WebhookSettings(_Section):
    """Signing, timeouts and retries of job webhooks."""

    secret: SecretStr | None = None
    timeout_s: PositiveSeconds
    retry_schedule_s: tuple[Annotated[float, Field(ge=0)], ...]
    allow_private: bool
    poll_interval_s: PositiveSeconds

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_as_text(cls, value: object) -> object:
        return None if value in (None, "") else str(value)

    @field_validator("secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        try:
            key = base64.b64decode(raw.removeprefix("whsec_") + "==", validate=False)
        except (ValueError, binascii.Error):
            key = b""
        if not raw.startswith("whsec_") or len(key) < 16:
            # The value itself is never echoed: it is a secret.
            raise ValueError("must be whsec_ followed by the base64 of at least 16 random bytes")
        return value

    @field_validator("retry_schedule_s", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, int | float):
            return (value,)
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def signing_secret(self) -> str | None:
        """The secret, for the sender alone."""
        return self.secret.get_secret_value() if self.secret else None


class LoggingSettings(_Section):
    """Log level and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    format: Literal["text", "json"]


class Settings(_Section):
    """Every setting, validated."""

    repository: RepositorySettings
    blob_store: BlobStoreSettings
    generator: GeneratorSettings
    jobs: JobSettings
    webhooks: WebhookSettings
    http: HttpSettings
    quota: QuotaSettings
    logging: LoggingSettings

    @model_validator(mode="after")
    def _offload_needs_local_disk(self) -> Settings:
        if self.http.content_offload == "x-accel-redirect" and self.blob_store.kind != "local":
            raise ValueError(
                "http.content_offload: x-accel-redirect needs PIXYPROXY_BLOB_STORE=local, where nginx"
                f" can read the files (got {self.blob_store.kind!r}; S3 hands bytes off with"
                " PIXYPROXY_S3_PRESIGN)"
            )
        return self


def _interpolated(raw: Any, environ: Mapping[str, str]) -> Any:
    """The parsed YAML with each `${VAR:default}` replaced by the variable's value, or the default.

    Done after parsing, never by pasting values into the YAML text: an environment value is taken
    verbatim, whatever YAML would have made of it (`alice: sk-1`, `key #1`, `*key`, `[x]`, `'x'`,
    `12345678`). A value that is only a reference and comes out empty is unset (None); the settings'
    types then read the text (`10` as a number, `true` as a flag).
    """
    if isinstance(raw, dict):
        return {key: _interpolated(value, environ) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_interpolated(value, environ) for value in raw]
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    value = _ENV_REFERENCE.sub(lambda m: environ.get(m.group(1), m.group(2) or ""), raw)
    return None if value == "" else value


def _env_names(raw: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """Map each setting's path to the first environment variable its YAML value names."""
    names: dict[tuple[str, ...], str] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            names.update(_env_names(value, (*prefix, str(key))))
    elif isinstance(raw, str) and (match := _ENV_REFERENCE.search(raw)):
        names[prefix] = match.group(1)
    return names


def _describe(err: ValidationError, env_names: dict[tuple[str, ...], str]) -> ConfigurationError:
    first = err.errors()[0]
    path = tuple(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    field, sep, reason = message.partition(": ")
    if sep and " " not in field:  # a model validator naming the (dotted, from the top) field it is about
        path, message = (*path, *field.split(".")), reason
    given = first.get("input")
    sensitive = any(word in path[-1] for word in ("url", "secret", "key", "password"))
    if not isinstance(given, dict | SecretStr) and given is not None and not sensitive:
        message = f"{message} (got {given!r})"
    setting = env_names.get(path) or ".".join(path)
    return ConfigurationError(setting, message)


def load_settings(path: Path = DEFAULT_CONFIG_PATH) -> tuple[Settings, dict[str, Any]]:
    """Read the YAML with environment overrides; return the validated settings and the raw dict."""
    try:
        raw_text = path.read_text()
    except OSError as err:
        raise ConfigurationError(str(path), f"cannot read the configuration file: {err.strerror}") from None
    try:
        raw = yaml.safe_load(raw_text)
    except yaml.YAMLError as err:
        raise ConfigurationError(str(path), f"is not valid YAML: {err}") from None
    env_names = _env_names(raw)
    values = _interpolated(raw, os.environ)
    uppercase_level = values.get("logging", {}).get("level")
    if isinstance(uppercase_level, str):
        values["logging"]["level"] = uppercase_level.upper()
    try:
        settings = Settings.model_validate(values)
    except ValidationError as err:
        raise _describe(err, env_names) from None
    return settings, values
