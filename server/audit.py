"""Append to and verify the server's hash-chained audit log, and checkpoint its signed head.

A signed head (:class:`aggregation.audit.SignedHead`) is the chain's tail (sequence and
hash) signed with the server's online key (``ctx.online_signer``, kept in the state
directory, never in the database). Heads are stored in ``audit_heads``; one is
checkpointed periodically (:func:`run_audit_checkpoint`) and on every verification,
so a truncated or rewritten tail no longer verifies (:func:`verify_audit`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import Signer
from sqlalchemy import BigInteger, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from aggregation.audit import (
    ChainedEntry,
    ChainVerdict,
    SignedHead,
    chain_next,
    head_payload,
    verify_chain,
    verify_chain_against_heads,
)
from server.context import ServerContext
from server.db import Base, advisory_lock, locks, transaction


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


class AuditHeadRecord(Base):
    """One signed checkpoint of the chain's tail (see :class:`aggregation.audit.SignedHead`)."""

    __tablename__ = "audit_heads"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    keyid: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str] = mapped_column(String(256))


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


def public_key_of(signer: Signer) -> Ed25519PublicKey:
    """The Ed25519 public key a head signed by ``signer`` verifies with."""
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer.public_key.keyval["public"]))


def _to_head(r: AuditHeadRecord) -> SignedHead:
    return SignedHead(r.seq, r.hash, r.at, r.keyid, r.signature)


def latest_head(session: Session) -> SignedHead | None:
    """The newest stored signed head (None before the first checkpoint)."""
    rec = session.scalars(select(AuditHeadRecord).order_by(AuditHeadRecord.seq.desc()).limit(1)).first()
    return _to_head(rec) if rec is not None else None


def signed_heads(session: Session) -> list[SignedHead]:
    return [_to_head(r) for r in session.scalars(select(AuditHeadRecord).order_by(AuditHeadRecord.seq))]


def checkpoint_head(session: Session, signer: Signer, *, at: datetime) -> SignedHead | None:
    """Sign and store the chain's current tail, inside the caller's transaction.

    Taken under the audit lock, so the tail cannot move while it is read. Returns the
    stored head of that tail (the existing one when the tail was signed before), or
    None for an empty chain.
    """
    advisory_lock(session, locks.AUDIT)
    last = session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).first()
    if last is None:
        return None
    existing = session.get(AuditHeadRecord, last.seq)
    if existing is not None:
        # Signed before; when its hash differs the tail was rewritten under it: keep the
        # old head (it is the evidence) and never sign the rewritten tail.
        return _to_head(existing)
    when = at.astimezone(UTC).isoformat(timespec="microseconds")
    signature = signer.sign(head_payload(last.seq, last.hash, when))
    head = SignedHead(last.seq, last.hash, when, signature.keyid, signature.signature)
    session.add(AuditHeadRecord(seq=head.seq, hash=head.hash, at=head.at, keyid=head.keyid, signature=head.signature))
    session.flush()
    return head


@dataclass(frozen=True)
class AuditCheck:
    """A verification of the whole chain against the signed heads; ``head`` is the newest checkpoint."""

    verdict: ChainVerdict
    head: SignedHead | None
    heads_checked: int


def verify_audit(session: Session, signer: Signer | None = None, *, at: datetime | None = None) -> ChainVerdict:
    """Check the whole chain; the verdict names the first broken entry.

    With ``signer`` (the server's online key) every stored signed head is checked too,
    so a truncated or rewritten tail is refused; a new head is checkpointed first when
    ``at`` is given (and the chain still agrees with the stored heads).
    """
    if signer is None:
        return verify_chain(iter_audit(session))
    return verify_and_checkpoint(session, signer, at=at).verdict


def verify_and_checkpoint(session: Session, signer: Signer, *, at: datetime | None) -> AuditCheck:
    """:func:`verify_audit` with the heads; checkpoints the tail when it verified and ``at`` is given."""
    heads = signed_heads(session)
    verdict = verify_chain_against_heads(iter_audit(session), heads, public_key_of(signer))
    head = heads[-1] if heads else None
    if verdict.ok and at is not None:
        head = checkpoint_head(session, signer, at=at) or head
    return AuditCheck(verdict, head, len(heads))


def checkpoint_due(session: Session, now: datetime, interval: timedelta) -> bool:
    """Whether the newest head is older than ``interval`` and the chain grew since."""
    head = latest_head(session)
    last_seq = session.scalar(select(AuditRecord.seq).order_by(AuditRecord.seq.desc()).limit(1))
    if last_seq is None:
        return False
    if head is None:
        return True
    return last_seq > head.seq and datetime.fromisoformat(head.at) <= now - interval


def run_audit_checkpoint(ctx: ServerContext) -> None:
    """Periodic job: sign the chain's tail when the newest head is older than the configured interval."""
    now = ctx.clock()
    interval = timedelta(seconds=ctx.settings.audit_head_interval_seconds)
    with transaction(ctx.sessions) as session:
        if checkpoint_due(session, now, interval):
            checkpoint_head(session, ctx.online_signer, at=now)
