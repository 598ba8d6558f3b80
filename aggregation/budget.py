"""The privacy budget ledger kernel: pure, no clock, no storage.

A tenant's budget is a zCDP rho per period (periods are consecutive,
``period`` long, aligned on ``anchor``) plus an optional lifetime cap. The
ledger is built from the spends already recorded (the collector persists them
write-ahead, in the same transaction as the sealed release) and answers two
questions: how much is left at ``now`` (``status``) and may this release go
(``check``, which raises ``BudgetExceeded``).

zCDP composes by addition, so a period's spend is the sum of the rho of its
releases (for discrete-Laplace releases, the rho of OpenDP's pure-DP-to-zCDP
conversion).

Floating point: sums use ``math.fsum`` and a request is allowed when
``spent + rho <= limit * (1 + BUDGET_RTOL)``. The tolerance lets a caller
spend exactly the remainder it was shown (``limit - spent`` may round up by an
ulp); because every check compares the *total* against the limit, the overrun
can never exceed ``limit * BUDGET_RTOL`` however many releases follow.

Datetimes: naive datetimes are taken as UTC; everything returned is aware UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aggregation.errors import FedsignalError

#: Relative tolerance of budget comparisons (see module docstring).
BUDGET_RTOL = 1e-9


class BudgetPolicyError(FedsignalError, ValueError):
    """A budget policy or spend that cannot be used (non-positive, NaN, ...)."""


class BudgetExceeded(FedsignalError):
    """A release would exceed the period budget or the lifetime cap.

    ``remaining`` is what may still be spent now, ``renews_at`` when the
    binding limit renews (``None`` when the lifetime cap binds: it never does).
    """

    def __init__(self, message: str, *, requested: float, remaining: float, renews_at: datetime | None) -> None:
        super().__init__(message)
        self.requested = requested
        self.remaining = remaining
        self.renews_at = renews_at


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _positive_finite(name: str, value: float) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise BudgetPolicyError(f"{name} must be a positive finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class BudgetPolicy:
    """rho allowed per period, the period length and anchor, an optional lifetime cap."""

    rho_per_period: float
    period: timedelta
    lifetime_rho: float | None
    anchor: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "rho_per_period", _positive_finite("rho_per_period", self.rho_per_period))
        if self.period <= timedelta(0):
            raise BudgetPolicyError(f"budget period must be positive, got {self.period}")
        if self.lifetime_rho is not None:
            object.__setattr__(self, "lifetime_rho", _positive_finite("lifetime_rho", self.lifetime_rho))
        object.__setattr__(self, "anchor", _utc(self.anchor))

    def period_containing(self, moment: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the period that contains ``moment``."""
        index = (_utc(moment) - self.anchor) // self.period
        start = self.anchor + index * self.period
        return start, start + self.period


@dataclass(frozen=True)
class Spend:
    """One recorded release: when, how much rho, and the release it paid for."""

    at: datetime
    rho: float
    release_key: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _utc(self.at))
        rho = float(self.rho)
        if not (math.isfinite(rho) and rho >= 0):
            raise BudgetPolicyError(f"a spend's rho must be a non-negative finite number, got {self.rho!r}")
        object.__setattr__(self, "rho", rho)
        if not self.release_key:
            raise BudgetPolicyError("a spend must name the release it paid for")


@dataclass(frozen=True)
class BudgetStatus:
    """The budget as of one moment.

    ``spent``/``remaining`` are for the period [period_start, renews_at);
    ``lifetime_remaining`` is ``None`` without a lifetime cap. ``available``
    is what a release may spend right now (the smaller of the two).
    """

    spent: float
    remaining: float
    period_start: datetime
    renews_at: datetime
    lifetime_spent: float
    lifetime_remaining: float | None

    @property
    def available(self) -> float:
        if self.lifetime_remaining is None:
            return self.remaining
        return min(self.remaining, self.lifetime_remaining)


def _allowed(spent: float, rho: float, limit: float) -> bool:
    return math.fsum((spent, rho)) <= limit * (1.0 + BUDGET_RTOL)


class BudgetLedger:
    """Spends under a policy. Immutable: ``spend`` returns a new ledger."""

    def __init__(self, policy: BudgetPolicy, spends: Sequence[Spend]) -> None:
        self.policy = policy
        self.spends: tuple[Spend, ...] = tuple(spends)
        self._by_key = {s.release_key: s for s in self.spends}
        if len(self._by_key) != len(self.spends):
            raise BudgetPolicyError("the ledger holds two spends for the same release")

    def status(self, now: datetime) -> BudgetStatus:
        start, end = self.policy.period_containing(now)
        spent = math.fsum(s.rho for s in self.spends if start <= s.at < end)
        lifetime_spent = math.fsum(s.rho for s in self.spends)
        cap = self.policy.lifetime_rho
        return BudgetStatus(
            spent=spent,
            remaining=max(0.0, self.policy.rho_per_period - spent),
            period_start=start,
            renews_at=end,
            lifetime_spent=lifetime_spent,
            lifetime_remaining=None if cap is None else max(0.0, cap - lifetime_spent),
        )

    def check(self, now: datetime, rho: float) -> BudgetStatus:
        """Allow spending ``rho`` at ``now`` or raise ``BudgetExceeded``.

        Returns the status before the spend.
        """
        need = float(rho)
        if not (math.isfinite(need) and need >= 0):
            raise BudgetPolicyError(f"a release's rho must be a non-negative finite number, got {rho!r}")
        status = self.status(now)
        cap = self.policy.lifetime_rho
        if cap is not None and not _allowed(status.lifetime_spent, need, cap):
            raise BudgetExceeded(
                f"privacy budget exhausted: the release needs rho={need:.6g} but only "
                f"rho={status.lifetime_remaining:.6g} of the lifetime cap {cap:.6g} remains, "
                "and the lifetime cap never renews",
                requested=need,
                remaining=status.available,
                renews_at=None,
            )
        if not _allowed(status.spent, need, self.policy.rho_per_period):
            raise BudgetExceeded(
                f"privacy budget exhausted: the release needs rho={need:.6g} but only "
                f"rho={status.remaining:.6g} of {self.policy.rho_per_period:.6g} remains in the period "
                f"that started {status.period_start.isoformat()}; the budget renews at "
                f"{status.renews_at.isoformat()}",
                requested=need,
                remaining=status.available,
                renews_at=status.renews_at,
            )
        return status

    def spend(self, at: datetime, rho: float, release_key: str) -> BudgetLedger:
        """The ledger with this spend added, after ``check``.

        Spending again for a release already in the ledger with the same rho
        costs nothing and returns this ledger (a resend of a sealed release);
        a different rho for the same release is refused.
        """
        existing = self._by_key.get(release_key)
        if existing is not None:
            if existing.rho != float(rho):
                raise BudgetPolicyError(
                    f"release {release_key!r} was already charged rho={existing.rho!r}; "
                    f"refusing to charge it again with rho={rho!r}"
                )
            return self
        self.check(at, rho)
        return BudgetLedger(self.policy, (*self.spends, Spend(at, rho, release_key)))
