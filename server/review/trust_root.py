"""Trust root storage and rotation on the server, and the server's online signing key.

The server never holds reviewers' private keys: roots arrive already signed
(``fedsignal admin root init|rotate`` signs them on reviewers' machines).
It holds one online Ed25519 key (``<state_dir>/bundle-keys/online_ed25519.pem``)
that the root lists for the freshness roles (snapshot/timestamp); with it the
server signs per-cohort metadata, never approvals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aggregation.errors import FedsignalError, InvalidRequest, PreconditionFailed
from aggregation.trust_root import TrustRoot, load_trusted_root, to_json_bytes, verify_rotation
from aggregation.trust_root_build import build_root, default_root_threshold, public_key_json
from server.audit import append_audit
from server.context import load_online_signer
from server.db import advisory_lock, locks
from server.review.models import TrustRootRecord


class TrustRootMissing(PreconditionFailed):
    """No trust root installed yet: run `fedsignal admin root init` first."""


class TrustRootRejected(InvalidRequest):
    """A submitted root that does not verify (message says why)."""


def _now_text(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


def online_signer(state_dir: Path) -> CryptoSigner:
    """The server's online key (see :func:`server.context.load_online_signer`; a context holds it as
    ``ctx.online_signer``)."""
    return load_online_signer(state_dir)


def server_public_key(state_dir: Path) -> SSlibKey:
    key = online_signer(state_dir).public_key
    if not isinstance(key, SSlibKey):
        raise FedsignalError(f"the online key in {state_dir} is not a key securesystemslib can list in a root")
    return key


def _latest(session: Session) -> TrustRootRecord | None:
    return session.scalars(select(TrustRootRecord).order_by(TrustRootRecord.version.desc()).limit(1)).first()


def current_root_bytes(session: Session) -> bytes:
    """The newest signed trust root (what tenants pin at enrollment)."""
    rec = _latest(session)
    if rec is None:
        raise TrustRootMissing("no trust root is installed; reviewers run `fedsignal admin root init` first")
    return rec.root_json.encode("utf-8")


@lru_cache(maxsize=16)
def _verified(data: bytes) -> TrustRoot:
    # Stored roots were verified on install; the cache keeps steady-state pulls from re-verifying.
    return load_trusted_root(data)


def current_root(session: Session) -> TrustRoot:
    return _verified(current_root_bytes(session))


def current_root_version(session: Session) -> int:
    """0 when no root is installed."""
    return int(session.scalar(select(func.max(TrustRootRecord.version))) or 0)


def root_bytes(session: Session, version: int) -> bytes | None:
    rec = session.get(TrustRootRecord, version)
    return rec.root_json.encode("utf-8") if rec else None


def root_chain(session: Session, after_version: int) -> list[bytes]:
    """Every root version after ``after_version``, oldest first (for tenants to follow rotations)."""
    rows = session.scalars(
        select(TrustRootRecord).where(TrustRootRecord.version > after_version).order_by(TrustRootRecord.version)
    )
    return [r.root_json.encode("utf-8") for r in rows]


def draft_root_info(state_dir: Path) -> dict[str, Any]:
    """What `admin root init` needs from the server before any root exists: its online public key."""
    return {"draft": True, "server_key": public_key_json(server_public_key(state_dir))}


def install_root(session: Session, data: bytes, *, actor: str, now: datetime, state_dir: Path) -> TrustRoot:
    """Install version 1 (self-signed threshold) or version N+1 (threshold of N and of itself)."""
    # The audit lock first, always: every writer here appends audit entries, and one global
    # order (audit, then ours) keeps concurrent transactions from deadlocking.
    advisory_lock(session, locks.AUDIT)
    advisory_lock(session, locks.TRUST_ROOT)
    latest = _latest(session)
    try:
        if latest is None:
            trusted = load_trusted_root(data)
            if trusted.version != 1:
                raise TrustRootRejected(f"the first trust root must be version 1, got v{trusted.version}")
        else:
            trusted = verify_rotation(load_trusted_root(latest.root_json.encode("utf-8")), data)
    except FedsignalError as exc:
        if isinstance(exc, TrustRootRejected):
            raise
        raise TrustRootRejected(str(exc)) from exc
    server_keyid = server_public_key(state_dir).keyid
    if server_keyid not in trusted.server_keyids:
        raise TrustRootRejected(
            f"trust root v{trusted.version} does not list this server's online key {server_keyid} for the "
            "snapshot role; the server could not sign cohort metadata"
        )
    stored = to_json_bytes(trusted.metadata).decode("utf-8")
    session.add(TrustRootRecord(version=trusted.version, root_json=stored, installed_at=_now_text(now)))
    root = trusted.root
    append_audit(
        session,
        actor,
        "trust_root.installed" if latest is None else "trust_root.rotated",
        {
            "version": trusted.version,
            "root_keyids": sorted(root.roles["root"].keyids),
            "root_threshold": root.roles["root"].threshold,
            "risk_thresholds": {c.removeprefix("risk-"): r.threshold for c, r in (trusted.risk_roles.roles or {}).items()},
            "server_keyids": sorted(trusted.server_keyids),
            "signed_by": sorted(trusted.metadata.signatures),
        },
        at=now,
    )
    session.flush()
    return trusted


def bootstrap_root(
    session: Session,
    *,
    state_dir: Path,
    reviewers: Sequence[Signer],
    now: datetime,
    root_threshold: int | None = None,
    thresholds: Mapping[str, int] | None = None,
    actor: str = "bootstrap",
) -> TrustRoot:
    """Build, sign and install root v1 in one process (demo and tests hold the reviewer keys there).

    ``root_threshold`` defaults to the highest class threshold (the least a root may have).
    """
    if root_threshold is None:
        root_threshold = default_root_threshold(thresholds)
    md = build_root(
        [s.public_key for s in reviewers],
        server_public_key(state_dir),
        now=now,
        root_threshold=root_threshold,
        thresholds=thresholds,
    )
    for s in reviewers[:root_threshold]:
        md.sign(s, append=True)
    return install_root(session, to_json_bytes(md), actor=actor, now=now, state_dir=state_dir)
