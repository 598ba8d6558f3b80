"""The demo's loop, in-process: the planted hotspot is found, a bundle is signed,
and exactly the first stage's tenants serve the candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsignal_cli.demo import HOTSPOT, TENANTS, DemoSummary, run_demo


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    lines: list[str] = []
    result = run_demo(Path(tmp_path_factory.mktemp("demo")), seed=11, sessions=1200,
                      baseline_windows=3, rollout_windows=2, out=lines.append)
    assert any("Summary" in line for line in lines)
    return result


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
    expected_rho = 0.1 * summary.windows
    for tenant, rho in summary.rho_per_tenant.items():
        assert rho == pytest.approx(expected_rho, rel=1e-6), tenant
        assert 0 < summary.epsilon_per_tenant[tenant] < 2 * expected_rho + 2 * (expected_rho * 14) ** 0.5


def test_only_first_stage_tenants_serve_the_candidate(summary: DemoSummary) -> None:
    retail = {t for t, c in TENANTS if c == HOTSPOT.cohort}
    canaries = set(summary.first_stage_canaries)
    assert canaries and canaries <= retail
    assert len(canaries) < len(retail), "the first stage must leave a control"
    first_window = {t: windows[0] for t, windows in summary.candidate_sessions_per_window.items()}
    for tenant, sessions in first_window.items():
        if tenant in canaries:
            assert sessions > 0, f"first-stage tenant {tenant} never served the candidate"
        else:
            assert sessions == 0, f"{tenant} is outside the first stage but served the candidate"


def test_the_other_cohort_never_sees_the_candidate(summary: DemoSummary) -> None:
    for tenant, cohort in TENANTS:
        if cohort != HOTSPOT.cohort:
            assert sum(summary.candidate_sessions_per_window[tenant]) == 0
            assert summary.bundle_version_per_tenant[tenant] <= 1


def test_retail_tenants_hold_a_verified_bundle(summary: DemoSummary) -> None:
    for tenant, cohort in TENANTS:
        if cohort == HOTSPOT.cohort:
            assert summary.bundle_version_per_tenant[tenant] >= 1
