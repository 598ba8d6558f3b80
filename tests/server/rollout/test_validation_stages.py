"""Replay and shadow stages in the controller: nobody is served the candidate before they pass."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from aggregation.rollout_plan import control_label, shadow_label
from server.audit import iter_audit
from server.db import transaction
from server.review.workflow import get_candidate
from server.rollout.controller import frozen_plan, start_rollout, step_rollout, validation_passed
from server.rollout.models import RolloutRecord
from tests.server.rollout.test_controller import SHORT_PLAN
from tests.server.rollout.world import NEUTRAL, REPLAY_FIXED, REPLAY_STABLE, START, WINDOW, RolloutWorld, arm

T0 = int(START.timestamp())
SHADOW = {"kind": "shadow", "min_windows": 1, "min_cases": 200, "min_tenants": 3, "margin": 0.02, "share": 0.2}
WITH_SHADOW = {**SHORT_PLAN, "validation": [*SHORT_PLAN["validation"], SHADOW]}  # type: ignore[list-item, misc]


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[RolloutWorld]:
    w = RolloutWorld.create(database_url, tmp_path / "server")
    yield w
    w.ctx.engine.dispose()


def _start(world: RolloutWorld, plan: object = SHORT_PLAN, key: str = "c1") -> str:
    cand = world.bundled_candidate(plan=plan, key=key)  # type: ignore[arg-type]
    with transaction(world.ctx.sessions) as s:
        return start_rollout(s, world.ctx, cand, actor="admin:alice").id


def _rec(world: RolloutWorld, rid: str) -> RolloutRecord:
    with transaction(world.ctx.sessions) as s:
        rec = s.get(RolloutRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def _exposure(world: RolloutWorld) -> dict[str, object]:
    return dict(json.loads(world.latest_bundle().exposure_json))


def test_a_rollout_starts_in_replay_with_every_tenant_replaying_and_nobody_served(world: RolloutWorld) -> None:
    rid = _start(world)
    rec = _rec(world, rid)
    assert (rec.phase, rec.session_fraction) == ("replay", 0.0)
    assert sorted(json.loads(rec.participants_json)) == sorted(world.tenants)
    bundle = world.latest_bundle()
    assert bundle.candidate_id == rec.candidate_id  # tenants get the candidate to replay, and serve stable
    assert validation_passed(rec, frozen_plan(rec)) == ["replay"]


def test_without_replay_evidence_from_k_tenants_the_canary_is_never_entered(world: RolloutWorld) -> None:
    rid = _start(world)
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED, tenants=2)  # k = 3: suppressed, not evidence
    for _ in range(3):
        result = step_rollout(world.ctx, rid)
        assert result.decision in ("wait", "pause")
        world.clock.advance(WINDOW)
    rec = _rec(world, rid)
    assert rec.phase == "replay" and rec.state in ("running", "paused")
    assert "replay evidence missing" in json.loads(rec.last_assessment_json)["reason"]
    assert not any(e.kind == "rollout.validated" for e in _audit(world))


def test_replay_evidence_below_the_plans_tenant_floor_waits_even_above_k(world: RolloutWorld) -> None:
    rid = _start(world, {**SHORT_PLAN, "validation": [{**SHORT_PLAN["validation"][0], "min_tenants": 5}]})  # type: ignore[index]
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED, tenants=4)
    assert step_rollout(world.ctx, rid).decision == "wait"
    assert "4 tenant(s) < 5" in json.loads(_rec(world, rid).last_assessment_json)["reason"]


def test_a_replay_regression_on_another_category_rolls_back_before_any_user_sees_it(world: RolloutWorld) -> None:
    rid = _start(world)
    breaks_timeouts = {**REPLAY_FIXED, "timeout": 150}  # fixes wrong_tool, half the replays now time out
    world.add_replay(T0, rid, REPLAY_STABLE, breaks_timeouts)
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.state) == ("rollback", "rolled_back")
    assert "timeout" in result.reason and "replay regression" in result.reason
    with transaction(world.ctx.sessions) as s:
        assert get_candidate(s, _rec(world, rid).candidate_id).state == "rolled_back"
    assert world.latest_bundle().candidate_id is None
    assert [e.kind for e in _audit(world) if e.kind.startswith("rollout.")] == ["rollout.started",
                                                                                 "rollout.rolled_back"]


def test_a_candidate_that_does_not_fix_its_category_is_rolled_back(world: RolloutWorld) -> None:
    rid = _start(world)
    many = {m: 20 * v for m, v in REPLAY_STABLE.items()}  # 6000 cases: the interval is narrow enough to say no
    world.add_replay(T0, rid, many, many)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "rollback" and "does not fix wrong_tool" in result.reason


def test_an_unclear_fix_waits_for_more_replay_evidence(world: RolloutWorld) -> None:
    rid = _start(world)
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_STABLE)  # 300 cases, no change: cannot exclude a 5-point fix
    assert step_rollout(world.ctx, rid).decision == "wait"


def test_an_inconclusive_replay_with_its_evidence_keeps_running_past_the_grace(world: RolloutWorld) -> None:
    rid = _start(world)
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_STABLE)  # evidence is there; the fix is not yet shown
    for _ in range(4):  # past the dwell and the grace window
        result = step_rollout(world.ctx, rid)
        assert (result.decision, result.state) == ("wait", "running"), result.reason
        assert "does not yet show a drop" in result.reason
        world.clock.advance(WINDOW)
    assert not any(e.kind == "rollout.paused" for e in _audit(world))


def test_missing_replay_evidence_pauses_and_the_rollout_resumes_once_it_is_back(world: RolloutWorld) -> None:
    rid = _start(world)
    decisions = []
    for _ in range(4):
        decisions.append(step_rollout(world.ctx, rid).decision)
        world.clock.advance(WINDOW)
    assert "pause" in decisions and decisions[0] == "wait"
    rec = _rec(world, rid)
    assert (rec.state, rec.paused_by) == ("paused", "controller")
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_STABLE)  # back, though not yet conclusive
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.state) == ("wait", "running"), result.reason
    assert (_rec(world, rid).paused_by, _rec(world, rid).pause_reason) == ("", "")
    kinds = [e.kind for e in _audit(world) if e.kind.startswith("rollout.")]
    assert kinds == ["rollout.started", "rollout.paused", "rollout.resumed"]


def test_thin_replay_evidence_waits_rather_than_deciding(world: RolloutWorld) -> None:
    rid = _start(world)
    world.add_replay(T0, rid, {"turns": 20, "wrong_tool": 18}, {"turns": 20, "wrong_tool": 2})
    result = step_rollout(world.ctx, rid)
    assert result.decision == "wait" and "replayed cases 20 < 30" in result.reason


def _shadow_window(world: RolloutWorld, start: int, rid: str, pairs: int, worse: Mapping[str, float],
                   better: Mapping[str, float]) -> None:
    world.add_window(start, {shadow_label(rid, "worse"): {"turns": pairs, **worse},
                             shadow_label(rid, "better"): {"turns": pairs, **better}})


def test_shadow_follows_replay_and_a_paired_harm_rolls_back(world: RolloutWorld) -> None:
    rid = _start(world, WITH_SHADOW)
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED)
    assert step_rollout(world.ctx, rid).decision == "advance"
    rec = _rec(world, rid)
    assert (rec.phase, rec.session_fraction) == ("shadow", 0.2)
    exposure = _exposure(world)
    assert exposure["tenants"] == sorted(world.tenants)
    # 3000 pairs: the shadow times out where live did not on 300, the reverse on 25 (a 9-point paired rise).
    _shadow_window(world, rec.stage_window_start, rid, 3000, {"timeout": 300}, {"timeout": 25})
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert (result.decision, result.state) == ("rollback", "rolled_back"), result.reason
    assert "timeout" in result.reason


def test_a_neutral_shadow_passes_into_the_first_live_stage(world: RolloutWorld) -> None:
    rid = _start(world, WITH_SHADOW)
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED)
    step_rollout(world.ctx, rid)
    start = _rec(world, rid).stage_window_start
    discordant = {m: 3 for m in ("task_success", "escalated", "human_correction", "tool_error", "timeout")}
    _shadow_window(world, start, rid, 8000, discordant, discordant)
    assert step_rollout(world.ctx, rid).decision == "wait"  # dwell: one window of shadow
    world.clock.advance(WINDOW)
    result = step_rollout(world.ctx, rid)
    assert result.decision == "advance", result.reason
    rec = _rec(world, rid)
    assert (rec.phase, rec.stage_index) == ("live", 0)
    assert validation_passed(rec, frozen_plan(rec)) == []
    assert len(json.loads(rec.participants_json)) == 1 and rec.session_fraction == pytest.approx(0.5)
    kinds = [e.kind for e in _audit(world) if e.kind.startswith("rollout.")]
    assert kinds == ["rollout.started", "rollout.validated", "rollout.validated"]


def test_per_intent_rollouts_read_only_their_intents_slices(world: RolloutWorld) -> None:
    plan = {**SHORT_PLAN, "intents": ["refund"]}
    rid = _start(world, plan)
    assert json.loads(_rec(world, rid).intents_json) == ["refund"]
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED, intent="billing")
    assert step_rollout(world.ctx, rid).decision == "wait"  # billing is out of scope: no replay evidence
    world.add_replay(T0, rid, REPLAY_STABLE, REPLAY_FIXED, intent="refund")
    assert step_rollout(world.ctx, rid).decision == "advance"
    with transaction(world.ctx.sessions) as s:
        from aggregation.bundle import verify_installed
        from server.review.bundles import bundle_artifacts, latest_bundle

        stored = latest_bundle(s, "retail-eu")
        assert stored is not None
        artifacts = dict(bundle_artifacts(s, stored))
    view = verify_installed(stored.metadata_json.encode(), artifacts)
    assert view.exposure is not None and view.exposure.intents == {"refund"} and view.exposure.phase == "live"


def test_live_stage_evidence_ignores_other_intents(world: RolloutWorld) -> None:
    from server.rollout.evidence import read_stage_evidence

    rid = _start(world)
    cand = _rec(world, rid).candidate_id
    world.add_window(T0, {cand: arm(400, **NEUTRAL), control_label(rid): arm(2000, **NEUTRAL)})
    with transaction(world.ctx.sessions) as s:
        scoped = read_stage_evidence(s, world.ctx.settings, "retail-eu", ["task_success"], cand, control_label(rid),
                                     T0, intents=["refund"])
        unscoped = read_stage_evidence(s, world.ctx.settings, "retail-eu", ["task_success"], cand,
                                       control_label(rid), T0)
    assert scoped.canary_turns == 0 and unscoped.canary_turns == pytest.approx(400)


def _audit(world: RolloutWorld) -> list:  # type: ignore[type-arg]
    with transaction(world.ctx.sessions) as s:
        return list(iter_audit(s))
