"""ReviewService: candidates, reviewer signatures and the trust root (admin certificates only).

A thin servicer over :mod:`server.review.workflow` and :mod:`server.review.trust_root`; domain
errors map to status codes, every change runs in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import grpc
from fedsignal.v1 import review_pb2, review_pb2_grpc
from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.bundle_format import sha256_hex
from aggregation.errors import FedsignalError
from server.context import ServerContext
from server.review.models import CandidateRecord
from server.review.trust_root import (
    TrustRootMissing,
    current_root,
    draft_root_info,
    install_root,
    root_bytes,
)
from server.review.workflow import (
    CandidateNotFound,
    approve_candidate,
    artifacts_of,
    edit_candidate,
    get_candidate,
    reject_candidate,
    signed_by,
)
from server.servicer import unit_of_work

T = TypeVar("T")

def candidate_to_proto(session: Session, rec: CandidateRecord) -> review_pb2.Candidate:
    try:
        threshold = current_root(session).threshold(rec.risk_class)
    except FedsignalError:
        threshold = 0
    return review_pb2.Candidate(
        id=rec.id, cohort=rec.cohort, state=rec.state, category=rec.category, risk_class=rec.risk_class,
        artifacts=[
            review_pb2.ArtifactSpec(name=n, kind=k, content=c, sha256=sha256_hex(c), length=len(c))
            for n, k, c in artifacts_of(rec)
        ],
        evidence_json=rec.evidence_json, rollout_plan_json=rec.rollout_plan_json,
        signing_payload=rec.signing_payload.encode("utf-8"), signed_by=signed_by(session, rec),
        threshold=threshold, created_at=rec.created_at, bundle_version=rec.bundle_version,
    )


class ReviewServicer(review_pb2_grpc.ReviewServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def _run(self, context: grpc.ServicerContext, fn: Callable[[Session, str], T]) -> T:
        with unit_of_work(context, self._ctx, "admin") as call:
            return fn(call.session, call.actor)

    def ListCandidates(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, _actor: str) -> review_pb2.ListCandidatesResponse:
            stmt = select(CandidateRecord).order_by(CandidateRecord.created_at, CandidateRecord.id)
            if request.state:
                stmt = stmt.where(CandidateRecord.state == request.state)
            if request.cohort:
                stmt = stmt.where(CandidateRecord.cohort == request.cohort)
            return review_pb2.ListCandidatesResponse(
                candidates=[candidate_to_proto(session, r) for r in session.scalars(stmt)]
            )

        return self._run(context, run)

    def GetCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return self._run(context, lambda s, _a: candidate_to_proto(s, get_candidate(s, request.id)))

    def EditCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, actor: str) -> review_pb2.Candidate:
            artifacts = [(a.name, a.kind, bytes(a.content)) for a in request.artifacts]
            rec = edit_candidate(session, request.id, artifacts=artifacts or None,
                                 rollout_plan_json=request.rollout_plan_json or None, actor=actor, now=self._ctx.clock())
            return candidate_to_proto(session, rec)

        return self._run(context, run)

    def ApproveCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, actor: str) -> review_pb2.Candidate:
            rec = approve_candidate(
                session, request.id, keyid=request.keyid, signature=bytes(request.signature),
                signing_payload=bytes(request.signing_payload), root=current_root(session), actor=actor,
                now=self._ctx.clock(),
            )
            return candidate_to_proto(session, rec)

        return self._run(context, run)

    def RejectCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, actor: str) -> review_pb2.Candidate:
            rec = reject_candidate(session, request.id, reason=request.reason, actor=actor, now=self._ctx.clock())
            return candidate_to_proto(session, rec)

        return self._run(context, run)

    def GetTrustRoot(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, _actor: str) -> review_pb2.GetTrustRootResponse:
            if request.version:
                data = root_bytes(session, request.version)
                if data is None:
                    raise CandidateNotFound(f"no trust root version {request.version}")
                return review_pb2.GetTrustRootResponse(root=data, version=request.version)
            try:
                root = current_root(session)
            except TrustRootMissing:
                # Version 0: no root yet; the draft names the server key `admin root init` must list.
                info = json.dumps(draft_root_info(self._ctx.settings.state_dir)).encode("utf-8")
                return review_pb2.GetTrustRootResponse(root=info, version=0)
            return review_pb2.GetTrustRootResponse(root=root.to_bytes(), version=root.version)

        return self._run(context, run)

    def RotateTrustRoot(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        def run(session: Session, actor: str) -> review_pb2.GetTrustRootResponse:
            trusted = install_root(session, bytes(request.root), actor=actor, now=self._ctx.clock(),
                                   state_dir=self._ctx.settings.state_dir)
            return review_pb2.GetTrustRootResponse(root=trusted.to_bytes(), version=trusted.version)

        return self._run(context, run)


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    review_pb2_grpc.add_ReviewServiceServicer_to_server(ReviewServicer(ctx), grpc_server)
