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
    RolloutPlan,
    control_label,
    exposure,
    participating_tenants,
    plan_for_candidate,
    session_fraction,
)
from server import locks
from server.audit import append_audit
from server.context import ServerContext
from server.db import advisory_lock, transaction
from server.identity.enrollment import cohort_tenants
from server.review.bundles import issue_cohort_bundle, promote_candidate, roll_back_candidate
from server.review.models import CandidateRecord
from server.review.workflow import artifacts_of, get_candidate
from server.rollout.evidence import Assessment, assess, read_stage_evidence
from server.rollout.models import RolloutRecord
from server.signals.schemas import publish_artifact_versions

log = logging.getLogger(__name__)

class RolloutState(StrEnum):
    """A rollout's state (stored as its string value)."""

    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


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
    """The rollout's first evidence window (the stage-0 window start; evidence accumulates from there)."""
    started = datetime.fromisoformat(rec.created_at)
    return min(rec.stage_window_start, _next_window(started, rec.window_seconds))


def elapsed_windows(rec: RolloutRecord, now: datetime) -> int:
    return max(0, int((now.timestamp() - rec.stage_window_start) // rec.window_seconds))


def stable_label(session: Session, cohort: str, artifact_names: set[str]) -> str:
    """The label control sessions resolve to: the newest promoted set shipping one of the names."""
    promoted = session.scalars(
        select(CandidateRecord)
        .where(CandidateRecord.cohort == cohort, CandidateRecord.state == "promoted")
        .order_by(CandidateRecord.updated_at.desc(), CandidateRecord.id.desc())
    ).all()
    for rec in promoted:
        if {n for n, _, _ in artifacts_of(rec)} & artifact_names:
            return rec.id
    return BASELINE


def _exposure(rec: RolloutRecord, plan: RolloutPlan) -> RolloutExposure:
    return RolloutExposure(
        rollout_id=rec.id, candidate_id=rec.candidate_id, stage_index=rec.stage_index,
        stage_percent=plan.stages[rec.stage_index].percent, session_fraction=rec.session_fraction,
        participating_tenants=tuple(participants(rec)),
    )


def _stage_audit(rec: RolloutRecord, plan: RolloutPlan) -> dict[str, object]:
    return {
        "rollout_id": rec.id, "candidate_id": rec.candidate_id, "cohort": rec.cohort,
        "stage_index": rec.stage_index, "stage_percent": plan.stages[rec.stage_index].percent,
        "participating_tenants": participants(rec), "session_fraction": rec.session_fraction,
        "n_tenants": rec.n_tenants, "stage_window_start": rec.stage_window_start,
        "exposure": round(exposure(rec.n_tenants, participants(rec), rec.session_fraction), 6),
    }


# -- start ------------------------------------------------------------------------------------


def start_rollout(session: Session, ctx: ServerContext, candidate_id: str, *, actor: str) -> RolloutRecord:
    """Start rolling out a bundled candidate (inside the caller's transaction).

    Publishes the candidate's version label in the cohort schema, freezes the
    plan and its gates (audited with the plan's digest), chooses the stage-0
    tenants and issues the stage-0 bundle.
    """
    cand = get_candidate(session, candidate_id, for_update=True)
    advisory_lock(session, locks.rollout_cohort(cand.cohort))
    if cand.state != "bundled":
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
    schema = publish_artifact_versions(session, cand.cohort, [control, control_label(rid), cand.id])
    first = plan.stages[0].percent
    chosen = participating_tenants(rid, tenants, first)
    rec = RolloutRecord(
        id=rid, candidate_id=cand.id, cohort=cand.cohort, state="running", paused_by="", pause_reason="",
        plan_json=plan.to_json(), plan_digest=plan.digest(), candidate_label=cand.id, stable_label=control,
        stage_index=0, stage_window_start=_next_window(now, schema.window_seconds), stage_started_at=_iso(now),
        participants_json=json.dumps(chosen), session_fraction=session_fraction(first, len(tenants), len(chosen)),
        n_tenants=len(tenants), window_seconds=schema.window_seconds, bundle_version=0,
        last_assessment_json="{}", started_by=actor, created_at=_iso(now), updated_at=_iso(now),
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
    decision: str
    reason: str
    state: str
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
        stage_window_start=rec.stage_window_start,
    )
    return assess(plan, rec.stage_index, evidence, elapsed_windows(rec, ctx.clock()))


def step_rollout(ctx: ServerContext, rollout_id: str) -> StepResult:
    """Assess one rollout and apply the decision, in one transaction under its locks."""
    with transaction(ctx.sessions) as session:
        rec = _locked(session, rollout_id)
        if rec.state not in ACTIVE_STATES:
            return StepResult(rec.id, "none", f"rollout is {rec.state}", rec.state, rec.stage_index)
        plan = frozen_plan(rec)
        a = assess_rollout(session, ctx, rec)
        now = ctx.clock()
        rec.last_assessment_json = json.dumps(a.to_dict())
        rec.updated_at = _iso(now)
        evidence = {**_stage_audit(rec, plan), "assessment": a.to_dict()}
        decision = a.decision
        if decision == "rollback":
            _finish(session, ctx, rec, "rolled_back", CONTROLLER, evidence, now)
        elif rec.state == "paused":
            if rec.paused_by == "controller" and decision != "pause":
                rec.state, rec.paused_by, rec.pause_reason = "running", "", ""
                append_audit(session, CONTROLLER, "rollout.resumed", {**evidence, "reason": "evidence is back"}, at=now)
                if decision in ("advance", "promote"):
                    _move_on(session, ctx, rec, plan, decision, evidence, now)
            else:
                decision = "wait"
        elif decision == "pause":
            rec.state, rec.paused_by, rec.pause_reason = "paused", "controller", a.reason
            append_audit(session, CONTROLLER, "rollout.paused", {**evidence, "reason": a.reason}, at=now)
        elif decision in ("advance", "promote"):
            _move_on(session, ctx, rec, plan, decision, evidence, now)
        return StepResult(rec.id, decision, a.reason, rec.state, rec.stage_index)


def _move_on(
    session: Session, ctx: ServerContext, rec: RolloutRecord, plan: RolloutPlan, decision: str,
    evidence: dict[str, object], now: datetime,
) -> None:
    if decision == "promote":
        _finish(session, ctx, rec, "promoted", CONTROLLER, evidence, now)
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
    session: Session, ctx: ServerContext, rec: RolloutRecord, state: str, actor: str,
    evidence: dict[str, object], now: datetime,
) -> None:
    detail = {"rollout_id": rec.id}
    if state == "promoted":
        issued = promote_candidate(session, ctx, rec.candidate_id, actor=actor, detail=detail)
    else:
        issued = roll_back_candidate(session, ctx, rec.candidate_id, actor=actor, detail=detail)
    rec.state, rec.paused_by, rec.pause_reason = state, "", ""
    rec.bundle_version = issued.version
    rec.finished_at = _iso(now)
    append_audit(session, actor, f"rollout.{state}", {**evidence, "bundle_version": issued.version}, at=now)


# -- reviewers' controls ----------------------------------------------------------------------


def pause_rollout(session: Session, ctx: ServerContext, rollout_id: str, *, actor: str, reason: str) -> RolloutRecord:
    rec = _locked(session, rollout_id)
    if rec.state != "running" and not (rec.state == "paused" and rec.paused_by == "controller"):
        raise RolloutStateError(f"rollout {rec.id} is {rec.state}; only a running rollout can be paused")
    rec.state, rec.paused_by, rec.pause_reason = "paused", "reviewer", reason or "paused by a reviewer"
    rec.updated_at = _iso(ctx.clock())
    append_audit(session, actor, "rollout.paused", {"rollout_id": rec.id, "by": "reviewer", "reason": rec.pause_reason},
                 at=ctx.clock())
    return rec


def resume_rollout(session: Session, ctx: ServerContext, rollout_id: str, *, actor: str, reason: str) -> RolloutRecord:
    rec = _locked(session, rollout_id)
    if rec.state != "paused":
        raise RolloutStateError(f"rollout {rec.id} is {rec.state}; only a paused rollout can be resumed")
    rec.state, rec.paused_by, rec.pause_reason = "running", "", ""
    rec.updated_at = _iso(ctx.clock())
    append_audit(session, actor, "rollout.resumed", {"rollout_id": rec.id, "by": "reviewer", "reason": reason},
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
    rec.state, rec.paused_by, rec.pause_reason = "aborted", "", ""
    rec.bundle_version = issued.version
    rec.finished_at = rec.updated_at = _iso(now)
    append_audit(session, actor, "rollout.aborted",
                 {**_stage_audit(rec, plan), "reason": reason, "bundle_version": issued.version}, at=now)
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
