"""The review lifecycle of a candidate and its reviewer signatures.

    proposed -> edited* -> approved | rejected
    approved -> bundled -> rolling_out -> promoted | rolled_back

An approval is a reviewer's Ed25519 signature over the candidate's signing
payload (the canonical ``signed`` bytes of its TUF approval metadata), made
on the reviewer's machine. Once the risk class threshold of distinct,
currently trusted reviewer keys is met, the candidate is approved and its
signed approval metadata is assembled (bundled). An edit creates a new
revision: signatures over the old payload stop counting. Every transition is
one audit event in the caller's transaction; illegal transitions raise.

A candidate's risk class is never below the highest class the remediation map
assigns to any of its artifact kinds (unknown kinds are refused), nor below the
class of any approved/bundled/rolling-out/promoted candidate of its cohort that
ships one of its artifact names: it is raised on create and on every edit,
never lowered. The risk class is part of the
signed payload, so raising it on edit also voids earlier signatures.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Signature
from sqlalchemy import select
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, Targets

from aggregation.bundle import build_approval
from aggregation.bundle_format import sha256_hex, valid_part
from aggregation.errors import FedsignalError, InvalidRequest, NotFound, PermissionDenied, PreconditionFailed
from aggregation.rollout_plan import plan_for_candidate
from aggregation.trust_root import TrustRoot, canonical_signed_bytes, to_json_bytes
from server.audit import append_audit
from server.db import advisory_lock, locks
from server.review.models import CandidateRecord, ReviewerSignature
from server.review.remediation import RemediationMap, default_remediation_map, highest_risk_class


class CandidateState(StrEnum):
    """A candidate's lifecycle state (stored as its string value)."""

    PROPOSED = "proposed"
    EDITED = "edited"
    APPROVED = "approved"
    REJECTED = "rejected"
    BUNDLED = "bundled"
    ROLLING_OUT = "rolling_out"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


STATES = tuple(CandidateState)
_S = CandidateState
TRANSITIONS: Mapping[CandidateState, frozenset[CandidateState]] = {
    _S.PROPOSED: frozenset({_S.EDITED, _S.APPROVED, _S.REJECTED}),
    _S.EDITED: frozenset({_S.EDITED, _S.APPROVED, _S.REJECTED}),
    _S.APPROVED: frozenset({_S.BUNDLED}),
    _S.BUNDLED: frozenset({_S.ROLLING_OUT}),
    _S.ROLLING_OUT: frozenset({_S.PROMOTED, _S.ROLLED_BACK}),
    _S.REJECTED: frozenset(),
    _S.PROMOTED: frozenset(),
    _S.ROLLED_BACK: frozenset(),
}
REVIEWABLE = frozenset({_S.PROPOSED, _S.EDITED})


class CandidateNotFound(NotFound):
    pass


class IllegalTransition(PreconditionFailed):
    """The candidate's state does not allow this step (message names both states)."""


class SignatureRejected(PermissionDenied):
    """A submitted approval signature that does not count (unknown key, bad signature, stale payload)."""


def serialize_writes(session: Session) -> None:
    """Take the audit lock first in every review/bundle write, before any row or other lock.

    Each of these writes appends audit entries (which takes this lock anyway); taking it up front
    gives one global lock order (audit, then cohort/root/detection locks, then rows) across replicas.
    """
    advisory_lock(session, locks.AUDIT)


def now_text(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


def get_candidate(session: Session, candidate_id: str, *, for_update: bool = False) -> CandidateRecord:
    stmt = select(CandidateRecord).where(CandidateRecord.id == candidate_id)
    if for_update:
        stmt = stmt.with_for_update()
    rec = session.scalars(stmt).first()
    if rec is None:
        raise CandidateNotFound(f"no candidate {candidate_id!r}; `fedsignal admin candidates list` shows them")
    return rec


def transition(
    session: Session, candidate: CandidateRecord, to_state: CandidateState, *, actor: str, now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> CandidateRecord:
    """Move ``candidate`` to ``to_state`` (refused unless the lifecycle allows it) and audit it."""
    if to_state not in TRANSITIONS.get(CandidateState(candidate.state), frozenset()):
        raise IllegalTransition(f"candidate {candidate.id} is {candidate.state}; it cannot become {to_state}")
    serialize_writes(session)
    previous = candidate.state
    candidate.state = to_state
    candidate.updated_at = now_text(now)
    append_audit(
        session, actor, f"candidate.{to_state}",
        {"candidate_id": candidate.id, "cohort": candidate.cohort, "from": previous, "to": to_state,
         "revision": candidate.revision, **dict(detail or {})},
        at=now,
    )
    session.flush()
    return candidate


def artifacts_of(candidate: CandidateRecord) -> list[tuple[str, str, bytes]]:
    """``(name, kind, content)`` of the candidate's current revision."""
    return [(a["name"], a["kind"], base64.b64decode(a["content_b64"])) for a in json.loads(candidate.artifacts_json)]


def _encode_artifacts(artifacts: Sequence[tuple[str, str, bytes]]) -> str:
    return json.dumps(
        [{"name": n, "kind": k, "content_b64": base64.b64encode(c).decode("ascii")} for n, k, c in artifacts]
    )


def _payload(candidate: CandidateRecord, artifacts: Sequence[tuple[str, str, bytes]]) -> str:
    md = build_approval(
        cohort=candidate.cohort,
        candidate_id=candidate.id,
        risk_class=candidate.risk_class,
        category=candidate.category,
        artifacts=artifacts,
        rollout_plan=json.loads(candidate.rollout_plan_json or "{}"),
        created_at=datetime.fromisoformat(candidate.created_at),
        revision=candidate.revision,
    )
    return canonical_signed_bytes(md).decode("utf-8")


class InvalidArtifacts(InvalidRequest):
    """Artifacts a candidate cannot ship (none, an empty or '/'-containing or repeated name)."""


def check_artifacts(artifacts: Sequence[tuple[str, str, bytes]]) -> None:
    """Artifacts travel as ``<candidate_id>/<name>``: names must be non-empty, '/'-free and distinct."""
    if not artifacts:
        raise InvalidArtifacts("a candidate needs at least one artifact")
    names = [n for n, _, _ in artifacts]
    if bad := [n for n in names if not valid_part(n)]:
        raise InvalidArtifacts(f"artifact names must be non-empty and contain no '/': {bad}")
    if len(set(names)) != len(names):
        raise InvalidArtifacts(f"artifact names must be distinct: {sorted(names)}")


def required_risk_class(
    risk_class: str, kinds: Sequence[str], remedies: RemediationMap | None = None
) -> str:
    """``risk_class`` raised to the highest class the remediation map gives any of ``kinds``.

    Raises :class:`~server.review.remediation.UnknownArtifactKind` for a kind the map does not know.
    """

    return (remedies or default_remediation_map()).required_risk_class(kinds, at_least=risk_class)


#: Candidates whose artifacts are (or may become) stable or the candidate of a cohort's bundle.
SHIPPING_STATES = (_S.APPROVED, _S.BUNDLED, _S.ROLLING_OUT, _S.PROMOTED)


def shipped_names_floor(
    session: Session, cohort: str, names: Sequence[str], risk_class: str, *, exclude: str | None = None
) -> str:
    """``risk_class`` raised to the class of every shipping candidate of ``cohort`` that ships one of ``names``.

    Tenants refuse a bundle in which an approval wins an artifact name over one of a more demanding
    risk class (``RiskClassDowngradeError``); raising the class here keeps the server from approving
    a candidate whose bundle every tenant would refuse.
    """

    wanted = set(names)
    stmt = select(CandidateRecord).where(CandidateRecord.cohort == cohort, CandidateRecord.state.in_(SHIPPING_STATES))
    if exclude is not None:
        stmt = stmt.where(CandidateRecord.id != exclude)
    for other in session.scalars(stmt):
        if wanted & {a["name"] for a in json.loads(other.artifacts_json)}:
            risk_class = highest_risk_class(risk_class, other.risk_class)
    return risk_class


def create_candidate(
    session: Session, *, cohort: str, category: str, kind: str, risk_class: str,
    artifacts: Sequence[tuple[str, str, bytes]], evidence: Mapping[str, Any], rollout_plan_json: str,
    dedupe_key: str, now: datetime, actor: str = "system:detector", remedies: RemediationMap | None = None,
) -> CandidateRecord | None:
    """A new proposed candidate, or ``None`` when one with ``dedupe_key`` already exists (idempotent).

    The stored risk class is ``risk_class`` raised to what the artifacts' kinds require.
    """
    check_artifacts(artifacts)
    requested = risk_class
    risk_class = required_risk_class(risk_class, [kind, *(k for _, k, _ in artifacts)], remedies)
    serialize_writes(session)
    if session.scalars(select(CandidateRecord.id).where(CandidateRecord.dedupe_key == dedupe_key)).first():
        return None
    risk_class = shipped_names_floor(session, cohort, [n for n, _, _ in artifacts], risk_class)
    if risk_class != requested and rollout_plan_json == plan_for_candidate(requested, None).to_json():
        rollout_plan_json = plan_for_candidate(risk_class, None).to_json()  # the raised class's shipped plan
    candidate_id = "cand-" + uuid.uuid4().hex[:12]
    if not valid_part(candidate_id):
        raise InvalidArtifacts(f"generated candidate id {candidate_id!r} is not a valid name part")
    rec = CandidateRecord(
        id=candidate_id, dedupe_key=dedupe_key, cohort=cohort, category=category, kind=kind,
        risk_class=risk_class, state=CandidateState.PROPOSED, artifacts_json=_encode_artifacts(artifacts),
        evidence_json=json.dumps(evidence, sort_keys=True), rollout_plan_json=rollout_plan_json, revision=1,
        signing_payload="", created_at=now_text(now), updated_at=now_text(now), bundle_version=0,
    )
    rec.signing_payload = _payload(rec, artifacts)
    session.add(rec)
    session.flush()
    append_audit(
        session, actor, "candidate.proposed",
        {"candidate_id": rec.id, "cohort": cohort, "category": category, "kind": kind, "risk_class": risk_class,
         **({"risk_class_requested": requested} if requested != risk_class else {}), "evidence": dict(evidence)},
        at=now,
    )
    return rec


def _has_plan(text: str | None) -> bool:
    """A stored plan override ("" and "{}" mean: the risk class's shipped plan)."""
    try:
        return bool(text and text.strip() and json.loads(text) != {})
    except json.JSONDecodeError:
        return True


def edit_candidate(
    session: Session, candidate_id: str, *, artifacts: Sequence[tuple[str, str, bytes]] | None,
    rollout_plan_json: str | None, actor: str, now: datetime,
) -> CandidateRecord:
    """New revision with edited artifacts and/or plan; earlier signatures no longer count."""
    serialize_writes(session)
    rec = get_candidate(session, candidate_id, for_update=True)
    if rec.state not in REVIEWABLE:
        raise IllegalTransition(f"candidate {rec.id} is {rec.state}; only proposed or edited candidates can be edited")
    new_artifacts = list(artifacts) if artifacts else artifacts_of(rec)
    check_artifacts(new_artifacts)
    if not valid_part(rec.id):
        raise InvalidArtifacts(f"candidate id {rec.id!r} is empty or contains '/'")
    # Re-derive the risk class from the (new) artifacts' kinds: upward only, never below what it was.
    previous_class = rec.risk_class
    new_class = required_risk_class(previous_class, [k for _, k, _ in new_artifacts])
    new_class = shipped_names_floor(session, rec.cohort, [n for n, _, _ in new_artifacts], new_class, exclude=rec.id)

    if rollout_plan_json:
        plan_for_candidate(new_class, rollout_plan_json)  # validates; raises RolloutPlanError
        rec.rollout_plan_json = rollout_plan_json
    elif new_class != previous_class and _has_plan(rec.rollout_plan_json):
        if rec.rollout_plan_json == plan_for_candidate(previous_class, None).to_json():
            # The stored plan was just the shipped plan of the old class: take the new class's.
            rec.rollout_plan_json = plan_for_candidate(new_class, None).to_json()
        else:
            # A reviewer's own plan must also hold for the raised class (else: edit with a new plan).
            plan_for_candidate(new_class, rec.rollout_plan_json)
    rec.risk_class = new_class
    rec.artifacts_json = _encode_artifacts(new_artifacts)
    rec.revision += 1
    rec.signing_payload = _payload(rec, new_artifacts)
    detail: dict[str, Any] = {"artifacts": [n for n, _, _ in new_artifacts]}
    if new_class != previous_class:
        detail["risk_class"] = {"from": previous_class, "to": new_class}
    return transition(session, rec, CandidateState.EDITED, actor=actor, now=now, detail=detail)


def signed_by(session: Session, rec: CandidateRecord) -> list[str]:
    rows = session.scalars(
        select(ReviewerSignature.keyid).where(
            ReviewerSignature.candidate_id == rec.id, ReviewerSignature.revision == rec.revision
        )
    )
    return sorted(rows)


def approve_candidate(
    session: Session, candidate_id: str, *, keyid: str, signature: bytes, signing_payload: bytes,
    root: TrustRoot, actor: str, now: datetime,
) -> CandidateRecord:
    """Record one reviewer signature; approve and bundle once the risk class threshold is met."""
    serialize_writes(session)
    rec = get_candidate(session, candidate_id, for_update=True)
    if rec.state not in REVIEWABLE:
        raise IllegalTransition(f"candidate {rec.id} is {rec.state}; it can no longer be approved")
    # The payload is rebuilt from the candidate's current content, not read back: a signature counts
    # only over exactly the artifacts, risk class, cohort and plan the candidate holds now.
    current = _payload(rec, artifacts_of(rec))
    if rec.signing_payload != current:
        raise SignatureRejected(
            f"candidate {rec.id}'s stored signing payload does not match its content (revision {rec.revision}); "
            "edit it to make a new revision"
        )
    if signing_payload != current.encode("utf-8"):
        raise SignatureRejected(
            f"candidate {rec.id} changed since that payload was built (now revision {rec.revision}, content digest "
            f"{sha256_hex(current.encode('utf-8'))[:16]}); show it again and re-sign"
        )
    keys = root.reviewer_keys(rec.risk_class)
    if keyid not in keys:
        raise SignatureRejected(
            f"key {keyid} is not a {rec.risk_class}-risk reviewer key in trust root v{root.version}"
        )
    sig = Signature(keyid, signature.hex())
    try:
        keys[keyid].verify_signature(sig, signing_payload)
    except UnverifiedSignatureError as exc:
        raise SignatureRejected(f"signature by {keyid} does not verify over candidate {rec.id}'s payload") from exc
    if keyid not in signed_by(session, rec):
        session.add(ReviewerSignature(candidate_id=rec.id, revision=rec.revision, keyid=keyid,
                                      signature_hex=sig.signature, reviewer=actor, created_at=now_text(now)))
        session.flush()
        append_audit(session, actor, "candidate.signature",
                     {"candidate_id": rec.id, "revision": rec.revision, "keyid": keyid}, at=now)
    return _approve_if_threshold(session, rec, root, actor=actor, now=now)


def _approve_if_threshold(session: Session, rec: CandidateRecord, root: TrustRoot, *, actor: str, now: datetime) -> CandidateRecord:
    rows = session.scalars(
        select(ReviewerSignature).where(
            ReviewerSignature.candidate_id == rec.id, ReviewerSignature.revision == rec.revision
        )
    ).all()
    md = Metadata(Targets.from_dict(json.loads(rec.signing_payload)))
    role = root.role(rec.risk_class)
    for row in rows:
        if row.keyid in role.keyids:  # a removed key's signature stops counting
            md.signatures[row.keyid] = Signature(row.keyid, row.signature_hex)
    result = root.verifier().get_verification_result(role.name, rec.signing_payload.encode("utf-8"), dict(md.signatures))
    if not result.verified:
        return rec
    md.signatures.clear()
    for keyid in sorted(result.signed):
        md.signatures[keyid] = next(Signature(r.keyid, r.signature_hex) for r in rows if r.keyid == keyid)
    rec.approval_json = to_json_bytes(md).decode("utf-8")
    transition(session, rec, CandidateState.APPROVED, actor=actor, now=now,
               detail={"signed_by": sorted(result.signed), "threshold": result.threshold, "root_version": root.version})
    return transition(session, rec, CandidateState.BUNDLED, actor="system:review", now=now)


def reject_candidate(session: Session, candidate_id: str, *, reason: str, actor: str, now: datetime) -> CandidateRecord:
    if not reason.strip():
        raise FedsignalError("a rejection needs a reason (--reason)")
    serialize_writes(session)
    rec = get_candidate(session, candidate_id, for_update=True)
    rec.reject_reason = reason
    return transition(session, rec, CandidateState.REJECTED, actor=actor, now=now, detail={"reason": reason})


def approval_metadata(rec: CandidateRecord) -> Metadata[Targets]:
    """The reviewer-signed approval of a bundled (or later) candidate."""
    if rec.approval_json is None:
        raise IllegalTransition(f"candidate {rec.id} is {rec.state} and has no reviewer-approved metadata")
    return Metadata.from_bytes(rec.approval_json.encode("utf-8"))
