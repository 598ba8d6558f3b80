"""Remediation SLAs: hotspot ages through the stages, overdue first, promotion closes, rollback reopens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.db import transaction
from server.evaluation.sla import open_hotspots, run_sla, shipped_slas, sync_hotspots
from server.rollout.controller import abort_rollout, start_rollout, step_rollout
from tests.server.rollout.test_controller import SHORT_PLAN
from tests.server.rollout.world import REPLAY_FIXED, REPLAY_STABLE, START, RolloutWorld

T0 = int(START.timestamp())
HOUR = 3600.0


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[RolloutWorld]:
    w = RolloutWorld.create(database_url, tmp_path / "server")
    yield w
    w.ctx.engine.dispose()


def _open(world: RolloutWorld) -> list:  # type: ignore[type-arg]
    with transaction(world.ctx.sessions) as s:
        sync_hotspots(s, world.clock())
        return open_hotspots(s, world.clock())


def test_the_shipped_slas_cover_every_remediated_category() -> None:
    slas = shipped_slas()
    assert slas.sla_seconds("wrong_tool") == 72 * 3600
    assert slas.sla_seconds("safety_incident") < slas.sla_seconds("style_mismatch")
    assert slas.sla_seconds("not-a-category") == int(slas.default_sla_hours * 3600)


def test_a_hotspot_ages_through_its_stages_and_a_promotion_would_close_it(world: RolloutWorld) -> None:
    cand = world.bundled_candidate(plan=SHORT_PLAN)
    world.clock.advance(5 * HOUR)
    (h,) = _open(world)
    assert (h.category, h.stage, h.candidate_id) == ("wrong_tool", "candidate", cand)
    assert h.age_seconds == pytest.approx(5 * HOUR) and not h.overdue
    with transaction(world.ctx.sessions) as s:
        rid = start_rollout(s, world.ctx, cand, actor="admin:alice").id
    assert _open(world)[0].stage == "replay"
    world.add_replay(T0 + 5 * 3600, rid, REPLAY_STABLE, REPLAY_FIXED)  # the window the rollout began in
    assert step_rollout(world.ctx, rid).decision == "advance"
    assert _open(world)[0].stage == "canary"


def test_a_rollback_reopens_the_hotspot_and_its_age_keeps_counting(world: RolloutWorld) -> None:
    cand = world.bundled_candidate(plan=SHORT_PLAN)
    with transaction(world.ctx.sessions) as s:
        rid = start_rollout(s, world.ctx, cand, actor="admin:alice").id
    world.add_replay(T0, rid, REPLAY_STABLE, {**REPLAY_FIXED, "timeout": 150})
    assert step_rollout(world.ctx, rid).decision == "rollback"
    world.clock.advance(80 * HOUR)  # past wrong_tool's 72 h
    (h,) = _open(world)
    assert (h.stage, h.reopened) == ("rolled_back", 1)
    assert h.overdue and h.age_seconds == pytest.approx(80 * HOUR)
    assert "OVERDUE" in h.line()


def test_overdue_hotspots_come_first_and_the_gauge_counts_them(world: RolloutWorld) -> None:
    old = world.bundled_candidate(plan=SHORT_PLAN, key="old")
    world.clock.advance(100 * HOUR)
    arts = [("routing.billing", "routing_rule", b'{"kind": "routing_rule", "intent": "billing"}')]
    world.bundled_candidate(artifacts=arts, plan=SHORT_PLAN, key="new")
    ages = _open(world)
    assert [a.overdue for a in ages] == [True, False] and ages[0].candidate_id == old
    run_sla(world.ctx)
    value = world.ctx.metrics.registry.get_sample_value("fedsignal_hotspots_overdue",
                                            {"cohort": "retail-eu", "category": "wrong_tool"})
    assert value == 1.0


def test_an_aborted_rollout_reopens_too(world: RolloutWorld) -> None:
    cand = world.bundled_candidate(plan=SHORT_PLAN)
    with transaction(world.ctx.sessions) as s:
        rid = start_rollout(s, world.ctx, cand, actor="admin:alice").id
    with transaction(world.ctx.sessions) as s:
        abort_rollout(s, world.ctx, rid, actor="admin:alice", reason="changed mind")
    (h,) = _open(world)
    assert (h.stage, h.reopened) == ("rolled_back", 1)


def test_a_promoted_fix_closes_its_hotspot(world: RolloutWorld) -> None:
    from aggregation.rollout_plan import control_label
    from tests.server.rollout.world import NEUTRAL, WINDOW, arm

    cand = world.bundled_candidate(plan=SHORT_PLAN)
    with transaction(world.ctx.sessions) as s:
        rid = start_rollout(s, world.ctx, cand, actor="admin:alice").id
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED)
    assert step_rollout(world.ctx, rid).decision == "advance"
    for i, n in enumerate((400, 400, 30000)):
        world.add_window(T0 + i * WINDOW, {cand: arm(n, **NEUTRAL), control_label(rid): arm(max(n, 2000), **NEUTRAL)})
        world.clock.advance(WINDOW)
        step_rollout(world.ctx, rid)
    assert _open(world) == []
    with transaction(world.ctx.sessions) as s:
        from server.evaluation.models import HotspotSla

        (row,) = s.query(HotspotSla).all()
        assert (row.state, row.stage, row.reopened) == ("closed", "promoted", 0) and row.closed_at


def test_admin_signals_and_the_html_report_show_open_hotspots_overdue_first(world: RolloutWorld) -> None:
    from datetime import UTC, datetime

    from fedsignal.v1 import admin_pb2

    from server.admin.service import hotspot_ages
    from server.signals.report_html import render_report

    world.bundled_candidate(plan=SHORT_PLAN, key="old")
    world.clock.advance(100 * HOUR)
    arts = [("routing.billing", "routing_rule", b'{"kind": "routing_rule", "intent": "billing"}')]
    world.bundled_candidate(artifacts=arts, plan=SHORT_PLAN, key="new")
    with transaction(world.ctx.sessions) as s:
        sync_hotspots(s, world.clock())
        ages = hotspot_ages(s, world.clock(), "")
    assert [h.overdue for h in ages] == [True, False] and ages[0].sla_seconds == 72 * 3600
    html = render_report(admin_pb2.ListSignalsResponse(min_tenants=3, hotspots=ages),
                         generated_at=datetime.now(UTC))
    assert "Open hotspots" in html and html.index("OVERDUE") < html.index("within SLA")
