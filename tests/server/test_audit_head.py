"""The audit chain's signed head: a truncated or rewritten tail no longer verifies (issue 10, item 6).

The hash chain alone accepts a log cut short (every remaining entry still chains);
`fedsignal admin audit verify` checks the chain against the heads the server signed
with its online key, so cutting or re-writing the tail is detected.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from aggregation.audit import verify_chain
from fedsignal_cli.main import main
from server.audit import (
    AuditHeadRecord,
    AuditRecord,
    append_audit,
    checkpoint_due,
    checkpoint_head,
    iter_audit,
    latest_head,
    verify_audit,
)
from server.db import transaction
from server.identity.ca import write_credentials_dir
from tests.harness import Harness

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _append(h: Harness, n: int) -> None:
    with transaction(h.ctx.sessions) as s:
        for i in range(n):
            append_audit(s, "tester", "event", {"i": i}, at=NOW)


def _verify(h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    creds = tmp_path / "admin-creds"
    if not creds.exists():
        write_credentials_dir(creds, h.admin.key, h.admin.cert, h.ca.certificate_pem,
                              {"subject": "root-admin", "role": "admin"})
    code = main(["admin", "audit", "verify", "--server", h.mtls_target, "--credentials", str(creds)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_checkpoints_a_signed_head_and_accepts_an_intact_chain(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _append(harness, 5)
    code, out = _verify(harness, tmp_path, capsys)
    assert code == 0, out
    assert "audit chain verified" in out
    with harness.ctx.sessions() as s:
        head = latest_head(s)
        tail = list(iter_audit(s))[-1]
    assert head is not None and (head.seq, head.hash) == (tail.seq, tail.hash)
    _append(harness, 2)  # growing after a head is fine
    assert _verify(harness, tmp_path, capsys)[0] == 0


def test_truncating_the_audit_log_is_detected_by_audit_verify(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _append(harness, 6)
    assert _verify(harness, tmp_path, capsys)[0] == 0
    with transaction(harness.ctx.sessions) as s:
        last = max(e.seq for e in iter_audit(s))
        s.execute(delete(AuditRecord).where(AuditRecord.seq > last - 3))
    with harness.ctx.sessions() as s:
        assert verify_chain(iter_audit(s)).ok  # the bare chain cannot tell
    code, out = _verify(harness, tmp_path, capsys)
    assert code == 2
    assert "truncated" in out


def test_truncating_log_and_heads_together_is_detected_by_the_pinned_head(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _append(harness, 6)
    assert _verify(harness, tmp_path, capsys)[0] == 0
    with transaction(harness.ctx.sessions) as s:
        last = max(e.seq for e in iter_audit(s))
        s.execute(delete(AuditRecord).where(AuditRecord.seq > last - 3))
        s.execute(delete(AuditHeadRecord))  # a database attacker removes the server's heads too
    code, out = _verify(harness, tmp_path, capsys)
    assert code == 2
    assert "truncated" in out


def test_a_rewritten_tail_is_detected_by_audit_verify(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _append(harness, 6)
    assert _verify(harness, tmp_path, capsys)[0] == 0
    with transaction(harness.ctx.sessions) as s:
        last = max(e.seq for e in iter_audit(s))
        s.execute(delete(AuditRecord).where(AuditRecord.seq >= last - 1))
    # Re-grow the tail with other content: the chain is internally consistent again.
    with transaction(harness.ctx.sessions) as s:
        for i in range(3):
            append_audit(s, "mallory", "event", {"forged": i}, at=NOW)
    with harness.ctx.sessions() as s:
        assert verify_chain(iter_audit(s)).ok
    code, out = _verify(harness, tmp_path, capsys)
    assert code == 2
    assert "rewritten" in out


def test_a_forged_head_is_refused(harness: Harness) -> None:
    _append(harness, 3)
    with transaction(harness.ctx.sessions) as s:
        head = checkpoint_head(s, harness.ctx.online_signer, at=NOW)
    assert head is not None
    with transaction(harness.ctx.sessions) as s:
        s.execute(update(AuditHeadRecord).where(AuditHeadRecord.seq == head.seq).values(hash="0" * 64))
    with harness.ctx.sessions() as s:
        verdict = verify_audit(s, harness.ctx.online_signer)
    assert not verdict.ok
    assert "invalid signature" in (verdict.reason or "")


def test_checkpoint_is_due_only_after_the_interval_and_new_entries(harness: Harness) -> None:
    interval = timedelta(minutes=5)
    _append(harness, 2)
    with transaction(harness.ctx.sessions) as s:
        assert checkpoint_due(s, NOW, interval)
        checkpoint_head(s, harness.ctx.online_signer, at=NOW)
        assert not checkpoint_due(s, NOW + interval, interval)  # nothing new since
    _append(harness, 1)
    with transaction(harness.ctx.sessions) as s:
        assert not checkpoint_due(s, NOW + interval / 2, interval)
        assert checkpoint_due(s, NOW + interval, interval)
