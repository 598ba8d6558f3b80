"""RolloutService: start, pause, resume, abort and watch rollouts. Admin certificates only."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import grpc
from fedsignal.v1 import rollout_pb2, rollout_pb2_grpc
from sqlalchemy.orm import Session

from aggregation.rollout_plan import RolloutPlan
from server.context import ServerContext
from server.rollout import controller as rollout
from server.rollout.evidence import Decision
from server.rollout.models import RolloutRecord
from server.servicer import unit_of_work

log = logging.getLogger("fedsignal.server.rollout.controller")

def rollout_status(session: Session, ctx: ServerContext, rec: RolloutRecord) -> rollout_pb2.RolloutStatus:
    """The status view: stage, exposure, per-gate estimate and interval, and the next decision.

    An active rollout is assessed live (read-only); a finished one shows the
    assessment that ended it.
    """
    plan = RolloutPlan.from_json(rec.plan_json)
    stage = plan.stages[rec.stage_index]
    if rec.state in rollout.ACTIVE_STATES:
        live = rollout.assess_rollout(session, ctx, rec)
        a = live.to_dict()
        if rec.state == rollout.RolloutState.PAUSED and rec.paused_by == rollout.PausedBy.REVIEWER:
            next_decision = f"paused by a reviewer ({rec.pause_reason}); `fedsignal admin rollout resume {rec.id}`"
        elif rec.state == rollout.RolloutState.PAUSED:
            next_decision = f"paused by the controller ({rec.pause_reason}); resumes when evidence is back"
            if live.decision == Decision.ROLLBACK:
                next_decision = f"rollback: {live.reason}"
        else:
            next_decision = f"{live.decision}: {live.reason}"
    else:
        a = json.loads(rec.last_assessment_json or "{}")
        next_decision = f"none ({rec.state})"
    gates = []
    for v in a.get("verdicts", []):
        low, high = v.get("low"), v.get("high")
        gates.append(rollout_pb2.GateStatus(
            gate=v["gate"], direction=v["direction"], margin=v["margin"], estimate=v["estimate"] or 0.0,
            low=low if low is not None else float("-inf"), high=high if high is not None else float("inf"),
            verdict=v["verdict"],
        ))
    return rollout_pb2.RolloutStatus(
        rollout_id=rec.id, candidate_id=rec.candidate_id, cohort=rec.cohort, state=rec.state,
        stage_index=rec.stage_index, stage_percent=stage.percent, canary_tenants=rollout.participants(rec),
        gates=gates, next_decision=next_decision, bundle_version=rec.bundle_version,
        windows_in_stage=int(a.get("elapsed_windows", 0)),
    )


class RolloutServicer(rollout_pb2_grpc.RolloutServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def _run(self, context: grpc.ServicerContext, work: Callable[[Session, str], RolloutRecord]) -> rollout_pb2.RolloutStatus:
        with unit_of_work(context, self._ctx, "admin") as call:
            rec = work(call.session, call.actor)
            return rollout_status(call.session, self._ctx, rec)

    def StartRollout(self, request: rollout_pb2.StartRolloutRequest,
                     context: grpc.ServicerContext) -> rollout_pb2.RolloutStatus:
        return self._run(context, lambda s, actor: rollout.start_rollout(s, self._ctx, request.candidate_id, actor=actor))

    def PauseRollout(self, request: rollout_pb2.RolloutRef, context: grpc.ServicerContext) -> rollout_pb2.RolloutStatus:
        return self._run(context, lambda s, actor: rollout.pause_rollout(
            s, self._ctx, request.rollout_id, actor=actor, reason=request.reason))

    def ResumeRollout(self, request: rollout_pb2.RolloutRef, context: grpc.ServicerContext) -> rollout_pb2.RolloutStatus:
        return self._run(context, lambda s, actor: rollout.resume_rollout(
            s, self._ctx, request.rollout_id, actor=actor, reason=request.reason))

    def AbortRollout(self, request: rollout_pb2.RolloutRef, context: grpc.ServicerContext) -> rollout_pb2.RolloutStatus:
        return self._run(context, lambda s, actor: rollout.abort_rollout(
            s, self._ctx, request.rollout_id, actor=actor, reason=request.reason))

    def GetRolloutStatus(self, request: rollout_pb2.RolloutRef,
                         context: grpc.ServicerContext) -> rollout_pb2.RolloutStatus:
        return self._run(context, lambda s, _actor: rollout.get_rollout(s, request.rollout_id))

    def ListRollouts(self, request: rollout_pb2.ListRolloutsRequest,
                     context: grpc.ServicerContext) -> rollout_pb2.ListRolloutsResponse:
        with unit_of_work(context, self._ctx, "admin") as call:
            recs = rollout.list_rollouts(call.session, request.state)
            return rollout_pb2.ListRolloutsResponse(rollouts=[rollout_status(call.session, self._ctx, r) for r in recs])


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(RolloutServicer(ctx), grpc_server)
