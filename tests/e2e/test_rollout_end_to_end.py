"""The issue's four proofs, end to end: simulator agents, real collectors, the server over mutual TLS.

Cohort: 5 tenants x 600 sessions per hourly window, k = 3, each collector
releasing with the discrete Gaussian at rho = 32 per window (noise scale
0.5 per cell: a generous budget that keeps the simulated cohort small and
the tests fast; the gates account for whatever noise the reports declare).
The simulator plants a wrong-tool hotspot in the refund intent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from fedsignal.v1 import rollout_pb2, rollout_pb2_grpc

from aggregation.bundle_format import BASELINE
from aggregation.rollout_plan import session_in_canary, shipped_plans
from fedsignal_cli.main import main
from server.audit import iter_audit
from server.db import transaction
from server.review.bundles import latest_bundle
from tests.server.rollout.loop import ARTIFACT, COHORT, Loop

pytestmark = pytest.mark.slow

GOOD = {"kind": "routing_rule", "intent": "refund"}
# Relaxed guardrails: safety incidents x50 (0.2 % -> 10 %) in every intent.
BAD = {"kind": "guardrail_template", "simulated_effects": {"safety_incident": 50}}


def plan(risk_class: str = "low", **stage_overrides: float) -> dict[str, object]:
    """The shipped plan of ``risk_class`` (stages 1, 5, 10, 25, 50, 100 %) with test-sized evidence minimums.

    Every stage before promotion needs the shipped first stage's dwell and evidence (an override may not
    go below it): for the low plan 1 window, 20 canary and 100 control turns.
    """
    doc = shipped_plans().for_risk_class(risk_class).to_dict()
    first = dict(doc["stages"][0])
    for stage in doc["stages"][:-1]:
        stage.update({"min_windows": first["min_windows"], "min_canary_turns": first["min_canary_turns"],
                      "min_control_turns": first["min_control_turns"], **stage_overrides})
    return doc


@pytest.fixture
def loop(database_url: str, tmp_path) -> Iterator[Loop]:  # type: ignore[no-untyped-def]
    lp = Loop.start(database_url, tmp_path, tenants=5, sessions=600, k=3, rho=32.0)
    try:
        yield lp
    finally:
        lp.close()


@dataclass(frozen=True)
class Exposure:
    stage_index: int
    participants: frozenset[str]
    fraction: float
    state: str


def _run(loop: Loop, rollout_id: str, windows: dict[int, Exposure]) -> Exposure:
    """One window, remembering the exposure the server had decided when the agents ran."""
    rec = loop.record(rollout_id)
    exp = Exposure(rec.stage_index, frozenset(json.loads(rec.participants_json)), rec.session_fraction, rec.state)
    windows[loop.window_start] = exp
    loop.run_window()
    return exp


def _validated(loop: Loop, status: rollout_pb2.RolloutStatus) -> rollout_pb2.RolloutStatus:
    """Run windows through the replay stage (every tenant replays its cases through its harness) into live."""
    for _ in range(6):  # each window, every tenant replays the cases it captured since (evidence grows)
        rec = loop.record(status.rollout_id)
        if rec.phase == "live" or rec.state != "running":
            break
        loop.run_window()
    rec = loop.record(status.rollout_id)
    assert rec.phase == "live", rec.last_assessment_json
    assert {r.status for r in loop.replays} == {"ok"}
    assert {r.rollout_id for r in loop.replays} == {status.rollout_id}
    assert len(loop.replays) >= len(loop.collectors)
    # Nobody was served the candidate while it was being replayed.
    assert not any(r.arm == "candidate" for r in loop.resolved)
    return loop.status(status.rollout_id)


def _stages_from_audit(loop: Loop, rollout_id: str) -> list[tuple[str, int]]:
    with transaction(loop.ctx.sessions) as s:
        out = []
        for e in iter_audit(s):
            doc = json.loads(e.payload_json)
            if e.kind.startswith("rollout.") and doc.get("rollout_id") == rollout_id:
                out.append((e.kind, doc["stage_index"]))
        return out


def test_good_artifact_is_promoted_stage_by_stage_and_the_wrong_tool_rate_falls(loop: Loop) -> None:
    before = []
    for _ in range(2):
        before.append(loop.window_start)
        loop.run_window()
    cand = loop.candidate(GOOD, plan(), "good")
    status = _validated(loop, loop.start_rollout(cand))
    assert (status.state, status.stage_percent, len(status.canary_tenants)) == ("running", 1.0, 1)
    windows: dict[int, Exposure] = {}
    # Promotion needs every gate's interval to exclude harm beyond its margin (non-inferiority), which in
    # this 5-tenant world takes ~10-20 windows (the control at 50 % is the other ~17 % of 3 tenants' sessions).
    for _ in range(60):
        if loop.record(status.rollout_id).state != "running":
            break
        _run(loop, status.rollout_id, windows)
    final = loop.status(status.rollout_id)
    assert final.state == "promoted", final.next_decision
    moves = _stages_from_audit(loop, status.rollout_id)
    advanced = [stage for kind, stage in moves if kind == "rollout.advanced"]
    assert advanced == [0, 1, 2, 3]  # 1 -> 5 -> 10 -> 25 -> 50 %, in order
    assert moves[-1] == ("rollout.promoted", 4)  # 50 % -> 100 %: promotion
    # Stage by stage: the exposure the agents saw only ever grew.
    seen = [windows[w].stage_index for w in sorted(windows)]
    assert seen == sorted(seen) and set(seen) == {0, 1, 2, 3, 4}

    after = []
    for _ in range(2):
        after.append(loop.window_start)
        loop.run_window()
    assert all(r.version == cand for r in loop.resolved if r.window in after)
    rate_before, rate_after = loop.cohort_rate("wrong_tool", before), loop.cohort_rate("wrong_tool", after)
    assert rate_after < 0.6 * rate_before, (rate_before, rate_after)


def test_bad_artifact_is_stopped_by_replay_before_any_user_sees_it(loop: Loop) -> None:
    loop.run_window()
    # A guardrail template is a critical-risk candidate: replay, then shadow, then the critical plan's stages.
    # It does not fix the wrong-tool incidents it was raised for, and it makes safety incidents rise: replay
    # (each tenant's own cases through its own harness, merged under DP) stops it.
    cand = loop.candidate(BAD, plan("critical"), "bad")
    status = loop.start_rollout(cand)
    for _ in range(4):
        if loop.record(status.rollout_id).state != "running":
            break
        loop.run_window()
    rec = loop.record(status.rollout_id)
    assert (rec.state, rec.phase) == ("rolled_back", "replay"), rec.last_assessment_json
    assessment = json.loads(rec.last_assessment_json)
    assert assessment["kind"] == "replay" and assessment["decision"] in ("regression", "no_fix")
    assert assessment["tenants"] >= 3
    assert not any(r.arm == "candidate" or r.version == cand for r in loop.resolved)
    events = _stages_from_audit(loop, status.rollout_id)
    assert [k for k, _ in events] == ["rollout.started", "rollout.rolled_back"]

    with transaction(loop.ctx.sessions) as s:
        rollback = latest_bundle(s, COHORT)
        assert rollback is not None and rollback.candidate_id is None
    for tenant, collector in loop.collectors.items():
        active = collector.resolver.active()
        assert active is not None and active.version == rollback.version, tenant
        assert active.candidate is None
        assert collector.resolver.resolve(ARTIFACT, f"{tenant}-probe").version == BASELINE
    loop.run_window()
    last = loop.window_start - 3600
    assert {r.version for r in loop.resolved if r.window == last} == {BASELINE}


def test_no_session_outside_its_stage_resolves_the_candidate(loop: Loop) -> None:
    cand = loop.candidate(GOOD, plan(), "exposure")
    status = _validated(loop, loop.start_rollout(cand))
    windows: dict[int, Exposure] = {}
    while len({e.stage_index for e in windows.values()}) < 3 and len(windows) < 8:
        _run(loop, status.rollout_id, windows)
    assert len({e.stage_index for e in windows.values()}) >= 3
    canary = control = 0
    live = [r for r in loop.resolved if r.window in windows]  # after the replay stage
    for r in live:
        exp = windows[r.window]
        should = r.tenant in exp.participants and session_in_canary(status.rollout_id, r.session, exp.fraction)
        assert (r.version == cand) == should, (r, exp)
        assert (r.arm == "candidate") == should
        canary += should
        control += not should
    # Both arms were really exercised, and non-participating tenants only ever saw the stable version.
    assert canary > 100 and control > canary
    outside = [r for r in live if r.tenant not in windows[r.window].participants]
    assert outside and all(r.version == BASELINE for r in outside)


def test_a_rollout_whose_canary_stops_reporting_pauses_instead_of_promoting(loop: Loop) -> None:
    cand = loop.candidate(GOOD, plan(), "silent")
    status = _validated(loop, loop.start_rollout(cand))
    windows: dict[int, Exposure] = {}
    for _ in range(4):  # the 1 % stage needs one or two windows for a usable batch
        _run(loop, status.rollout_id, windows)
        if loop.record(status.rollout_id).stage_index == 1:
            break
    rec = loop.record(status.rollout_id)
    assert rec.stage_index == 1  # evidence flowed: first stage passed
    loop.silenced = set(json.loads(rec.participants_json))  # the canary tenant's reports stop arriving
    for _ in range(4):
        _run(loop, status.rollout_id, windows)
    rec = loop.record(status.rollout_id)
    assert (rec.state, rec.paused_by, rec.stage_index) == ("paused", "controller", 1)
    assert "canary turns" in rec.pause_reason
    view = loop.status(status.rollout_id)
    assert view.state == "paused" and "resumes when evidence is back" in view.next_decision
    assert not any(kind in ("rollout.advanced", "rollout.promoted") for kind, stage in
                   _stages_from_audit(loop, status.rollout_id) if stage >= 1)
    # Reports flow again (the outbox still holds the sealed windows): the controller resumes by itself.
    loop.silenced = set()
    loop.run_window()
    rec = loop.record(status.rollout_id)
    assert rec.state == "running" and rec.stage_index == 2


def test_reviewers_steer_a_rollout_over_the_admin_service(loop: Loop, capsys) -> None:  # type: ignore[no-untyped-def]
    cand = loop.candidate(GOOD, plan(), "steer")
    status = _validated(loop, loop.start_rollout(cand))
    paused = loop.rollouts.PauseRollout(rollout_pb2.RolloutRef(rollout_id=status.rollout_id, reason="freeze"))
    assert paused.state == "paused"
    loop.run_window()
    assert loop.record(status.rollout_id).stage_index == 0
    # The admin CLI's status view, over mutual TLS with an admin certificate.
    connection = ["--server", f"localhost:{loop.running.port}", "--credentials", str(loop.admin_credentials)]
    assert main(["admin", "rollout", "status", status.rollout_id, *connection]) == 0
    out = capsys.readouterr().out
    assert "stage     #0: 1 % of traffic" in out and "safety_incident" in out
    assert "paused by a reviewer (freeze)" in out
    assert main(["admin", "rollout", "resume", "no-such-rollout", *connection]) == 3
    assert "NOT_FOUND" in capsys.readouterr().err
    # A tenant certificate cannot steer rollouts.
    tenant_channel = loop.collectors["tenant-0"].channel()
    with pytest.raises(grpc.RpcError) as refused:
        rollout_pb2_grpc.RolloutServiceStub(tenant_channel).AbortRollout(
            rollout_pb2.RolloutRef(rollout_id=status.rollout_id, reason="tenant"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = loop.rollouts.ListRollouts(rollout_pb2.ListRolloutsRequest(state="paused")).rollouts
    assert [r.rollout_id for r in listed] == [status.rollout_id]
    aborted = loop.rollouts.AbortRollout(rollout_pb2.RolloutRef(rollout_id=status.rollout_id, reason="changed mind"))
    assert aborted.state == "aborted"
    loop.pull_all()
    assert all(c.resolver.resolve(ARTIFACT, "s").version == BASELINE for c in loop.collectors.values())
