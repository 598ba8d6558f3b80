"""Append to and verify the server's hash-chained audit log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from aggregation.audit import ChainedEntry, ChainVerdict, chain_next, verify_chain
from server import locks
from server.db import Base, advisory_lock


class AuditRecord(Base):
    """One entry of the hash-chained audit log (see :mod:`aggregation.audit`)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(100), index=True)
    payload_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def _to_entry(r: AuditRecord) -> ChainedEntry:
    return ChainedEntry(r.seq, r.at, r.actor, r.kind, r.payload_json, r.prev_hash, r.hash)


def append_audit(session: Session, actor: str, kind: str, payload: Any, *, at: datetime) -> ChainedEntry:
    """Append one entry, dated ``at`` (the caller's clock), inside the caller's transaction.

    Appends are serialized across replicas with an advisory lock held until
    the caller commits, so the chain never forks.
    """
    advisory_lock(session, locks.AUDIT)
    last = session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).first()
    when = at.astimezone(UTC).isoformat(timespec="microseconds")
    entry = chain_next(_to_entry(last) if last else None, when, actor, kind, payload)
    session.add(
        AuditRecord(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            kind=entry.kind,
            payload_json=entry.payload_json,
            prev_hash=entry.prev_hash,
            hash=entry.hash,
        )
    )
    session.flush()
    return entry


def iter_audit(session: Session, after_seq: int = 0, limit: int | None = None) -> Iterator[ChainedEntry]:
    stmt = select(AuditRecord).where(AuditRecord.seq > after_seq).order_by(AuditRecord.seq)
    if limit:
        stmt = stmt.limit(limit)
    for r in session.scalars(stmt):
        yield _to_entry(r)


def verify_audit(session: Session) -> ChainVerdict:
    """Check the whole chain; the verdict names the first broken entry."""
    return verify_chain(iter_audit(session))
