"""QuotaGate on the `limits` library: moving windows in memory (one process) or in Redis (every node).

A rate is `limits` notation, several windows separated by `;` (`20/minute;500/day`). Each window is
a moving window, whose `acquire_entry` adds `cost` entries only if they all fit, atomically (in
Redis, one Lua script): a request for more than is left is refused whole and spends nothing.

Overrides give named owners windows of their own: `batch-bot=200/minute;2000/day,alice=5/minute`
(`,` between owners, `=` after the name, `;` between one owner's windows).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Literal

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from pixyproxy.domain.exceptions import ConfigurationError, QuotaUnavailableError
from pixyproxy.ports.quota import QuotaDecision, QuotaWindow

log = logging.getLogger(__name__)

OnError = Literal["allow", "deny"]
KEY_PREFIX = "pixyproxy"


def parse_rate(text: str | None) -> list[RateLimitItem]:
    """The windows of a rate such as `20/minute;500/day`; none for empty text. Raises ValueError."""
    if not text or not text.strip():
        return []
    items = parse_many(text)
    if any(item.amount < 1 for item in items):
        raise ValueError("every window must allow at least 1")
    return list(items)


_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_rate_overrides(text: str | None) -> dict[str, list[RateLimitItem]]:
    """The per-owner windows of `name=rate,name=rate`; none for empty text. Raises ValueError."""
    overrides: dict[str, list[RateLimitItem]] = {}
    for position, item in enumerate((part.strip() for part in (text or "").split(",")), start=1):
        if not item:
            continue
        name, sep, rate = (part.strip() for part in item.partition("="))
        if not sep or not _OWNER.fullmatch(name):
            raise ValueError(f"item {position} is not name=rate, e.g. batch-bot=200/minute;2000/day")
        if name in overrides:
            raise ValueError(f"the name {name!r} is given twice")
        try:
            windows = parse_rate(rate)
        except ValueError:
            raise ValueError(
                f"item {position} ({name}): the rate must be windows such as 20/minute;500/day"
            ) from None
        if not windows:
            raise ValueError(f"item {position} ({name}) has no rate")
        overrides[name] = windows
    return overrides


def limits_storage(uri: str) -> Storage:
    """The shared storage of a `PIXYPROXY_RATE_LIMIT_STORAGE` URI: `memory://` or `redis://...`."""
    if uri.startswith("memory://"):
        return MemoryStorage(wrap_exceptions=True)
    if uri.startswith(("redis://", "rediss://")):
        # redis-py's asyncio client; a short timeout, so a dead Redis costs a request little.
        return RedisStorage(
            "async+" + uri,
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
    raise ConfigurationError("PIXYPROXY_RATE_LIMIT_STORAGE", "must start with memory:// or redis://")


def _window_name(scope: str, item: RateLimitItem) -> str:
    """A policy name such as `generations-1minute`: a structured-field token."""
    return f"{scope}-{item.multiples}{item.GRANULARITY.name}"


class LimitsQuotaGate:
    """One quota (requests, or images) per owner, over `limits` moving windows in a shared storage."""

    def __init__(
        self,
        rate: str | None,
        *,
        storage: Storage,
        scope: str,
        on_error: OnError = "allow",
        overrides: str | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        self._items = parse_rate(rate)
        self._overrides = parse_rate_overrides(overrides)
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._scope = scope
        self._on_error = on_error
        self._failing = False
        self._retry_at = 0.0  # while the storage is failing, asked again only from this instant on
        self._retry_after_s = retry_after_s

    @property
    def configured(self) -> bool:
        """Whether any window is configured, for everyone or for some owner."""
        return bool(self._items or self._overrides)

    def _items_for(self, owner: str) -> list[RateLimitItem]:
        """The owner's own windows when overridden, else everyone's."""
        return self._overrides.get(owner, self._items)

    async def take(self, owner: str, cost: int = 1) -> QuotaDecision:
        """Spend `cost` in every window if each has that much left; else spend nothing."""
        items = self._items_for(owner)
        if not items:
            return QuotaDecision(allowed=True)
        if self._resting():
            return self._without_storage()
        try:
            for item in items:
                if not await self._limiter.test(item, self._scope, owner, cost=cost):
                    return await self._decision(owner, allowed=False)
            for item in items:
                # Another node may have spent between test and hit; the atomic hit still refuses.
                if not await self._limiter.hit(item, self._scope, owner, cost=cost):
                    return await self._decision(owner, allowed=False)
            return await self._decision(owner, allowed=True)
        except Exception as err:  # limits wraps its storage's errors; none must fail a request
            return self._storage_failed(err)

    async def peek(self, owner: str) -> QuotaDecision:
        """The owner's windows, spending nothing."""
        if not self._items_for(owner):
            return QuotaDecision(allowed=True)
        if self._resting():
            return self._without_storage()
        try:
            return await self._decision(owner, allowed=True)
        except Exception as err:
            return self._storage_failed(err)

    @property
    def fails_open(self) -> bool:
        """Whether takes are allowed while the storage cannot be reached (`allow`, the default)."""
        return self._on_error == "allow"

    async def ping(self) -> None:
        """Check the storage answers (always, in memory); raises QuotaUnavailableError."""
        try:
            answers = await self._storage.check()
        except Exception:  # the client's own errors, whatever its version wraps them in
            answers = False
        if not answers:
            raise QuotaUnavailableError(self._scope)
        self._retry_at = 0.0  # it answers: the next take asks it again at once

    async def close(self) -> None:
        """Nothing to release: the storage is shared and its clients close with the process."""

    async def _decision(self, owner: str, *, allowed: bool) -> QuotaDecision:
        windows = []
        now = time.time()
        for item in self._items_for(owner):
            stats = await self._limiter.get_window_stats(item, self._scope, owner)
            windows.append(
                QuotaWindow(
                    name=_window_name(self._scope, item),
                    limit=item.amount,
                    window_s=item.get_expiry(),
                    remaining=max(stats.remaining, 0),
                    reset_s=max(stats.reset_time - now, 0.0),
                )
            )
        if self._failing:
            self._failing = False
            log.warning("the %s quota storage answers again", self._scope)
        return QuotaDecision(allowed=allowed, windows=tuple(windows))

    def _resting(self) -> bool:
        """Whether the storage failed within the last `retry_after_s`: a Redis that hangs rather than
        refuses would otherwise cost every request a connect timeout per window."""
        return self._failing and time.monotonic() < self._retry_at

    def _without_storage(self) -> QuotaDecision:
        return QuotaDecision(allowed=self.fails_open, degraded=True)

    def _storage_failed(self, err: Exception) -> QuotaDecision:
        self._retry_at = time.monotonic() + self._retry_after_s
        if not self._failing:
            # Once per outage: a line per request would flood the log while Redis is down.
            self._failing = True
            log.error(
                "the %s quota storage failed (%s); %s requests until it answers",
                self._scope,
                type(err).__name__,
                "allowing" if self._on_error == "allow" else "refusing",
            )
        return self._without_storage()
