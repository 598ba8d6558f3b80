"""Reviewers never sign blind (issue 13.1).

The reviewer's tool builds the approval bytes from what it shows, refuses a server payload that differs,
and signs only content this reviewer was shown unchanged; the server counts a signature only over the
candidate's current content.
"""

from __future__ import annotations

import io
import json
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import review_pb2, review_pb2_grpc
from sqlalchemy import update

from aggregation.bundle_format import build_approval
from aggregation.trust_root import canonical_signed_bytes
from fedsignal_cli.main import main
from server.db import transaction
from server.review.models import CandidateRecord
from server.review.trust_root import current_root
from server.review.workflow import SignatureRejected, approve_candidate, get_candidate, signed_by
from tests.server.review.cli_world import CONTENT, ReviewCliWorld, review_cli_world


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> ReviewCliWorld:  # type: ignore[misc]
    with review_cli_world(database_url, tmp_path) as w:
        yield w


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


def _signatures(world: ReviewCliWorld, cid: str) -> list[str]:
    with transaction(world.ctx.sessions) as s:
        return signed_by(s, get_candidate(s, cid))


def _as(world: ReviewCliWorld, reviewer: str, tmp_path: Path) -> list[str]:
    return ["--review-state", str(tmp_path / f"seen-{reviewer}"), *world.conn()]


def _approve(world: ReviewCliWorld, cid: str, reviewer: str, tmp_path: Path) -> int:
    return main(["admin", "approve", cid, "--key", str(world.keys[reviewer]),
                 "--passphrase-file", str(world.passphrase_file), *_as(world, reviewer, tmp_path)])


def test_an_edit_between_show_and_approve_is_shown_as_a_diff_and_not_signed(
        world: ReviewCliWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = world.propose()
    assert main(["admin", "candidates", "show", cid, *_as(world, "alice", tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "invoice_lookup" in shown and "risk class:  low" in shown
    # Someone else with an admin certificate swaps the artifact after alice looked at it.
    evil = tmp_path / "evil.json"
    evil.write_text('{"intent": "billing", "tool": "wire_transfer"}')
    assert main(["admin", "edit", cid, "--artifact", f"routing_rule.billing={evil}", *world.conn()]) == 0
    capsys.readouterr()

    assert _approve(world, cid, "alice", tmp_path) == 5
    out, err = capsys.readouterr()
    assert "CHANGED since you last saw it" in out
    assert '-    | {"intent": "billing", "tool": "invoice_lookup"}' in out
    assert '+    | {"intent": "billing", "tool": "wire_transfer"}' in out
    assert "revision 1 -> 2" in err and "nothing was signed" in err and len(err.strip().splitlines()) == 1
    assert _signatures(world, cid) == []

    # Having now seen revision 2 (the diff above), alice may sign it, and only it.
    assert _approve(world, cid, "alice", tmp_path) == 0
    assert _signatures(world, cid) == [world.signers["alice"].public_key.keyid]


def test_a_candidate_never_shown_to_this_reviewer_is_shown_first_and_not_signed(
        world: ReviewCliWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = world.propose()
    assert _approve(world, cid, "bob", tmp_path) == 5
    out, err = capsys.readouterr()
    assert "invoice_lookup" in out and "content digest" in out
    assert "had not been shown to you before" in err
    assert _signatures(world, cid) == []
    # What alice saw does not count for bob: records are per reviewer.
    assert main(["admin", "candidates", "show", cid, *_as(world, "alice", tmp_path)]) == 0
    assert _approve(world, cid, "bob", tmp_path) == 0
    assert _signatures(world, cid) == [world.signers["bob"].public_key.keyid]


def test_the_server_refuses_a_signature_over_a_payload_that_is_not_the_current_content(
        world: ReviewCliWorld) -> None:
    """The stored payload column no longer matches the artifacts (a write behind the workflow's back)."""
    cid = world.propose()
    with transaction(world.ctx.sessions) as s:
        rec = get_candidate(s, cid)
        forged = build_approval(cohort=rec.cohort, candidate_id=rec.id, risk_class="low", category=rec.category,
                                artifacts=[("routing_rule.billing", "routing_rule", b'{"tool": "wire_transfer"}')],
                                rollout_plan={}, created_at=datetime.fromisoformat(
                                    rec.created_at), revision=rec.revision)
        payload = canonical_signed_bytes(forged)
        s.execute(update(CandidateRecord).where(CandidateRecord.id == cid).values(signing_payload=payload.decode()))
    sig = world.signers["alice"].sign(payload)
    with transaction(world.ctx.sessions) as s, pytest.raises(SignatureRejected, match="does not match its content"):
        approve_candidate(s, cid, keyid=sig.keyid, signature=bytes.fromhex(sig.signature), signing_payload=payload,
                          root=current_root(s), actor="admin:alice", now=world.ctx.clock())
    assert _signatures(world, cid) == []


class _LyingReviewService(review_pb2_grpc.ReviewServiceServicer):
    """A compromised server: shows a critical guardrail, asks for a signature over a low routing rule."""

    def __init__(self) -> None:
        self.approvals: list[review_pb2.ApproveCandidateRequest] = []
        created = "2026-11-01T12:00:00+00:00"
        shown = [("guardrail.refund", "guardrail_template", b'{"block": ["refund over 500"]}')]
        signed = [("guardrail.refund", "guardrail_template", b'{"block": []}')]
        payload = canonical_signed_bytes(build_approval(
            cohort="retail", candidate_id="cand-lie", risk_class="low", category="unsupported_claim",
            artifacts=signed, rollout_plan={}, created_at=datetime.fromisoformat(created)))
        self.candidate = review_pb2.Candidate(
            id="cand-lie", cohort="retail", state="proposed", category="unsupported_claim", risk_class="critical",
            artifacts=[review_pb2.ArtifactSpec(name=n, kind=k, content=c) for n, k, c in shown],
            evidence_json="{}", rollout_plan_json="{}", signing_payload=payload, threshold=3, created_at=created)

    def GetCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return self.candidate

    def ApproveCandidate(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.approvals.append(request)
        return self.candidate


def test_the_cli_refuses_to_sign_when_the_server_payload_differs_from_what_it_shows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = _LyingReviewService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    review_pb2_grpc.add_ReviewServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        key_dir = tmp_path / "keys"
        (tmp_path / "pass").write_text("correct horse battery\n")
        assert main(["admin", "keygen", "--out", str(key_dir), "--name", "alice",
                     "--passphrase-file", str(tmp_path / "pass")]) == 0
        conn = ["--server", f"127.0.0.1:{port}", "--insecure-dev", "--review-state", str(tmp_path / "seen")]
        for argv in (["admin", "candidates", "show", "cand-lie", *conn],
                     ["admin", "approve", "cand-lie", "--key", str(key_dir / "alice.key"),
                      "--passphrase-file", str(tmp_path / "pass"), *conn]):
            capsys.readouterr()
            assert main(argv) == 4
            err = capsys.readouterr().err
            assert "not signing" in err and "risk_class: shown 'critical', payload 'low'" in err
            assert "artifacts: shown" in err
        assert service.approvals == []
    finally:
        server.stop(0)


def test_keygen_and_approve_without_a_terminal_or_passphrase_file_say_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSIGNAL_KEY_PASSPHRASE", raising=False)
    assert main(["admin", "keygen", "--out", str(tmp_path), "--name", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--passphrase-file" in err and "Traceback" not in err
    assert not (tmp_path / "x.key").exists()


def test_candidates_show_is_readable_with_iso_times(
        world: ReviewCliWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = world.propose()
    assert main(["admin", "candidates", "show", cid, *_as(world, "alice", tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith(f"candidate {cid}")
    assert "window 2026-11-01T12:00:00Z .. 2026-11-01T13:00:00Z  wrong_tool  [intent=billing]" in out
    assert "rate 20.0%  interval [15.0%, 25.0%]" in out
    assert "stages:" in out and "gate:" in out
    assert CONTENT.decode() in out
    assert main(["admin", "candidates", "show", cid, "--json", *world.conn()]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == cid


def _honest_candidate() -> review_pb2.Candidate:
    created = "2026-11-01T12:00:00+00:00"
    arts = [("routing_rule.billing", "routing_rule", CONTENT)]
    payload = canonical_signed_bytes(build_approval(
        cohort="retail", candidate_id="cand-ok", risk_class="low", category="wrong_tool", artifacts=arts,
        rollout_plan={}, created_at=datetime.fromisoformat(created)))
    return review_pb2.Candidate(
        id="cand-ok", cohort="retail", state="proposed", category="wrong_tool", risk_class="low",
        artifacts=[review_pb2.ArtifactSpec(name=n, kind=k, content=c) for n, k, c in arts], evidence_json="{}",
        rollout_plan_json="{}", signing_payload=payload, threshold=1, created_at=created)


def test_on_a_terminal_the_reviewer_confirms_exactly_the_content_shown(tmp_path: Path) -> None:
    from server.admin_cli.approval import ReviewRecords, decide

    c = _honest_candidate()
    asked: list[str] = []

    def no(text: str) -> bool:
        asked.append(text)
        return False

    refused = decide(c, ReviewRecords(tmp_path / "r1", "srv"), datetime.now(UTC), confirm=no)
    assert refused.payload is None and refused.refusal is not None
    assert CONTENT.decode() in asked[0] and "risk class:  low" in asked[0]
    accepted = decide(c, ReviewRecords(tmp_path / "r2", "srv"), datetime.now(UTC), confirm=lambda text: True)
    assert accepted.payload == bytes(c.signing_payload) and accepted.refusal is None


def test_the_review_record_is_private_to_the_reviewer(tmp_path: Path) -> None:
    import stat

    from server.admin_cli.approval import ReviewRecords, show_and_record

    records = ReviewRecords(tmp_path / "reviews", "localhost:7443")
    show_and_record(_honest_candidate(), records, datetime.now(UTC))
    files = list(records.directory.iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(records.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert records.last_seen("cand-ok") is not None and records.last_seen("cand-other") is None
