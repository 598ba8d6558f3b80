"""The demo's loop, in-process: hotspot -> candidate -> replay -> shadow -> per-intent canary -> promotion,
and with a planted regression, replay stopping the candidate before any user sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsignal_cli.demo import HOTSPOT, SECURE_RHO_SHARE, TENANTS, DemoSummary, run_demo

RETAIL = {t for t, c in TENANTS if c == HOTSPOT.cohort}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    lines: list[str] = []
    result = run_demo(Path(tmp_path_factory.mktemp("demo")), seed=11, out=lines.append)
    assert any("Summary" in line for line in lines)
    assert not any(line.rstrip().endswith((",", "{", ":")) and "artifact:" in line for line in lines)
    return result


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return run_demo(Path(tmp_path_factory.mktemp("demo-bad")), seed=11, plant_regression=True, out=lambda _: None)


def test_the_planted_hotspot_is_found(summary: DemoSummary) -> None:
    assert summary.hotspot is not None
    assert summary.hotspot["cohort"] == HOTSPOT.cohort
    assert summary.hotspot["category"] == "wrong_tool"
    assert HOTSPOT.intent in summary.hotspot["artifact"]
    cells = summary.hotspot["evidence"]["cells"]
    assert cells and all(c["rate_low"] > 0.1 for c in cells)


def test_the_bundle_is_signed_and_the_audit_chain_holds(summary: DemoSummary) -> None:
    assert summary.bundle_signed
    assert summary.audit_ok and summary.audit_entries > 20


def test_every_collector_released_every_window_under_its_budget(summary: DemoSummary) -> None:
    assert summary.tenants == len(TENANTS)
    for tenant, rho in summary.rho_per_tenant.items():
        # Secure aggregation: each ledger spends the cohort release's loss (default rho 0.5 x the share) per
        # window; replay adds no spend.
        assert rho == pytest.approx(0.5 * SECURE_RHO_SHARE * summary.windows, rel=1e-6), tenant


def test_every_retail_tenant_replayed_its_own_cases_and_the_candidate_fixed_them(summary: DemoSummary) -> None:
    for tenant in RETAIL:
        replays = summary.replays[tenant]
        assert replays and {r["status"] for r in replays} == {"ok"}
        assert sum(r["cases"] for r in replays) > 50
        assert sum(r["candidate_failing"] for r in replays) < sum(r["stable_failing"] for r in replays) / 4
    assert all(not summary.replays[t] for t, c in TENANTS if c != HOTSPOT.cohort)


def test_the_loop_closes_with_a_promotion_after_every_stage(summary: DemoSummary) -> None:
    assert summary.rollout is not None
    assert summary.rollout["stages_run"] == ["replay", "shadow", "canary"]
    assert summary.rollout["state"] == "promoted", summary.rollout


def test_shadow_sessions_ran_the_candidate_without_being_served_it(summary: DemoSummary) -> None:
    shadowed = sum(sum(summary.shadow_sessions_per_window[t]) for t in RETAIL)
    assert shadowed > 100
    for t in RETAIL:
        for shadow, served in zip(summary.shadow_sessions_per_window[t], summary.candidate_sessions_per_window[t],
                                  strict=True):
            assert not (shadow and served), "a window both shadowed and served the candidate"


def test_the_other_cohort_never_sees_the_candidate(summary: DemoSummary) -> None:
    for tenant, cohort in TENANTS:
        if cohort != HOTSPOT.cohort:
            assert sum(summary.candidate_sessions_per_window[tenant]) == 0
            assert sum(summary.shadow_sessions_per_window[tenant]) == 0
            assert summary.bundle_version_per_tenant[tenant] <= 1


def test_a_planted_regression_is_stopped_by_replay_before_any_user_sees_it(planted: DemoSummary) -> None:
    assert planted.rollout is not None
    assert (planted.rollout["state"], planted.rollout["phase"]) == ("rolled_back", "replay")
    assert planted.rollout["stages_run"] == ["replay"]
    for tenant in planted.bundle_version_per_tenant:
        assert sum(planted.candidate_sessions_per_window[tenant]) == 0
        assert sum(planted.shadow_sessions_per_window[tenant]) == 0
