"""The privacy budget ledger kernel: pure, no clock, no storage.

A tenant's budget is a zCDP rho per period (periods are consecutive,
``period`` long, aligned on ``anchor``) plus a lifetime cap (``DEFAULT_LIFETIME_RHO``
unless the tenant sets another; ``None`` removes it, which only a caller
that means it should do). The
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

Time: the ledger does not trust the clock it is handed. It keeps a
high-water mark (the latest moment it has seen: the caller's persisted mark
and every spend's time) and refuses to release while ``now`` is more than
``max_clock_skew`` behind it (``ClockBehind``): with a clock stepped back one
period, the period containing "now" would hold none of the spends just made
and the budget could be spent twice. Within the skew, a spend is counted in
the period of its own date, so every period stays within its limit.

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

#: Lifetime cap shipped by default, in periods' budgets: ten periods (with the
#: default rho 10 per 30 days, rho 100 = epsilon ~ 174 at delta 1e-6 over the
#: store's whole life, instead of no bound at all).
DEFAULT_LIFETIME_PERIODS = 10
#: The default cap for the default period budget (rho 10).
DEFAULT_LIFETIME_RHO = 100.0


def default_lifetime_rho(rho_per_period: float) -> float:
    """The lifetime cap a tenant gets unless it sets one: ``DEFAULT_LIFETIME_PERIODS`` periods' budgets."""
    return DEFAULT_LIFETIME_PERIODS * _positive_finite("rho_per_period", rho_per_period)

#: How far the clock may lag the ledger's high-water mark before releases stop.
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)


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


class ClockBehind(BudgetExceeded):
    """The clock is behind the ledger's high-water mark by more than the allowed skew.

    ``high_water`` is the latest moment the ledger has seen; releases resume
    once the clock has caught up with it (less the skew).
    """

    def __init__(self, message: str, *, requested: float, high_water: datetime, now: datetime) -> None:
        super().__init__(message, requested=requested, remaining=0.0, renews_at=None)
        self.high_water = high_water
        self.now = now


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
    #: The limits the figures above are against (rho, zCDP).
    rho_per_period: float = 0.0
    lifetime_rho: float | None = None
    #: The latest moment the ledger has seen; while the clock is more than the
    #: allowed skew behind it (``clock_behind``) ``check`` refuses every release.
    high_water: datetime | None = None
    clock_behind: bool = False

    @property
    def available(self) -> float:
        if self.lifetime_remaining is None:
            return self.remaining
        return min(self.remaining, self.lifetime_remaining)

    def in_epsilon(self, delta: float) -> BudgetInEpsilon:
        """The totals as (epsilon, delta)-DP: what ``agent budget`` prints beside rho.

        Each figure is the epsilon at ``delta`` of that rho by OpenDP's
        zCDP-to-approximate-DP map; epsilons of parts do not add up to the
        epsilon of their sum (zCDP composes in rho, not in epsilon).
        """
        from aggregation.dp import epsilon_at_delta  # OpenDP is loaded only when asked

        def eps(rho: float | None) -> float | None:
            if rho is None:
                return None
            return 0.0 if rho <= 0 else epsilon_at_delta(rho, delta)

        period_eps = eps(self.rho_per_period)
        spent_eps = eps(self.spent)
        return BudgetInEpsilon(
            delta=delta,
            period_limit=period_eps if period_eps is not None else 0.0,
            period_spent=spent_eps if spent_eps is not None else 0.0,
            lifetime_cap=eps(self.lifetime_rho),
            lifetime_spent=eps(self.lifetime_spent) or 0.0,
        )


@dataclass(frozen=True)
class BudgetInEpsilon:
    """A ``BudgetStatus`` as (epsilon, delta): the epsilon of each rho total at ``delta``."""

    delta: float
    period_limit: float
    period_spent: float
    lifetime_cap: float | None
    lifetime_spent: float


def _allowed(spent: float, rho: float, limit: float) -> bool:
    return math.fsum((spent, rho)) <= limit * (1.0 + BUDGET_RTOL)


class BudgetLedger:
    """Spends under a policy. Immutable: ``spend`` returns a new ledger."""

    def __init__(
        self,
        policy: BudgetPolicy,
        spends: Sequence[Spend],
        *,
        high_water: datetime | None = None,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        self.policy = policy
        self.spends: tuple[Spend, ...] = tuple(spends)
        self._by_key = {s.release_key: s for s in self.spends}
        if len(self._by_key) != len(self.spends):
            raise BudgetPolicyError("the ledger holds two spends for the same release")
        if max_clock_skew < timedelta(0):
            raise BudgetPolicyError(f"max_clock_skew must not be negative, got {max_clock_skew}")
        self.max_clock_skew = max_clock_skew
        marks = [s.at for s in self.spends]
        if high_water is not None:
            marks.append(_utc(high_water))
        #: The latest moment this ledger has seen (persisted mark and spends).
        self.high_water: datetime | None = max(marks) if marks else None

    def clock_behind(self, now: datetime) -> bool:
        """True when ``now`` lags the high-water mark by more than the allowed skew."""
        return self.high_water is not None and _utc(now) < self.high_water - self.max_clock_skew

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
            rho_per_period=self.policy.rho_per_period,
            lifetime_rho=cap,
            high_water=self.high_water,
            clock_behind=self.clock_behind(now),
        )

    def check(self, now: datetime, rho: float) -> BudgetStatus:
        """Allow spending ``rho`` at ``now`` or raise ``BudgetExceeded``.

        Returns the status before the spend.
        """
        need = float(rho)
        if not (math.isfinite(need) and need >= 0):
            raise BudgetPolicyError(f"a release's rho must be a non-negative finite number, got {rho!r}")
        status = self.status(now)
        if status.clock_behind and status.high_water is not None:
            lag = status.high_water - _utc(now)
            raise ClockBehind(
                f"release refused: the clock ({_utc(now).isoformat()}) is {lag} behind the latest time this "
                f"ledger has seen ({status.high_water.isoformat()}); a clock stepped back could spend a "
                f"period's budget twice. Releases resume when the clock reaches "
                f"{(status.high_water - self.max_clock_skew).isoformat()}; fix the system clock (NTP)",
                requested=need,
                high_water=status.high_water,
                now=_utc(now),
            )
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
        return BudgetLedger(
            self.policy,
            (*self.spends, Spend(at, rho, release_key)),
            high_water=self.high_water,
            max_clock_skew=self.max_clock_skew,
        )
