"""The quota port: how much an owner may still spend, in requests or in images, per time window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class QuotaWindow:
    """One window of a quota as it stands for one owner: `limit` units per `window_s` seconds, of which
    `remaining` are left; the window frees units again within `reset_s` seconds."""

    name: str
    limit: int
    window_s: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class QuotaDecision:
    """Whether a take was allowed, and every window after it (empty when no quota is configured).

    `degraded`: the storage could not be reached, so nothing was counted and `allowed` is the
    configured on-error policy's answer (fail open or fail closed), with no windows to report.
    """

    allowed: bool
    windows: tuple[QuotaWindow, ...] = ()
    degraded: bool = False

    @property
    def retry_after_s(self) -> float:
        """How long until every exhausted window frees units again (0 when allowed)."""
        if self.allowed:
            return 0.0
        return max((w.reset_s for w in self.windows if w.remaining <= 0), default=1.0)

    @property
    def remaining(self) -> int | None:
        """The fewest units left across the windows; None when there is no quota."""
        return min((w.remaining for w in self.windows), default=None)


class QuotaGate(Protocol):
    """Counts what each owner spends against its windows. A take is all or nothing: refused, it
    spends nothing in any window. Storage failures follow the adapter's on-error policy."""

    @property
    def configured(self) -> bool:
        """Whether any window is configured (else every take is allowed and reports no windows)."""
        ...

    async def take(self, owner: str, cost: int = 1) -> QuotaDecision:
        """Spend `cost` units of the owner's quota if every window has that much left."""
        ...

    async def peek(self, owner: str) -> QuotaDecision:
        """The owner's windows as they stand, spending nothing."""
        ...

    @property
    def fails_open(self) -> bool:
        """Whether takes are allowed while the storage cannot be reached (else they are refused)."""
        ...

    async def ping(self) -> None:
        """Check the storage answers; raises QuotaUnavailableError."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
