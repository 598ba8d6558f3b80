"""Issuing per-cohort bundles: the server's online key signs which approvals are live.

``issue_cohort_bundle`` writes the next version of a cohort's signed cohort
metadata (TUF snapshot) pinning the promoted approvals (stable, in promotion
order: a later one overrides an earlier one's artifact of the same name)
and, during a rollout, the candidate approval with its exposure. ROLLOUT
moves stages by calling it with a new :class:`RolloutExposure`, and promotes
or rolls back with :func:`promote_candidate` / :func:`roll_back_candidate`,
each of which issues a newer version pointing at reviewer-approved sets only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, Targets

from aggregation.bundle import RolloutExposure, build_cohort_metadata, bundle_document, wire_name
from aggregation.errors import PreconditionFailed
from server.audit import append_audit
from server.context import ServerContext
from server.db import advisory_lock, locks
from server.review.models import CandidateRecord, CohortBundleRecord
from server.review.trust_root import current_root, current_root_version
from server.review.workflow import (
    CandidateState,
    approval_metadata,
    artifacts_of,
    get_candidate,
    now_text,
    serialize_writes,
    transition,
)

__all__ = [
    "IssuedBundle",
    "RolloutExposure",
    "issue_cohort_bundle",
    "latest_bundle",
    "promote_candidate",
    "roll_back_candidate",
]


class BundleIssueError(PreconditionFailed):
    pass


@dataclass(frozen=True)
class IssuedBundle:
    cohort: str
    version: int
    metadata: bytes
    expires_at: datetime
    stable: tuple[str, ...]
    candidate_id: str | None


def latest_bundle(session: Session, cohort: str) -> CohortBundleRecord | None:
    return session.scalars(
        select(CohortBundleRecord).where(CohortBundleRecord.cohort == cohort).order_by(CohortBundleRecord.version.desc()).limit(1)
    ).first()


def _stable(session: Session, cohort: str) -> list[CandidateRecord]:
    promoted = session.scalars(
        select(CandidateRecord)
        .where(CandidateRecord.cohort == cohort, CandidateRecord.state == CandidateState.PROMOTED)
        .order_by(CandidateRecord.updated_at, CandidateRecord.id)
    ).all()
    # Drop sets whose every artifact a later promotion overrides (they would never be resolved).
    kept: list[CandidateRecord] = []
    later: set[str] = set()
    for rec in reversed(promoted):
        names = {n for n, _, _ in artifacts_of(rec)}
        if not names <= later:
            kept.append(rec)
        later |= names
    return list(reversed(kept))


def issue_cohort_bundle(
    session: Session, ctx: ServerContext, cohort: str, rollout: RolloutExposure | None, *, actor: str = "system:bundles"
) -> IssuedBundle:
    """Sign and store the next version of ``cohort``'s bundle metadata (inside the caller's transaction).

    With ``rollout`` the candidate it names (bundled or rolling out, same cohort) is included with its
    exposure; a bundled candidate becomes rolling_out. Without it only promoted sets are shipped:
    that is both a promotion's and a rollback's bundle.
    """
    # The audit lock first, always: every writer here appends audit entries, and one global
    # order (audit, then ours) keeps concurrent transactions from deadlocking.
    serialize_writes(session)
    advisory_lock(session, locks.bundle(cohort))
    now = ctx.clock()
    root = current_root(session)
    stable_recs = _stable(session, cohort)
    candidate_md: Metadata[Targets] | None = None
    if rollout is not None:
        cand = get_candidate(session, rollout.candidate_id, for_update=True)
        if cand.cohort != cohort:
            raise BundleIssueError(f"candidate {cand.id} belongs to cohort {cand.cohort}, not {cohort}")
        if cand.state == CandidateState.BUNDLED:
            transition(session, cand, CandidateState.ROLLING_OUT, actor=actor, now=now, detail={"rollout_id": rollout.rollout_id})
        elif cand.state != CandidateState.ROLLING_OUT:
            raise BundleIssueError(f"candidate {cand.id} is {cand.state}; only bundled or rolling-out candidates can be exposed")
        candidate_md = approval_metadata(cand)
    last = session.scalar(select(func.max(CohortBundleRecord.version)).where(CohortBundleRecord.cohort == cohort))
    version = int(last or 0) + 1
    lifetime = timedelta(days=ctx.settings.bundle_expiry_days)
    stable_mds = [approval_metadata(r) for r in stable_recs]
    md = build_cohort_metadata(
        cohort=cohort, version=version, now=now, lifetime=lifetime, root_version=root.version,
        stable=stable_mds, candidate=candidate_md, rollout=rollout,
    )
    md.sign(ctx.online_signer, append=True)
    approvals = [*stable_mds, *([candidate_md] if candidate_md is not None else [])]
    document = bundle_document(md, approvals)
    exposure = None
    if rollout is not None:
        exposure = {
            "rollout_id": rollout.rollout_id, "candidate_id": rollout.candidate_id,
            "stage_index": rollout.stage_index, "stage_percent": rollout.stage_percent,
            "session_fraction": rollout.session_fraction, "tenants": sorted(rollout.participating_tenants),
        }
    stable_ids = tuple(r.id for r in stable_recs)
    session.add(CohortBundleRecord(
        cohort=cohort, version=version, metadata_json=document.decode("utf-8"), issued_at=now_text(now),
        expires_at=now_text(md.signed.expires), root_version=root.version,
        candidate_id=rollout.candidate_id if rollout else None, rollout_id=rollout.rollout_id if rollout else None,
        exposure_json=json.dumps(exposure) if exposure else None, stable_json=json.dumps(list(stable_ids)),
    ))
    if rollout is not None:
        get_candidate(session, rollout.candidate_id).bundle_version = version
    append_audit(
        session, actor, "bundle.issued",
        {"cohort": cohort, "version": version, "stable": list(stable_ids),
         "candidate_id": rollout.candidate_id if rollout else None, "rollout_id": rollout.rollout_id if rollout else None,
         "stage_index": rollout.stage_index if rollout else None,
         "stage_percent": rollout.stage_percent if rollout else None,
         "session_fraction": rollout.session_fraction if rollout else None,
         "participating_tenants": len(rollout.participating_tenants) if rollout else 0,
         "root_version": root.version, "expires": now_text(md.signed.expires)},
        at=now,
    )
    session.flush()
    return IssuedBundle(cohort, version, document, md.signed.expires, stable_ids,
                        rollout.candidate_id if rollout else None)


def promote_candidate(session: Session, ctx: ServerContext, candidate_id: str, *, actor: str, detail: dict | None = None) -> IssuedBundle:
    """rolling_out -> promoted, and issue a bundle whose stable includes it (no candidate exposure)."""
    serialize_writes(session)
    cand = get_candidate(session, candidate_id, for_update=True)
    transition(session, cand, CandidateState.PROMOTED, actor=actor, now=ctx.clock(), detail=detail)
    return issue_cohort_bundle(session, ctx, cand.cohort, None, actor=actor)


def roll_back_candidate(session: Session, ctx: ServerContext, candidate_id: str, *, actor: str, detail: dict | None = None) -> IssuedBundle:
    """rolling_out -> rolled_back, and issue a newer bundle pointing back to the promoted sets only."""
    serialize_writes(session)
    cand = get_candidate(session, candidate_id, for_update=True)
    transition(session, cand, CandidateState.ROLLED_BACK, actor=actor, now=ctx.clock(), detail=detail)
    return issue_cohort_bundle(session, ctx, cand.cohort, None, actor=actor)


def exposure_of(record: CohortBundleRecord) -> RolloutExposure | None:
    if not record.exposure_json:
        return None
    e = json.loads(record.exposure_json)
    return RolloutExposure(e["rollout_id"], e["candidate_id"], int(e["stage_index"]), float(e["stage_percent"]),
                           float(e["session_fraction"]), tuple(e["tenants"]))


def current_bundle(session: Session, ctx: ServerContext, cohort: str) -> CohortBundleRecord:
    """The cohort's newest bundle, re-issued (same contents, newer version) when missing, past half its
    lifetime, or signed under an older root, so tenants never freeze on an expired bundle."""
    rec = latest_bundle(session, cohort)
    if _stale(session, ctx, rec):
        serialize_writes(session)
        advisory_lock(session, locks.bundle(cohort))
        rec = latest_bundle(session, cohort)  # another replica may have refreshed it meanwhile
        if _stale(session, ctx, rec):
            exposure = exposure_of(rec) if rec is not None else None
            if exposure is not None and get_candidate(session, exposure.candidate_id).state != CandidateState.ROLLING_OUT:
                exposure = None
            issue_cohort_bundle(session, ctx, cohort, exposure, actor="system:refresh")
            rec = latest_bundle(session, cohort)
    if rec is None:
        raise BundleIssueError(f"no bundle could be issued for cohort {cohort}")
    return rec


def _stale(session: Session, ctx: ServerContext, rec: CohortBundleRecord | None) -> bool:
    if rec is None:
        return True
    half = timedelta(days=ctx.settings.bundle_expiry_days) / 2
    if datetime.fromisoformat(rec.expires_at) - ctx.clock() < half:
        return True
    return rec.root_version != current_root_version(session)


def bundle_artifacts(session: Session, record: CohortBundleRecord) -> list[tuple[str, bytes]]:
    """Wire-named artifacts of every approval a bundle pins."""
    ids = list(json.loads(record.stable_json)) + ([record.candidate_id] if record.candidate_id else [])
    out: list[tuple[str, bytes]] = []
    for cid in ids:
        for name, _, content in artifacts_of(get_candidate(session, cid)):
            out.append((wire_name(cid, name), content))
    return out
