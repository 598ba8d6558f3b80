"""The budget ledger kernel: refusal, exact spend, renewal, lifetime cap."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from aggregation.budget import (
    BudgetExceeded,
    BudgetLedger,
    BudgetPolicy,
    BudgetPolicyError,
    Spend,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = timedelta(days=30)


def ledger(rho_per_period: float = 1.0, lifetime: float | None = None, spends: list[Spend] | None = None) -> BudgetLedger:
    return BudgetLedger(BudgetPolicy(rho_per_period, MONTH, lifetime, ANCHOR), spends or [])


def at(days: float) -> datetime:
    return ANCHOR + timedelta(days=days)


def test_status_sums_the_spends_of_the_current_period() -> None:
    book = ledger(spends=[Spend(at(1), 0.25, "w1"), Spend(at(2), 0.25, "w2"), Spend(at(31), 0.1, "w3")])
    status = book.status(at(3))
    assert status.spent == 0.5
    assert status.remaining == 0.5
    assert status.period_start == ANCHOR
    assert status.renews_at == at(30)
    assert status.lifetime_spent == pytest.approx(0.6)
    assert status.lifetime_remaining is None
    assert status.available == 0.5


def test_a_release_beyond_the_remainder_is_refused_naming_remainder_and_renewal() -> None:
    book = ledger(spends=[Spend(at(1), 0.8, "w1")])
    with pytest.raises(BudgetExceeded) as err:
        book.check(at(2), 0.3)
    assert err.value.remaining == pytest.approx(0.2)
    assert err.value.renews_at == at(30)
    assert err.value.requested == 0.3
    message = str(err.value)
    assert "rho=0.2 " in message
    assert at(30).isoformat() in message


def test_spending_exactly_the_remainder_is_allowed_and_then_nothing_more() -> None:
    # 0.1 + 0.2 + ... do not add up exactly in binary floating point.
    book = ledger(spends=[Spend(at(1), 0.1, "a"), Spend(at(1), 0.2, "b"), Spend(at(1), 0.3, "c")])
    remainder = book.status(at(2)).remaining
    book = book.spend(at(2), remainder, "d")
    assert book.status(at(2)).remaining == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(BudgetExceeded):
        book.check(at(2), 1e-6)


def test_many_remainder_spends_never_overspend_beyond_the_tolerance() -> None:
    book = ledger(rho_per_period=0.7)
    for i in range(200):
        available = book.status(at(1)).available
        try:
            book = book.spend(at(1), max(available, 1e-12) * 1.0000000001 if i % 2 else 0.0033, f"w{i}")
        except BudgetExceeded:
            continue
    assert math.fsum(s.rho for s in book.spends) <= 0.7 * (1 + 1e-9)


def test_budget_renews_at_the_period_boundary() -> None:
    book = ledger(spends=[Spend(at(10), 1.0, "w1")])
    with pytest.raises(BudgetExceeded):
        book.check(at(30) - timedelta(microseconds=1), 0.01)
    status = book.check(at(30), 1.0)
    assert status.spent == 0.0
    assert status.period_start == at(30)
    assert status.renews_at == at(60)


def test_periods_are_aligned_on_the_anchor_even_before_it() -> None:
    policy = BudgetPolicy(1.0, MONTH, None, ANCHOR)
    assert policy.period_containing(at(-1)) == (at(-30), ANCHOR)
    assert policy.period_containing(at(65)) == (at(60), at(90))


def test_lifetime_cap_binds_across_periods_and_never_renews() -> None:
    book = ledger(lifetime=1.5, spends=[Spend(at(1), 1.0, "p1")])
    book = book.spend(at(31), 0.5, "p2")
    status = book.status(at(31))
    assert status.remaining == 0.5
    assert status.lifetime_remaining == 0.0
    assert status.available == 0.0
    with pytest.raises(BudgetExceeded) as err:
        book.check(at(31), 0.1)
    assert err.value.renews_at is None
    assert "never renews" in str(err.value)
    with pytest.raises(BudgetExceeded):
        book.check(at(400), 0.1)


def test_resending_a_charged_release_costs_nothing() -> None:
    book = ledger(spends=[Spend(at(1), 1.0, "w1")])
    assert book.spend(at(2), 1.0, "w1") is book
    with pytest.raises(BudgetPolicyError):
        book.spend(at(2), 0.5, "w1")


def test_a_ledger_with_two_spends_for_one_release_is_refused() -> None:
    with pytest.raises(BudgetPolicyError):
        ledger(spends=[Spend(at(1), 0.1, "w1"), Spend(at(2), 0.1, "w1")])


@pytest.mark.parametrize("rho", [0.0, -1.0, math.nan, math.inf])
def test_policy_needs_a_positive_finite_budget(rho: float) -> None:
    with pytest.raises(BudgetPolicyError):
        BudgetPolicy(rho, MONTH, None, ANCHOR)
    with pytest.raises(BudgetPolicyError):
        BudgetPolicy(1.0, MONTH, rho, ANCHOR)


def test_policy_needs_a_positive_period() -> None:
    with pytest.raises(BudgetPolicyError):
        BudgetPolicy(1.0, timedelta(0), None, ANCHOR)


@pytest.mark.parametrize("rho", [-0.1, math.nan, math.inf])
def test_check_refuses_a_meaningless_request(rho: float) -> None:
    with pytest.raises(BudgetPolicyError):
        ledger().check(at(1), rho)


def test_naive_datetimes_are_utc() -> None:
    book = ledger(spends=[Spend(datetime(2026, 1, 2), 0.4, "w1")])
    status = book.status(datetime(2026, 1, 3))
    assert status.spent == 0.4
    assert status.period_start.tzinfo is not None
