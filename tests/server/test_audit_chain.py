from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from server.audit import AuditRecord, append_audit, verify_audit
from server.db import make_engine, make_sessionmaker, transaction
from server.migrate import init_db

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _store(url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    init_db(engine)
    return engine, make_sessionmaker(engine)


def test_chain_verifies_when_untouched(database_url: str) -> None:
    engine, sessions = _store(database_url)
    with transaction(sessions) as s:
        for i in range(5):
            append_audit(s, "tester", "event", {"i": i}, at=NOW)
    with transaction(sessions) as s:
        verdict = verify_audit(s)
    assert verdict.ok and verdict.checked == 5
    engine.dispose()


def test_editing_a_row_names_the_first_broken_entry(database_url: str) -> None:
    engine, sessions = _store(database_url)
    with transaction(sessions) as s:
        for i in range(5):
            append_audit(s, "tester", "event", {"i": i}, at=NOW)
    with transaction(sessions) as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(payload_json='{"i":99}'))
    with transaction(sessions) as s:
        verdict = verify_audit(s)
    assert not verdict.ok
    assert verdict.first_broken_seq == 3
    assert verdict.checked == 2
    engine.dispose()


def test_deleting_a_row_is_a_sequence_gap(database_url: str) -> None:
    engine, sessions = _store(database_url)
    with transaction(sessions) as s:
        for i in range(4):
            append_audit(s, "tester", "event", {"i": i}, at=NOW)
    with transaction(sessions) as s:
        s.query(AuditRecord).filter(AuditRecord.seq == 2).delete()
    with transaction(sessions) as s:
        verdict = verify_audit(s)
    assert not verdict.ok and verdict.first_broken_seq == 3
    engine.dispose()
