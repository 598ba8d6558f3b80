"""Review lifecycle on the server: transitions, signatures, thresholds, audit (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from server.audit import iter_audit, verify_audit
from server.db import transaction
from server.review.models import CandidateRecord
from server.review.trust_root import current_root
from server.review.workflow import (
    CandidateState,
    IllegalTransition,
    SignatureRejected,
    approve_candidate,
    edit_candidate,
    get_candidate,
    reject_candidate,
    signed_by,
    transition,
)
from tests.server.review.world import ServerWorld


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


def _state(world: ServerWorld, cid: str) -> str:
    with transaction(world.ctx.sessions) as s:
        return get_candidate(s, cid).state


@pytest.mark.parametrize(("risk", "needed"), [("low", 1), ("high", 2), ("critical", 3)])
def test_threshold_of_distinct_reviewers_per_risk_class_bundles_the_candidate(
    world: ServerWorld, risk: str, needed: int
) -> None:
    cid = world.propose(risk=risk)
    for i in range(needed - 1):
        world.sign(cid, i)
        world.sign(cid, i)  # the same reviewer again counts once
        assert _state(world, cid) == "proposed"
    world.sign(cid, needed - 1)
    assert _state(world, cid) == "bundled"
    with transaction(world.ctx.sessions) as s:
        rec = get_candidate(s, cid)
        assert rec.approval_json is not None
        kinds = [e.kind for e in iter_audit(s) if cid in e.payload_json]
    assert kinds[0] == "candidate.proposed" and kinds[-2:] == ["candidate.approved", "candidate.bundled"]
    assert kinds.count("candidate.signature") == needed


def test_signature_by_a_key_outside_the_root_is_refused(world: ServerWorld) -> None:
    cid = world.propose()
    stranger = CryptoSigner.generate_ed25519()
    with transaction(world.ctx.sessions) as s:
        payload = get_candidate(s, cid).signing_payload.encode()
        sig = stranger.sign(payload)
        with pytest.raises(SignatureRejected, match="not a low-risk reviewer key"):
            approve_candidate(s, cid, keyid=sig.keyid, signature=bytes.fromhex(sig.signature),
                              signing_payload=payload, root=current_root(s), actor="x", now=world.clock())


def test_forged_signature_and_stale_payload_are_refused(world: ServerWorld) -> None:
    cid = world.propose()
    with transaction(world.ctx.sessions) as s:
        payload = get_candidate(s, cid).signing_payload.encode()
        sig = world.reviewers[0].sign(b"something else")
        with pytest.raises(SignatureRejected, match="does not verify"):
            approve_candidate(s, cid, keyid=sig.keyid, signature=bytes.fromhex(sig.signature),
                              signing_payload=payload, root=current_root(s), actor="x", now=world.clock())
        with pytest.raises(SignatureRejected, match="changed"):
            approve_candidate(s, cid, keyid=sig.keyid, signature=bytes.fromhex(sig.signature),
                              signing_payload=payload + b" ", root=current_root(s), actor="x", now=world.clock())
    assert _state(world, cid) == "proposed"


def test_edit_makes_a_new_revision_and_old_signatures_stop_counting(world: ServerWorld) -> None:
    cid = world.propose(risk="high")
    world.sign(cid, 0)
    with transaction(world.ctx.sessions) as s:
        rec = edit_candidate(s, cid, artifacts=[("routing_rule.billing", "routing_rule", b'{"tool":"x"}')],
                             rollout_plan_json=None, actor="admin:a", now=world.clock())
        assert rec.state == "edited" and rec.revision == 2 and signed_by(s, rec) == []
    world.sign(cid, 1)
    assert _state(world, cid) == "edited"  # reviewer 0 signed revision 1 only
    world.sign(cid, 0)
    assert _state(world, cid) == "bundled"


@pytest.mark.parametrize(
    ("setup", "to_state"),
    [
        ("proposed", "bundled"), ("proposed", "rolling_out"), ("proposed", "promoted"),
        ("rejected", "approved"), ("rejected", "edited"), ("bundled", "rejected"), ("bundled", "promoted"),
        ("bundled", "edited"),
    ],
)
def test_illegal_transitions_are_refused(world: ServerWorld, setup: str, to_state: str) -> None:
    cid = world.approved() if setup == "bundled" else world.propose()
    if setup == "rejected":
        with transaction(world.ctx.sessions) as s:
            reject_candidate(s, cid, reason="not needed", actor="admin:a", now=world.clock())
    with transaction(world.ctx.sessions) as s, pytest.raises(IllegalTransition):
        transition(s, get_candidate(s, cid), CandidateState(to_state), actor="admin:a", now=world.clock())
    assert _state(world, cid) == setup


def test_rejected_candidate_cannot_be_approved_and_rejection_needs_reason(world: ServerWorld) -> None:
    cid = world.propose()
    with transaction(world.ctx.sessions) as s, pytest.raises(Exception, match="reason"):
        reject_candidate(s, cid, reason=" ", actor="admin:a", now=world.clock())
    with transaction(world.ctx.sessions) as s:
        reject_candidate(s, cid, reason="duplicate of another fix", actor="admin:a", now=world.clock())
    with pytest.raises(IllegalTransition):
        world.sign(cid, 0)
    assert _state(world, cid) == "rejected"


def test_audit_chain_covers_every_transition_and_detects_edits(world: ServerWorld) -> None:
    cid = world.approved()
    with transaction(world.ctx.sessions) as s:
        assert verify_audit(s).ok
        rec = s.get(CandidateRecord, cid)
        assert rec is not None
    from server.audit import AuditRecord

    with transaction(world.ctx.sessions) as s:
        row = s.get(AuditRecord, 2)
        assert row is not None
        row.payload_json = row.payload_json.replace("}", ",\"x\":1}", 1)
    with transaction(world.ctx.sessions) as s:
        verdict = verify_audit(s)
        assert not verdict.ok and verdict.first_broken_seq == 2
