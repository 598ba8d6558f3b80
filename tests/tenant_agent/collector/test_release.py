"""Sealing: write-ahead spends, no re-draw, refusal and renewal, real-process races."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
from fedsignal.v1 import common_pb2
from sqlalchemy import func, select

from aggregation import dp
from aggregation.audit import verify_chain
from aggregation.clock import from_unix
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, ReleaseConfig
from tenant_agent.release import release_params
from tenant_agent.store import Contribution, LedgerSpend, Release, Window
from tests.harness import Harness

from .fakes import HOUR, T0, make_config, read_line, recent_t0, remaining_lines, spawn_worker, turn

DAY = 24 * HOUR


def spends(c: Collector) -> list[tuple[float, str]]:
    with c.store.engine.connect() as conn:
        return [(r.rho, r.release_key) for r in conn.execute(select(LedgerSpend).order_by(LedgerSpend.id))]


def sealed_bytes(c: Collector) -> dict[int, bytes]:
    with c.store.engine.connect() as conn:
        return {r.window_start: r.report for r in conn.execute(select(Release.window_start, Release.report))}


def test_sealing_writes_spend_report_and_audit_together(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn(f"s{i}", T0 + i, tool_error=i % 2 == 0) for i in range(20)])
        [outcome] = c.close_windows(now=from_unix(T0 + HOUR))
        assert outcome.state == "sealed"
        expected = dp.privacy_loss(release_params(c.config.release, c.schema))
        assert spends(c) == [(expected.rho, outcome.release_key)]
        report = common_pb2.DpReport.FromString(sealed_bytes(c)[int(T0)])
        assert report.idempotency_key == outcome.release_key
        assert len(report.cells) == c.schema.size
        assert (report.window_start, report.window_end) == (int(T0), int(T0 + HOUR))
        assert report.privacy_loss.rho == expected.rho
        assert report.taxonomy_version == c.taxonomy.version
        assert report.max_cells_per_unit == c.schema.max_cells_per_unit
        entries = c.store.audit_entries()
        assert verify_chain(entries).ok
        spend = json.loads(entries[-1].payload_json)
        assert entries[-1].kind == "budget.spend"
        assert spend["report_sha256"] == hashlib.sha256(sealed_bytes(c)[int(T0)]).hexdigest()
        with c.store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Contribution)).scalar_one() == 0


def test_only_windows_that_ended_are_sealed(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path, close_grace_seconds=60)) as c:
        c.record_many([turn("s1", T0 + 1), turn("s1", T0 + HOUR + 1)])
        assert c.close_windows(now=from_unix(T0 + HOUR + 59)) == []
        assert [o.window_start for o in c.close_windows(now=from_unix(T0 + HOUR + 60))] == [int(T0)]


def test_a_sealed_window_is_never_redrawn(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn(f"s{i}", T0 + i) for i in range(20)])
        c.close_windows(now=from_unix(T0 + HOUR))
        before = sealed_bytes(c)
        assert c.close_windows(now=from_unix(T0 + 2 * HOUR)) == []
    with Collector(make_config(tmp_path)) as again:
        assert again.close_windows(now=from_unix(T0 + 3 * HOUR)) == []
        assert sealed_bytes(again) == before
        assert len(spends(again)) == 1


def test_over_budget_window_is_withheld_then_released_after_renewal(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        budget=BudgetConfig(rho_per_period=1.0, period_days=1.0),
        release=ReleaseConfig(rho=0.5),
    )
    with Collector(cfg) as c:
        c.record_many([turn("s", T0 + h * HOUR + 1) for h in range(3)])
        outcomes = c.close_windows(now=from_unix(T0 + 3 * HOUR))
        assert [o.state for o in outcomes] == ["sealed", "sealed", "withheld"]
        reason = outcomes[2].reason or ""
        assert "remains" in reason and "renews at" in reason
        assert c.status().windows == {"open": 0, "sealed": 2, "withheld": 1, "delivered": 0}
        with c.store.engine.connect() as conn:
            row = conn.execute(select(Window).where(Window.window_start == int(T0 + 2 * HOUR))).one()
            assert row.withheld_reason == reason
        # Still refused in the same period; kept, not dropped, and not spent.
        assert [o.state for o in c.close_windows(now=from_unix(T0 + 10 * HOUR))] == ["withheld"]
        assert len(spends(c)) == 2
        status = c.budget_status(now=from_unix(T0 + 10 * HOUR))
        assert status.remaining < 0.5 and status.renews_at.timestamp() == T0 + 3 * HOUR + DAY
        # After renewal the kept window is released.
        [later] = c.close_windows(now=from_unix(T0 + 3 * HOUR + DAY))
        assert (later.window_start, later.state) == (int(T0 + 2 * HOUR), "sealed")
        assert len(spends(c)) == 3
        kinds = [e.kind for e in c.store.audit_entries()]
        assert kinds.count("release.withheld") == 1 and kinds.count("budget.spend") == 3


def test_two_processes_on_one_store_cannot_overspend(tmp_path: Path) -> None:
    windows = 8
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn(f"s{h}", T0 + h * HOUR + 5) for h in range(windows)])
    go = tmp_path / "go"
    procs = [spawn_worker("close", str(tmp_path), "1.5", str(T0 + windows * HOUR), str(go)) for _ in range(2)]
    try:
        for p in procs:
            read_line(p, "ready")
        go.touch()
        results = [json.loads(read_line(p, "[")) for p in procs]
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    sealed = [w for r in results for w, state in r if state == "sealed"]
    assert len(sealed) == 3 and len(set(sealed)) == 3
    with Collector(make_config(tmp_path)) as c:
        assert len(spends(c)) == 3
        assert sum(rho for rho, _ in spends(c)) <= 1.5 + 1e-9
        assert c.status().windows["sealed"] == 3
        assert c.status().windows["withheld"] == windows - 3


def test_killed_between_seal_and_send_restart_sends_same_bytes_once(harness: Harness, tmp_path: Path) -> None:
    t0, state = recent_t0(), tmp_path / "collector"
    harness.enroll_collector(state)
    proc = spawn_worker("seal_then_hang", str(state), str(t0))
    try:
        line = read_line(proc, "sealed ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    key = line.split(" ", 1)[1]
    with Collector(make_config(state)) as c:
        stored = sealed_bytes(c)[int(t0)]
        assert c.close_windows(now=from_unix(t0 + 2 * HOUR)) == []
        result = c.deliver(now=from_unix(t0 + 2 * HOUR))
        assert (result.accepted, result.pending) == (1, 0)
        assert c.deliver(now=from_unix(t0 + 3 * HOUR), force=True).accepted == 0
        assert len(spends(c)) == 1
    assert [r.idempotency_key for r in harness.reports()] == [key]
    assert harness.tap.received() == [stored]


def test_lifetime_cap_withholds_for_good_and_says_so(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        budget=BudgetConfig(rho_per_period=10.0, period_days=1.0, lifetime_rho=1.0),
        release=ReleaseConfig(rho=0.5),
    )
    with Collector(cfg) as c:
        c.record_many([turn("s", T0 + h * HOUR + 1) for h in range(3)])
        outcomes = c.close_windows(now=from_unix(T0 + 3 * HOUR))
        assert [o.state for o in outcomes] == ["sealed", "sealed", "withheld"]
        assert "lifetime cap" in (outcomes[2].reason or "") and "never renews" in (outcomes[2].reason or "")
        assert [o.state for o in c.close_windows(now=from_unix(T0 + 30 * DAY))] == ["withheld"]
        status = c.budget_status(now=from_unix(T0 + 30 * DAY))
        assert (status.lifetime_spent, status.lifetime_remaining) == (1.0, 0.0)


def test_laplace_release_spends_the_rho_of_its_pure_dp_loss(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, release=ReleaseConfig(mechanism="discrete_laplace", epsilon=1.0))
    with Collector(cfg) as c:
        c.record_many([turn(f"s{i}", T0 + i) for i in range(10)])
        [outcome] = c.close_windows(now=from_unix(T0 + HOUR))
        loss = dp.privacy_loss(release_params(cfg.release, c.schema))
        assert loss.epsilon <= 1.0 and loss.delta == 0.0
        assert spends(c) == [(loss.rho, outcome.release_key)]
        report = common_pb2.DpReport.FromString(sealed_bytes(c)[int(T0)])
        assert report.mechanism == common_pb2.DISCRETE_LAPLACE
        assert report.sensitivity == c.schema.max_cells_per_unit * c.schema.max_count_per_cell


def test_sealing_while_another_process_records_counts_each_event_in_or_out(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("seed", T0))
    proc = spawn_worker("record_until", str(tmp_path), "50", str(stop))
    acks: list[tuple[int, int]] = []
    try:
        for _ in range(3):
            acks.append(tuple(map(int, read_line(proc, "acked ").split()[1:])))  # type: ignore[arg-type]
        with Collector(make_config(tmp_path)) as c:
            assert [o.state for o in c.close_windows(now=from_unix(T0 + HOUR))] == ["sealed"]
        while not any(late for _, late in acks):
            acks.append(tuple(map(int, read_line(proc, "acked ").split()[1:])))  # type: ignore[arg-type]
        stop.touch()
        for line in remaining_lines(proc):
            if line.startswith("acked "):
                acks.append(tuple(map(int, line.split()[1:])))  # type: ignore[arg-type]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded = sum(r for r, _ in acks)
    assert all(r + late == 50 for r, late in acks)
    with Collector(make_config(tmp_path)) as c, c.store.engine.connect() as conn:
        sealed_events = conn.execute(select(Window.events).where(Window.window_start == int(T0))).scalar_one()
        # Every event the worker was told was recorded is in the sealed window; the rest were refused.
        assert sealed_events == recorded + 1
        assert c.status().counters["events_late_dropped"] == sum(late for _, late in acks)


def test_a_schema_that_fixes_the_noise_decides_mechanism_and_scale_whatever_the_config_says() -> None:
    """The server refuses any other noise for such a schema: the collector's own calibration would be wasted."""
    from dataclasses import replace

    from aggregation.schema import default_schema

    legacy = default_schema("cohort-a")
    fixed = replace(legacy, version=2, noise_scale=7.5)
    for cfg in (ReleaseConfig(rho=0.5), ReleaseConfig(mechanism="discrete_laplace", epsilon=0.3)):
        params = release_params(cfg, fixed)
        assert (params.mechanism, params.scale) == (dp.Mechanism.DISCRETE_GAUSSIAN, 7.5)
        assert (params.l0, params.linf) == (fixed.max_cells_per_unit, fixed.max_count_per_cell)
    # Without a fixed scale (the template before the first schema fetch), the config calibrates.
    laplace = release_params(ReleaseConfig(mechanism="discrete_laplace", epsilon=0.3), legacy)
    assert laplace.mechanism is dp.Mechanism.DISCRETE_LAPLACE
    assert dp.privacy_loss(laplace).epsilon == pytest.approx(0.3, rel=1e-3)
