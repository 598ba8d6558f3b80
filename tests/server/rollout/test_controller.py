"""The rollout controller's decisions, on merged windows written straight into the store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from aggregation.bundle_format import BASELINE
from aggregation.rollout_plan import control_label
from server.audit import iter_audit, verify_audit
from server.db import transaction
from server.review.workflow import get_candidate
from server.rollout.controller import (
    RolloutConflict,
    RolloutStateError,
    abort_rollout,
    get_rollout,
    pause_rollout,
    resume_rollout,
    rollout_id_for,
    run_controller,
    start_rollout,
    step_rollout,
)
from server.rollout.models import RolloutRecord
from server.rollout.service import rollout_status
from server.signals.schemas import current_schema
from tests.server.rollout.world import COHORT, NEUTRAL, START, WINDOW, RolloutWorld, arm

T0 = int(START.timestamp())
SHORT_PLAN = {
    "alpha": 0.05,
    "mixture_scale": 0.05,
    "stages": [
        {"percent": 10, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 50, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 100, "min_windows": 0},
    ],
    "gates": [
        {"measure": "task_success", "direction": "drop", "margin": 0.02},
        {"measure": "escalated", "direction": "rise", "margin": 0.02},
        {"measure": "human_correction", "direction": "rise", "margin": 0.02},
        {"measure": "tool_error", "direction": "rise", "margin": 0.02},
        {"measure": "timeout", "direction": "rise", "margin": 0.02},
        {"measure": "safety_incident", "direction": "rise", "margin": 0.0},
    ],
}


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[RolloutWorld]:
    w = RolloutWorld.create(database_url, tmp_path / "server")
    yield w
    w.ctx.engine.dispose()


def _start(world: RolloutWorld, plan=SHORT_PLAN) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    cand = world.bundled_candidate(plan=plan)
    with transaction(world.ctx.sessions) as s:
        rec = start_rollout(s, world.ctx, cand, actor="admin:alice")
        return rec.id, cand


def _window(world: RolloutWorld, start: int, cand: str, canary_rates=NEUTRAL, n_canary=400, n_control=2000,  # type: ignore[no-untyped-def]
            **kw) -> None:
    """A window with the candidate's slice and the rollout's (randomized) control slice."""
    world.add_window(start, {cand: arm(n_canary, **canary_rates),
                             control_label(rollout_id_for(cand)): arm(n_control, **NEUTRAL)}, **kw)


def _audit_kinds(world: RolloutWorld) -> list[str]:
    with transaction(world.ctx.sessions) as s:
        return [e.kind for e in iter_audit(s)]


def _rollout(world: RolloutWorld, rid: str) -> RolloutRecord:
    with transaction(world.ctx.sessions) as s:
        return get_rollout(s, rid)


def test_start_freezes_the_plan_publishes_labels_and_exposes_one_canary_tenant(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    rec = _rollout(world, rid)
    assert (rec.state, rec.stage_index, rec.stable_label, rec.candidate_label) == ("running", 0, BASELINE, cand)
    assert len(json.loads(rec.participants_json)) == 1  # 10 % of 5 tenants
    assert rec.session_fraction == pytest.approx(0.5)
    with transaction(world.ctx.sessions) as s:
        schema = current_schema(s, COHORT)
        assert schema.dimension("artifact_version").values == (BASELINE, control_label(rid), cand, "other")
        assert get_candidate(s, cand).state == "rolling_out"
        started = [e for e in iter_audit(s) if e.kind == "rollout.started"][0]
    payload = json.loads(started.payload_json)
    assert payload["plan_digest"] == rec.plan_digest
    assert [g["measure"] for g in payload["gates"]] == [
        "task_success", "escalated", "human_correction", "tool_error", "timeout", "safety_incident"]
    assert payload["control_label"] == control_label(rid)
    bundle = world.latest_bundle()
    assert bundle.candidate_id == cand and bundle.version == rec.bundle_version
    assert json.loads(bundle.exposure_json)["tenants"] == json.loads(rec.participants_json)


def test_a_cohort_runs_one_rollout_at_a_time_and_only_bundled_candidates_start(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    other = world.bundled_candidate(key="c2")
    with pytest.raises(RolloutConflict, match="already has rollout"), transaction(world.ctx.sessions) as s:
        start_rollout(s, world.ctx, other, actor="admin:alice")
    with pytest.raises(RolloutStateError, match="only a bundled"), transaction(world.ctx.sessions) as s:
        start_rollout(s, world.ctx, cand, actor="admin:alice")


def test_good_evidence_advances_stage_by_stage_then_promotes(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    assert step_rollout(world.ctx, rid).decision == "wait"  # dwell not met
    _window(world, T0, cand)
    world.clock.advance(WINDOW)
    first = json.loads(_rollout(world, rid).participants_json)
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.stage_index) == ("advance", 1)
    rec = _rollout(world, rid)
    assert set(first) <= set(json.loads(rec.participants_json))
    assert len(json.loads(rec.participants_json)) == 5  # ceil(50 % of 5 / 0.5): half of each tenant is control
    assert rec.stage_window_start == T0 + WINDOW
    # The window before the stage began is not evidence for the new stage.
    assert step_rollout(world.ctx, rid).decision == "wait"
    _window(world, T0 + WINDOW, cand)
    world.clock.advance(WINDOW)
    # Dwell and evidence of the 50 % stage are met, but promotion needs every margin shown:
    # the intervals (over both stages' windows) do not yet exclude a 2-point harm.
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.state, result.stage_index) == ("wait", "running", 1)
    assert result.reason.startswith("evidence for promotion") and "task_success" in result.reason
    _window(world, T0 + 2 * WINDOW, cand, n_canary=30000, n_control=30000)
    world.clock.advance(WINDOW)
    assert step_rollout(world.ctx, rid).decision == "promote"
    rec = _rollout(world, rid)
    assert rec.state == "promoted"
    bundle = world.latest_bundle()
    assert bundle.candidate_id is None and json.loads(bundle.stable_json) == [cand]
    kinds = _audit_kinds(world)
    assert kinds.count("rollout.advanced") == 1 and kinds.count("rollout.promoted") == 1
    with transaction(world.ctx.sessions) as s:
        assert verify_audit(s).ok


def test_a_safety_rise_rolls_back_without_a_human_and_points_back_to_stable(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    _window(world, T0, cand, canary_rates={**NEUTRAL, "safety_incident": 0.25})
    # No dwell needed for a rollback: harm decides at once.
    result = step_rollout(world.ctx, rid)
    assert result.decision == "rollback"
    assert "safety_incident" in result.reason
    rec = _rollout(world, rid)
    assert rec.state == "rolled_back"
    bundle = world.latest_bundle()
    assert bundle.candidate_id is None and json.loads(bundle.stable_json) == []
    assert bundle.version == rec.bundle_version
    with transaction(world.ctx.sessions) as s:
        assert get_candidate(s, cand).state == "rolled_back"
        event = [e for e in iter_audit(s) if e.kind == "rollout.rolled_back"][0]
    verdicts = json.loads(event.payload_json)["assessment"]["verdicts"]
    safety = next(v for v in verdicts if v["gate"] == "safety_incident")
    assert safety["verdict"] == "harm" and safety["low"] > 0
    # The status view of a finished rollout shows the assessment that ended it.
    with transaction(world.ctx.sessions) as s:
        status = rollout_status(s, world.ctx, get_rollout(s, rid))
    assert status.next_decision == "none (rolled_back)"
    assert {g.gate: g.verdict for g in status.gates}["safety_incident"] == "harm"


def test_a_drop_within_the_margin_is_not_harm(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    _window(world, T0, cand, canary_rates={**NEUTRAL, "task_success": 0.79})
    world.clock.advance(WINDOW)
    assert step_rollout(world.ctx, rid).decision == "advance"


def test_missing_canary_reports_pause_and_evidence_resumes(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    _window(world, T0, cand, n_canary=0)
    world.clock.advance(WINDOW)
    assert step_rollout(world.ctx, rid).decision == "wait"  # grace window for late reports
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "pause" and "canary turns" in result.reason
    rec = _rollout(world, rid)
    assert (rec.state, rec.paused_by, rec.stage_index) == ("paused", "controller", 0)
    _window(world, T0 + WINDOW, cand)
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.state, result.stage_index) == ("advance", "running", 1)
    assert "rollout.resumed" in _audit_kinds(world)


def test_too_few_tenants_for_k_is_missing_evidence(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    _window(world, T0, cand, tenants=2)  # k = 3
    world.clock.advance(2 * WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "pause" and "below k" in result.reason


def test_reviewer_pause_holds_but_harm_still_rolls_back(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    with transaction(world.ctx.sessions) as s:
        pause_rollout(s, world.ctx, rid, actor="admin:bob", reason="holiday freeze")
    _window(world, T0, cand)
    world.clock.advance(WINDOW)
    assert step_rollout(world.ctx, rid).stage_index == 0
    with transaction(world.ctx.sessions) as s:
        status = rollout_status(s, world.ctx, get_rollout(s, rid))
    assert status.state == "paused" and "holiday freeze" in status.next_decision
    assert {g.gate for g in status.gates} == {
        "task_success", "escalated", "human_correction", "tool_error", "timeout", "safety_incident"}
    with transaction(world.ctx.sessions) as s:
        resume_rollout(s, world.ctx, rid, actor="admin:bob", reason="")
    assert step_rollout(world.ctx, rid).decision == "advance"
    with transaction(world.ctx.sessions) as s:
        pause_rollout(s, world.ctx, rid, actor="admin:bob", reason="look closer")
    _window(world, T0 + WINDOW, cand, canary_rates={**NEUTRAL, "safety_incident": 0.3})
    assert step_rollout(world.ctx, rid).decision == "rollback"


def test_abort_issues_a_stable_bundle(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    before = world.latest_bundle().version
    with transaction(world.ctx.sessions) as s:
        rec = abort_rollout(s, world.ctx, rid, actor="admin:bob", reason="wrong cohort")
        assert rec.state == "aborted"
    bundle = world.latest_bundle()
    assert bundle.version > before and bundle.candidate_id is None
    with pytest.raises(RolloutStateError), transaction(world.ctx.sessions) as s:
        resume_rollout(s, world.ctx, rid, actor="admin:bob", reason="")


def test_a_tampered_plan_is_refused(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    with transaction(world.ctx.sessions) as s:
        rec = s.get(RolloutRecord, rid)
        assert rec is not None
        looser = json.loads(rec.plan_json)
        looser["gates"][0]["margin"] = 0.5
        rec.plan_json = json.dumps(looser)
    _window(world, T0, cand)
    world.clock.advance(WINDOW)
    run_controller(world.ctx)  # logs and moves on
    assert _rollout(world, rid).stage_index == 0


def test_two_replicas_stepping_at_once_advance_once(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    _window(world, T0, cand)
    world.clock.advance(WINDOW)
    results = []
    threads = [threading.Thread(target=lambda: results.append(step_rollout(world.ctx, rid))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.decision for r in results) == ["advance", "wait"]
    assert _audit_kinds(world).count("rollout.advanced") == 1
    with transaction(world.ctx.sessions) as s:
        assert len(list(s.scalars(select(RolloutRecord)))) == 1
        assert verify_audit(s).ok


def test_the_control_is_randomized_within_participating_tenants(world: RolloutWorld) -> None:
    """Regression: the control used to be every non-canary session of the cohort, so a weak canary
    tenant made a neutral candidate look harmful (and a strong one masked harm). Only the rollout's
    control label is compared; the stable label (other tenants' sessions) is not evidence."""
    rid, cand = _start(world)
    weak = {**NEUTRAL, "task_success": 0.70}
    strong = {**NEUTRAL, "task_success": 0.85}
    # A neutral candidate at a weak tenant: canary and its own control both at 70 %, the rest of the cohort at 85 %.
    world.add_window(T0, {cand: arm(2000, **weak), control_label(rid): arm(2000, **weak),
                          BASELINE: arm(8000, **strong)})
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "advance", result.reason


def test_harm_at_a_strong_tenant_is_not_masked_by_weaker_tenants(world: RolloutWorld) -> None:
    rid, cand = _start(world)
    # The canary tenant's control succeeds 95 %, its canary 85 % (-10 points); other tenants are at 80 %.
    world.add_window(T0, {cand: arm(3000, **{**NEUTRAL, "task_success": 0.85}),
                          control_label(rid): arm(3000, **{**NEUTRAL, "task_success": 0.95}),
                          BASELINE: arm(8000, **{**NEUTRAL, "task_success": 0.80})})
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "rollback" and "task_success drop" in result.reason, result.reason


def test_evidence_accumulates_across_stages(world: RolloutWorld) -> None:
    """Each stage alone is too thin to show a 10-point drop; together they are not (the labels do not change)."""
    rid, cand = _start(world)
    drop = {**NEUTRAL, "task_success": 0.70}
    _window(world, T0, cand, canary_rates=drop, n_canary=1000, n_control=1000)
    world.clock.advance(WINDOW)
    first = step_rollout(world.ctx, rid)
    assert first.decision == "advance", first.reason  # one window is not enough to show harm
    _window(world, T0 + WINDOW, cand, canary_rates=drop, n_canary=1000, n_control=1000)
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "rollback", result.reason
    with transaction(world.ctx.sessions) as s:
        rec = get_rollout(s, rid)
        assessment = json.loads(rec.last_assessment_json)
    gate = next(v for v in assessment["verdicts"] if v["gate"] == "task_success")
    assert gate["batches"] == 2  # both stages' windows
