"""Staged rollouts: start, the controller's decisions, and reviewers' overrides.

A rollout takes a bundled candidate to its cohort in the stages of its plan
(frozen at start). At every stage the participating tenants (sticky, see
:mod:`aggregation.rollout_plan`) get a signed cohort bundle exposing the
candidate to a sticky share of their sessions; the rest is the control.

:func:`run_controller` (a server job, safe on any number of replicas) looks
at every running or controller-paused rollout in its own transaction, under
a row lock and an advisory lock, and applies :func:`server.rollout.evidence.assess`:

* ``rollback`` — a gate shows harm: at any stage, without a human, the
  candidate is rolled back and a newer bundle pointing at the promoted sets
  only is issued (tenants accept it: its metadata version is newer);
* ``advance`` / ``promote`` — dwell and evidence met, no harm: next stage
  (new exposure, new bundle) or, into the 100 % stage, promotion;
* ``pause`` — evidence missing after the dwell: the rollout pauses and
  resumes by itself once evidence is back (a reviewer's pause does not);
* ``wait`` — nothing to do yet (not audited).

Before its live stages a rollout runs its plan's validation stages
(``phase`` replay, then shadow): in replay every tenant replays its own
cases through its own agent harness and nobody is served the candidate; in
shadow a sticky share of sessions runs it beside the live path, output
discarded. :mod:`server.evaluation` judges them: a pass is audited as
``rollout.validated`` and moves on; a replay regression, a replay that shows
no fix, or shadow harm rolls back; missing evidence waits (and pauses one
window after the dwell and grace). The live stages cannot be entered before
every validation stage of the plan has passed.

Every other decision is an audit event carrying the evidence behind it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.bundle_format import BASELINE, RolloutExposure
from aggregation.errors import AlreadyExists, FedsignalError, NotFound, PreconditionFailed
from aggregation.rollout_plan import (
    RolloutPhase,
    RolloutPlan,
    control_label,
    exposure,
    participating_tenants,
    plan_for_candidate,
    replay_label,
    session_fraction,
    shadow_label,
)
from server.audit import append_audit
from server.context import ServerContext
from server.db import advisory_lock, locks, transaction
from server.evaluation.replay import ReplayAssessment, assess_replay
from server.evaluation.shadow import ShadowAssessment, assess_shadow
from server.evaluation.sla import note_rollout_stage
from server.evaluation.slices import ValidationDecision, read_validation
from server.identity.enrollment import cohort_tenants
from server.review.bundles import issue_cohort_bundle, promote_candidate, roll_back_candidate
from server.review.models import CandidateRecord
from server.review.workflow import CandidateState, artifacts_of, get_candidate
from server.rollout.evidence import EVIDENCE_GRACE_WINDOWS, Assessment, Decision, assess, read_stage_evidence
from server.rollout.models import RolloutRecord
from server.signals.schemas import current_schema, publish_artifact_versions

log = logging.getLogger(__name__)

class RolloutState(StrEnum):
    """A rollout's state (stored as its string value)."""

    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class PausedBy(StrEnum):
    """Who paused a rollout (stored as the string value; empty while it is not paused)."""

    NOBODY = ""
    CONTROLLER = "controller"
    REVIEWER = "reviewer"


ACTIVE_STATES = (RolloutState.RUNNING, RolloutState.PAUSED)
FINAL_STATES = (RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED)
CONTROLLER = "system:rollout-controller"


class RolloutError(FedsignalError):
    """A rollout request that cannot be carried out (the message says why)."""


class RolloutNotFound(NotFound, RolloutError):
    pass


class RolloutConflict(AlreadyExists, RolloutError):
    """Another rollout already runs in the cohort, or the candidate already had one."""


class RolloutStateError(PreconditionFailed, RolloutError):
    """The rollout's state does not allow the request."""


class FrozenPlanTampered(RolloutError):
    """The stored plan no longer matches the digest recorded at start."""


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def rollout_id_for(candidate_id: str) -> str:
    return "ro-" + hashlib.sha256(candidate_id.encode()).hexdigest()[:16]


def frozen_plan(rec: RolloutRecord) -> RolloutPlan:
    plan = RolloutPlan.from_json(rec.plan_json)
    if plan.digest() != rec.plan_digest:
        raise FrozenPlanTampered(
            f"rollout {rec.id}: stored plan does not match the digest fixed at start; refusing to act"
        )
    return plan


def participants(rec: RolloutRecord) -> list[str]:
    return list(json.loads(rec.participants_json))


def _next_window(now: datetime, window_seconds: int) -> int:
    """First window start at or after ``now`` (evidence of a stage starts there)."""
    return math.ceil(now.timestamp() / window_seconds) * window_seconds


def rollout_window_start(rec: RolloutRecord) -> int:
    """The rollout's first live evidence window (the stage-0 window start; evidence accumulates from there)."""
    live = json.loads(rec.validation_json or "{}").get("live_window_start")
    if isinstance(live, int):
        return min(rec.stage_window_start, live)
    started = datetime.fromisoformat(rec.created_at)
    return min(rec.stage_window_start, _next_window(started, rec.window_seconds))


def elapsed_windows(rec: RolloutRecord, now: datetime) -> int:
    return max(0, int((now.timestamp() - rec.stage_window_start) // rec.window_seconds))


def stable_label(session: Session, cohort: str, artifact_names: set[str]) -> str:
    """The label control sessions resolve to: the newest promoted set shipping one of the names."""
    promoted = session.scalars(
        select(CandidateRecord)
        .where(CandidateRecord.cohort == cohort, CandidateRecord.state == CandidateState.PROMOTED)
        .order_by(CandidateRecord.updated_at.desc(), CandidateRecord.id.desc())
    ).all()
    for rec in promoted:
        if {n for n, _, _ in artifacts_of(rec)} & artifact_names:
            return rec.id
    return BASELINE


def intents_of(rec: RolloutRecord) -> list[str]:
    return list(json.loads(rec.intents_json or "[]"))


def rollout_labels(rollout_id: str, candidate_label: str, control: str) -> list[str]:
    """Every artifact_version label a rollout needs in its cohort's schema."""
    return [control, control_label(rollout_id), candidate_label,
            replay_label(rollout_id, "stable"), replay_label(rollout_id, "candidate"),
            shadow_label(rollout_id, "worse"), shadow_label(rollout_id, "better")]


def _exposure(rec: RolloutRecord, plan: RolloutPlan) -> RolloutExposure:
    return RolloutExposure(
        rollout_id=rec.id, candidate_id=rec.candidate_id, stage_index=rec.stage_index,
        stage_percent=plan.stages[rec.stage_index].percent, session_fraction=rec.session_fraction,
        participating_tenants=tuple(participants(rec)), phase=rec.phase, intents=tuple(intents_of(rec)),
    )


def _stage_audit(rec: RolloutRecord, plan: RolloutPlan) -> dict[str, object]:
    return {
        "rollout_id": rec.id, "candidate_id": rec.candidate_id, "cohort": rec.cohort, "phase": rec.phase,
        "intents": intents_of(rec),
        "stage_index": rec.stage_index, "stage_percent": plan.stages[rec.stage_index].percent,
        "participating_tenants": participants(rec), "session_fraction": rec.session_fraction,
        "n_tenants": rec.n_tenants, "stage_window_start": rec.stage_window_start,
        "exposure": round(exposure(rec.n_tenants, participants(rec), rec.session_fraction), 6),
    }


# -- start ------------------------------------------------------------------------------------


def start_rollout(
    session: Session, ctx: ServerContext, candidate_id: str, *, actor: str, intents: list[str] | None = None,
) -> RolloutRecord:
    """Start rolling out a bundled candidate (inside the caller's transaction).

    The rollout begins with the plan's validation stages (replay, then
    shadow) when it has them: no user is served the candidate until those
    passed. ``intents`` scopes the live stages (the plan's own ``intents``
    win when set); empty: every intent.

    Publishes the candidate's version label in the cohort schema, freezes the
    plan and its gates (audited with the plan's digest), chooses the stage-0
    tenants and issues the stage-0 bundle.
    """
    cand = get_candidate(session, candidate_id, for_update=True)
    advisory_lock(session, locks.rollout_cohort(cand.cohort))
    if cand.state != CandidateState.BUNDLED:
        raise RolloutStateError(
            f"candidate {cand.id} is {cand.state}; only a bundled (reviewer-approved) candidate can roll out"
        )
    if session.get(RolloutRecord, rollout_id_for(cand.id)) is not None:
        raise RolloutConflict(f"candidate {cand.id} already had a rollout")
    busy = session.scalars(
        select(RolloutRecord.id).where(RolloutRecord.cohort == cand.cohort, RolloutRecord.state.in_(ACTIVE_STATES))
    ).first()
    if busy:
        raise RolloutConflict(f"cohort {cand.cohort} already has rollout {busy} in progress; finish or abort it first")
    tenants = cohort_tenants(session, cand.cohort)
    if not tenants:
        raise RolloutStateError(f"cohort {cand.cohort} has no enrolled tenants to roll out to")
    plan = plan_for_candidate(cand.risk_class, cand.rollout_plan_json)
    now = ctx.clock()
    control = stable_label(session, cand.cohort, {n for n, _, _ in artifacts_of(cand)})
    rid = rollout_id_for(cand.id)
    # Three labels: the stable one (every session outside the rollout), the control
    # (participating tenants' other sessions: stable content, randomized against the
    # canary) and the candidate.
    # Replay and shadow results come back as slices under their own labels, too.
    schema = publish_artifact_versions(session, cand.cohort, rollout_labels(rid, cand.id, control))
    first = plan.stages[0].percent
    intents = list(plan.intents) or list(intents or ())
    if plan.validation:
        # Validation first: every tenant replays (nobody is served the candidate), then shadow.
        phase = plan.validation[0].kind
        chosen = sorted(tenants)
        fraction = plan.validation[0].share if phase == RolloutPhase.SHADOW else 0.0
    else:
        phase = RolloutPhase.LIVE
        chosen = participating_tenants(rid, tenants, first)
        fraction = session_fraction(first, len(tenants), len(chosen))
    rec = RolloutRecord(
        id=rid, candidate_id=cand.id, cohort=cand.cohort, state=RolloutState.RUNNING, paused_by=PausedBy.NOBODY, pause_reason="",
        plan_json=plan.to_json(), plan_digest=plan.digest(), candidate_label=cand.id, stable_label=control,
        stage_index=0, stage_window_start=_next_window(now, schema.window_seconds), stage_started_at=_iso(now),
        participants_json=json.dumps(chosen), session_fraction=fraction,
        n_tenants=len(tenants), window_seconds=schema.window_seconds, bundle_version=0,
        last_assessment_json="{}", started_by=actor, created_at=_iso(now), updated_at=_iso(now),
        phase=phase, intents_json=json.dumps(sorted(set(intents))), validation_json="{}",
    )
    session.add(rec)
    session.flush()
    append_audit(
        session, actor, "rollout.started",
        {**_stage_audit(rec, plan), "plan": json.loads(rec.plan_json), "plan_digest": rec.plan_digest,
         "gates": [g.to_dict() for g in plan.gates], "candidate_label": rec.candidate_label,
         "stable_label": rec.stable_label, "control_label": control_label(rid), "schema_version": schema.version},
        at=now,
    )
    rec.bundle_version = issue_cohort_bundle(session, ctx, rec.cohort, _exposure(rec, plan), actor=actor).version
    note_rollout_stage(session, rec.candidate_id, rec.phase, now)
    return rec


# -- the controller ---------------------------------------------------------------------------


def run_controller(ctx: ServerContext) -> None:
    """One pass over every active rollout (server job; safe with concurrent replicas)."""
    with transaction(ctx.sessions) as session:
        ids = list(session.scalars(select(RolloutRecord.id).where(RolloutRecord.state.in_(ACTIVE_STATES))))
    for rid in ids:
        try:
            step_rollout(ctx, rid)
        except FedsignalError as exc:
            log.error("rollout %s: %s", rid, exc)
        except Exception:  # one broken rollout must not stop the others; the job loop retries
            log.exception("rollout %s: controller step failed", rid)


@dataclass(frozen=True)
class StepResult:
    rollout_id: str
    decision: Decision
    reason: str
    state: RolloutState
    stage_index: int


def _locked(session: Session, rollout_id: str) -> RolloutRecord:
    advisory_lock(session, locks.rollout(rollout_id))
    rec = session.scalars(select(RolloutRecord).where(RolloutRecord.id == rollout_id).with_for_update()).first()
    if rec is None:
        raise RolloutNotFound(f"no rollout {rollout_id!r}; `fedsignal admin rollout list` shows them")
    return rec


def assess_rollout(session: Session, ctx: ServerContext, rec: RolloutRecord) -> Assessment:
    plan = frozen_plan(rec)
    # Canary vs the randomized control, accumulated over the whole rollout (the
    # stage's own windows decide only its dwell and minimum evidence).
    evidence = read_stage_evidence(
        session, ctx.settings, rec.cohort, [g.measure for g in plan.gates],
        rec.candidate_label, control_label(rec.id), rollout_window_start(rec),
        stage_window_start=rec.stage_window_start, intents=intents_of(rec),
    )
    return assess(plan, rec.stage_index, evidence, elapsed_windows(rec, ctx.clock()))


def step_rollout(ctx: ServerContext, rollout_id: str) -> StepResult:
    """Assess one rollout and apply the decision, in one transaction under its locks."""
    with transaction(ctx.sessions) as session:
        rec = _locked(session, rollout_id)
        if rec.state not in ACTIVE_STATES:
            return StepResult(rec.id, Decision.NONE, f"rollout is {rec.state}", RolloutState(rec.state), rec.stage_index)
        plan = frozen_plan(rec)
        if rec.phase != RolloutPhase.LIVE:
            return _step_validation(session, ctx, rec, plan)
        a = assess_rollout(session, ctx, rec)
        now = ctx.clock()
        rec.last_assessment_json = json.dumps(a.to_dict())
        rec.updated_at = _iso(now)
        evidence = {**_stage_audit(rec, plan), "assessment": a.to_dict()}
        decision = a.decision
        if decision == Decision.ROLLBACK:
            _finish(session, ctx, rec, RolloutState.ROLLED_BACK, CONTROLLER, evidence, now)
        elif rec.state == RolloutState.PAUSED:
            if rec.paused_by == PausedBy.CONTROLLER and decision != Decision.PAUSE:
                _resume(session, rec, evidence, now)
                if decision in MOVES:
                    _move_on(session, ctx, rec, plan, decision, evidence, now)
            else:
                decision = Decision.WAIT
        elif decision == Decision.PAUSE:
            _pause(session, rec, a.reason, evidence, now)
        elif decision in MOVES:
            _move_on(session, ctx, rec, plan, decision, evidence, now)
        return StepResult(rec.id, decision, a.reason, RolloutState(rec.state), rec.stage_index)


#: Decisions that move a rollout on (to its next stage, or to promotion).
MOVES = (Decision.ADVANCE, Decision.PROMOTE)


def _pause(session: Session, rec: RolloutRecord, reason: str, evidence: dict[str, object], now: datetime) -> None:
    """The controller pauses ``rec`` (evidence is missing); it resumes once the evidence is back."""
    rec.state, rec.paused_by, rec.pause_reason = RolloutState.PAUSED, PausedBy.CONTROLLER, reason
    append_audit(session, CONTROLLER, "rollout.paused", {**evidence, "reason": reason}, at=now)


def _resume(session: Session, rec: RolloutRecord, evidence: dict[str, object], now: datetime) -> None:
    """The controller resumes a rollout it had paused."""
    rec.state, rec.paused_by, rec.pause_reason = RolloutState.RUNNING, PausedBy.NOBODY, ""
    append_audit(session, CONTROLLER, "rollout.resumed", {**evidence, "reason": "evidence is back"}, at=now)


def assess_validation(session: Session, ctx: ServerContext, rec: RolloutRecord
                      ) -> ReplayAssessment | ShadowAssessment:
    """The current validation stage's assessment (replay or shadow)."""
    plan = frozen_plan(rec)
    stage = plan.validation_stage(rec.phase)
    if stage is None:
        raise RolloutStateError(f"rollout {rec.id}: phase {rec.phase!r} is not in its plan")
    elapsed = elapsed_windows(rec, ctx.clock())
    k = ctx.settings.min_tenants
    # The labels are this rollout's own, so no slice under them predates the stage: read from the window
    # the stage began in (tenants replay, and pair, as soon as they hold the bundle, mid-window too).
    began = datetime.fromisoformat(rec.stage_started_at).timestamp()
    from_window = int(began // rec.window_seconds) * rec.window_seconds
    slices = read_validation(session, ctx.settings, rec.cohort, rec.id, rec.phase, from_window, intents_of(rec))
    if rec.phase == RolloutPhase.REPLAY:
        cand = get_candidate(session, rec.candidate_id)
        measures = current_schema(session, rec.cohort).dimensions[0].values
        return assess_replay(plan, stage, cand.category, rec.id, slices, measures, k=k, elapsed_windows=elapsed)
    return assess_shadow(plan, stage, rec.id, slices, k=k, elapsed_windows=elapsed)


def _step_validation(session: Session, ctx: ServerContext, rec: RolloutRecord, plan: RolloutPlan) -> StepResult:
    """Replay or shadow: pass -> next stage, regression/no fix/harm -> rollback, else wait (or pause)."""
    a = assess_validation(session, ctx, rec)
    now = ctx.clock()
    doc = {"kind": rec.phase, **a.to_dict()}
    rec.last_assessment_json = json.dumps(doc)
    rec.updated_at = _iso(now)
    evidence: dict[str, object] = {**_stage_audit(rec, plan), "assessment": doc}
    reason = a.reason
    stage = plan.validation_stage(rec.phase)
    if stage is None:  # assess_validation refused a phase outside the plan already
        raise RolloutStateError(f"rollout {rec.id}: phase {rec.phase!r} is not in its plan")

    def result(decision: Decision, why: str = reason) -> StepResult:
        return StepResult(rec.id, decision, why, RolloutState(rec.state), rec.stage_index)

    if a.decision.failed:
        _finish(session, ctx, rec, RolloutState.ROLLED_BACK, CONTROLLER, evidence, now)
        return result(Decision.ROLLBACK)
    if a.decision == ValidationDecision.PASS:
        done = json.loads(rec.validation_json or "{}")
        done[rec.phase] = doc
        rec.validation_json = json.dumps(done)
        if rec.state == RolloutState.PAUSED and rec.paused_by == PausedBy.CONTROLLER:
            _resume(session, rec, evidence, now)
        elif rec.state == RolloutState.PAUSED:
            return result(Decision.WAIT, "paused by a reviewer")
        _enter_next_phase(session, ctx, rec, plan, evidence, now)
        return result(Decision.ADVANCE)
    # Only missing evidence pauses (as in the live stages); evidence that is there but not yet conclusive
    # keeps the stage running, and a stage the controller paused resumes once its evidence is back.
    if not a.evidence_missing:
        if rec.state == RolloutState.PAUSED and rec.paused_by == PausedBy.CONTROLLER:
            _resume(session, rec, evidence, now)
        return result(Decision.WAIT)
    if rec.state == RolloutState.RUNNING and elapsed_windows(rec, now) >= stage.min_windows + EVIDENCE_GRACE_WINDOWS + 1:
        _pause(session, rec, reason, evidence, now)
        return result(Decision.PAUSE)
    return result(Decision.WAIT)


def validation_passed(rec: RolloutRecord, plan: RolloutPlan) -> list[str]:
    """The validation stages of ``plan`` the rollout has NOT passed yet (empty: it may go live)."""
    done = json.loads(rec.validation_json or "{}")
    return [v.kind for v in plan.validation if done.get(v.kind, {}).get("decision") != ValidationDecision.PASS]


def _enter_next_phase(
    session: Session, ctx: ServerContext, rec: RolloutRecord, plan: RolloutPlan, evidence: dict[str, object],
    now: datetime,
) -> None:
    kinds = [v.kind for v in plan.validation]
    position = kinds.index(rec.phase)
    tenants = cohort_tenants(session, rec.cohort)
    if position + 1 < len(kinds):
        nxt = plan.validation[position + 1]
        rec.phase = nxt.kind
        rec.participants_json = json.dumps(sorted(tenants))
        rec.session_fraction = nxt.share if nxt.kind == RolloutPhase.SHADOW else 0.0
    else:
        missing = validation_passed(rec, plan)
        if missing:  # structural guard: nobody is served the candidate without the evidence
            raise RolloutStateError(f"rollout {rec.id}: cannot go live without passing {', '.join(missing)}")
        rec.phase = RolloutPhase.LIVE
        rec.stage_index = 0
        first = plan.stages[0].percent
        chosen = participating_tenants(rec.id, tenants, first)
        rec.participants_json = json.dumps(chosen)
        rec.session_fraction = session_fraction(first, len(tenants), len(chosen))
    rec.n_tenants = len(tenants)
    rec.stage_window_start = _next_window(now, rec.window_seconds)
    rec.stage_started_at = _iso(now)
    if rec.phase == RolloutPhase.LIVE:
        rec.validation_json = json.dumps({**json.loads(rec.validation_json), "live_window_start":
                                          rec.stage_window_start})
    # "validated": a validation stage passed (the live stages' moves are "advanced").
    append_audit(session, CONTROLLER, "rollout.validated", {**evidence, "to": _stage_audit(rec, plan)}, at=now)
    rec.bundle_version = issue_cohort_bundle(session, ctx, rec.cohort, _exposure(rec, plan), actor=CONTROLLER).version
    note_rollout_stage(session, rec.candidate_id, rec.phase, now)


def _move_on(
    session: Session, ctx: ServerContext, rec: RolloutRecord, plan: RolloutPlan, decision: Decision,
    evidence: dict[str, object], now: datetime,
) -> None:
    if decision == Decision.PROMOTE:
        _finish(session, ctx, rec, RolloutState.PROMOTED, CONTROLLER, evidence, now)
        return
    rec.stage_index += 1
    percent = plan.stages[rec.stage_index].percent
    tenants = cohort_tenants(session, rec.cohort)
    # A tenant that took part keeps taking part (and its sessions keep their arm):
    # the set and the session fraction never shrink.
    chosen = sorted(set(participants(rec)) | set(participating_tenants(rec.id, tenants, percent)))
    fraction = max(rec.session_fraction, session_fraction(percent, max(len(tenants), len(chosen)), len(chosen)))
    rec.participants_json = json.dumps(chosen)
    rec.session_fraction = fraction
    rec.n_tenants = len(tenants)
    rec.stage_window_start = _next_window(now, rec.window_seconds)
    rec.stage_started_at = _iso(now)
    append_audit(session, CONTROLLER, "rollout.advanced", {**evidence, "to": _stage_audit(rec, plan)}, at=now)
    rec.bundle_version = issue_cohort_bundle(session, ctx, rec.cohort, _exposure(rec, plan), actor=CONTROLLER).version


def _finish(
    session: Session, ctx: ServerContext, rec: RolloutRecord, state: RolloutState, actor: str,
    evidence: dict[str, object], now: datetime,
) -> None:
    detail = {"rollout_id": rec.id}
    if state == RolloutState.PROMOTED:
        issued = promote_candidate(session, ctx, rec.candidate_id, actor=actor, detail=detail)
    else:
        issued = roll_back_candidate(session, ctx, rec.candidate_id, actor=actor, detail=detail)
    rec.state, rec.paused_by, rec.pause_reason = state, PausedBy.NOBODY, ""
    rec.bundle_version = issued.version
    rec.finished_at = _iso(now)
    append_audit(session, actor, f"rollout.{state}", {**evidence, "bundle_version": issued.version}, at=now)
    note_rollout_stage(session, rec.candidate_id, state, now)  # promotion closes its hotspot, rollback reopens


# -- reviewers' controls ----------------------------------------------------------------------


def pause_rollout(session: Session, ctx: ServerContext, rollout_id: str, *, actor: str, reason: str) -> RolloutRecord:
    rec = _locked(session, rollout_id)
    if rec.state != RolloutState.RUNNING and not (rec.state == RolloutState.PAUSED
                                                  and rec.paused_by == PausedBy.CONTROLLER):
        raise RolloutStateError(f"rollout {rec.id} is {rec.state}; only a running rollout can be paused")
    rec.state, rec.paused_by, rec.pause_reason = RolloutState.PAUSED, PausedBy.REVIEWER, reason or "paused by a reviewer"
    rec.updated_at = _iso(ctx.clock())
    append_audit(session, actor, "rollout.paused",
                 {"rollout_id": rec.id, "by": PausedBy.REVIEWER, "reason": rec.pause_reason},
                 at=ctx.clock())
    return rec


def resume_rollout(session: Session, ctx: ServerContext, rollout_id: str, *, actor: str, reason: str) -> RolloutRecord:
    rec = _locked(session, rollout_id)
    if rec.state != RolloutState.PAUSED:
        raise RolloutStateError(f"rollout {rec.id} is {rec.state}; only a paused rollout can be resumed")
    rec.state, rec.paused_by, rec.pause_reason = RolloutState.RUNNING, PausedBy.NOBODY, ""
    rec.updated_at = _iso(ctx.clock())
    append_audit(session, actor, "rollout.resumed", {"rollout_id": rec.id, "by": PausedBy.REVIEWER, "reason": reason},
                 at=ctx.clock())
    return rec


def abort_rollout(session: Session, ctx: ServerContext, rollout_id: str, *, actor: str, reason: str) -> RolloutRecord:
    """Take the candidate back by hand: a newer bundle with the promoted sets only."""
    rec = _locked(session, rollout_id)
    if rec.state not in ACTIVE_STATES:
        raise RolloutStateError(f"rollout {rec.id} is {rec.state}; it cannot be aborted")
    now = ctx.clock()
    plan = frozen_plan(rec)
    issued = roll_back_candidate(session, ctx, rec.candidate_id, actor=actor,
                                 detail={"rollout_id": rec.id, "reason": reason or "aborted by a reviewer"})
    rec.state, rec.paused_by, rec.pause_reason = RolloutState.ABORTED, PausedBy.NOBODY, ""
    rec.bundle_version = issued.version
    rec.finished_at = rec.updated_at = _iso(now)
    append_audit(session, actor, "rollout.aborted",
                 {**_stage_audit(rec, plan), "reason": reason, "bundle_version": issued.version}, at=now)
    note_rollout_stage(session, rec.candidate_id, RolloutState.ROLLED_BACK, now)
    return rec


def get_rollout(session: Session, rollout_id: str) -> RolloutRecord:
    rec = session.get(RolloutRecord, rollout_id)
    if rec is None:
        raise RolloutNotFound(f"no rollout {rollout_id!r}; `fedsignal admin rollout list` shows them")
    return rec


def list_rollouts(session: Session, state: str = "") -> list[RolloutRecord]:
    stmt = select(RolloutRecord).order_by(RolloutRecord.created_at.desc(), RolloutRecord.id)
    if state:
        stmt = stmt.where(RolloutRecord.state == state)
    return list(session.scalars(stmt))
