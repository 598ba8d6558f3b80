"""Tenants, certificates, enrollment tokens and revocations.

Functions here run inside the caller's transaction (``server.db.transaction``)
and append an audit event for every enrollment, token and revocation. Tokens
are stored only as their SHA-256; redeeming one is a conditional UPDATE, so of
several concurrent redemptions exactly one wins.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from aggregation.errors import (
    AlreadyExists,
    FedsignalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Unauthenticated,
)
from server.audit import append_audit
from server.db import advisory_lock, locks
from server.identity.models import CertificateRecord, EnrollmentTokenRecord, TenantRecord

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TOKEN_TTL = timedelta(days=30)


class IdentityError(FedsignalError):
    """Base of the enrollment and revocation errors."""


class InvalidIdentityRequest(InvalidRequest, IdentityError):
    """A token lifetime or certificate serial that cannot be acted on."""


class InvalidName(InvalidRequest, IdentityError):
    """A tenant id or cohort name is not acceptable."""


class UnknownToken(Unauthenticated, IdentityError):
    """No such enrollment token."""


class ExpiredToken(PreconditionFailed, IdentityError):
    """The enrollment token's lifetime is over."""


class TokenAlreadyUsed(AlreadyExists, IdentityError):
    """The enrollment token was redeemed before; tokens are single use."""


class TenantRevoked(PermissionDenied, IdentityError):
    """The tenant was revoked: its tokens are void, it may not enroll or act."""


class RevokedTenantId(PreconditionFailed, IdentityError):
    """A revoked tenant's id cannot be given new tokens or enrolled again."""


class UnknownTenant(NotFound, IdentityError):
    """No tenant of that id."""


class CohortMismatch(PreconditionFailed, IdentityError):
    """The tenant already belongs to another cohort."""


@dataclass(frozen=True)
class TokenGrant:
    """What a redeemed token entitles its holder to."""

    tenant_id: str
    cohort: str


def aware(value: datetime) -> datetime:
    """A UTC-aware datetime (SQLite hands back naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value or ""):
        raise InvalidName(
            f"{kind} {value!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def ensure_tenant(session: Session, tenant_id: str, cohort: str, now: datetime) -> TenantRecord:
    """The tenant record, created on first use; refuses a revoked tenant or a cohort change."""
    check_name("tenant id", tenant_id)
    check_name("cohort", cohort)
    # Two replicas creating the same new tenant at once: the second waits and sees the first's row.
    advisory_lock(session, locks.tenant(tenant_id))
    tenant = session.get(TenantRecord, tenant_id)
    if tenant is None:
        tenant = TenantRecord(tenant_id=tenant_id, cohort=cohort, created_at=now)
        session.add(tenant)
        session.flush()
        return tenant
    if tenant.revoked_at is not None:
        raise RevokedTenantId(f"tenant {tenant_id!r} was revoked; it cannot be enrolled again under that id")
    if tenant.cohort != cohort:
        raise CohortMismatch(f"tenant {tenant_id!r} belongs to cohort {tenant.cohort!r}, not {cohort!r}")
    return tenant


def create_enrollment_token(session: Session, tenant_id: str, cohort: str, ttl: timedelta, actor: str,
                            now: datetime) -> tuple[str, datetime]:
    """A new one-time token for ``tenant_id`` in ``cohort``; returns (token, expires_at).

    The token itself is returned once and never stored or logged.
    """
    if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise InvalidIdentityRequest(f"token lifetime must be between 1 second and {MAX_TOKEN_TTL.days} days")
    ensure_tenant(session, tenant_id, cohort, now)
    token = "fst_" + secrets.token_urlsafe(32)
    expires_at = now + ttl
    session.add(
        EnrollmentTokenRecord(
            token_hash=token_hash(token), tenant_id=tenant_id, cohort=cohort, created_by=actor,
            created_at=now, expires_at=expires_at,
        )
    )
    append_audit(session, actor, "enrollment_token.created",
                 {"tenant_id": tenant_id, "cohort": cohort, "expires_at": expires_at.isoformat()}, at=now)
    return token, expires_at


def redeem_token(session: Session, token: str, now: datetime) -> TokenGrant:
    """Consume ``token`` (single use). Raises Unknown/Expired/TokenAlreadyUsed/TenantRevoked."""
    digest = token_hash(token)
    record = session.get(EnrollmentTokenRecord, digest)
    if record is None:
        raise UnknownToken("unknown enrollment token: check it was copied whole, or ask an operator for a new one")
    if record.used_at is not None:
        raise TokenAlreadyUsed("this enrollment token was already used; ask an operator for a new one")
    if aware(record.expires_at) <= now:
        raise ExpiredToken(
            f"this enrollment token expired at {aware(record.expires_at).isoformat()}; ask an operator for a new one"
        )
    tenant = session.get(TenantRecord, record.tenant_id)
    if tenant is None or tenant.revoked_at is not None:
        raise TenantRevoked(f"tenant {record.tenant_id!r} was revoked; its tokens are void")
    # The conditional UPDATE is the single-use guarantee: concurrent redemptions
    # serialize on the row and all but one see used_at already set.
    result = session.execute(
        update(EnrollmentTokenRecord)
        .where(EnrollmentTokenRecord.token_hash == digest, EnrollmentTokenRecord.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise TokenAlreadyUsed("this enrollment token was already used; ask an operator for a new one")
    return TokenGrant(tenant_id=record.tenant_id, cohort=record.cohort)


def record_certificate(session: Session, serial: str, subject: str, role: str, cohort: str | None,
                       not_after: datetime, now: datetime) -> CertificateRecord:
    cert = CertificateRecord(serial=serial, subject=subject, role=role, cohort=cohort, issued_at=now,
                             not_after=not_after)
    session.add(cert)
    session.flush()
    return cert


def complete_enrollment(session: Session, grant: TokenGrant, token: str, serial: str, not_after: datetime,
                        now: datetime) -> None:
    """Record the tenant's new certificate and the enrollment (audited)."""
    record_certificate(session, serial, grant.tenant_id, "tenant", grant.cohort, not_after, now)
    session.execute(
        update(EnrollmentTokenRecord).where(EnrollmentTokenRecord.token_hash == token_hash(token))
        .values(used_by_serial=serial).execution_options(synchronize_session=False)
    )
    tenant = session.get(TenantRecord, grant.tenant_id)
    if tenant is not None:
        tenant.enrolled_at = now
    append_audit(session, f"tenant:{grant.tenant_id}", "tenant.enrolled",
                 {"tenant_id": grant.tenant_id, "cohort": grant.cohort, "serial": serial,
                  "not_after": aware(not_after).isoformat()}, at=now)


def record_admin_certificate(session: Session, name: str, serial: str, not_after: datetime, actor: str,
                             now: datetime) -> None:
    check_name("admin name", name)
    record_certificate(session, serial, name, "admin", None, not_after, now)
    append_audit(session, actor, "admin_certificate.issued",
                 {"admin": name, "serial": serial, "not_after": aware(not_after).isoformat()}, at=now)


def revoke_tenant(session: Session, tenant_id: str, reason: str, actor: str, now: datetime) -> int:
    """Revoke the tenant and every certificate it holds; returns how many certificates were revoked."""
    tenant = session.get(TenantRecord, tenant_id)
    if tenant is None:
        raise UnknownTenant(f"no tenant {tenant_id!r}")
    if tenant.revoked_at is None:
        tenant.revoked_at = now
        tenant.revocation_reason = reason[:500]
    certs = session.scalars(
        select(CertificateRecord).where(
            CertificateRecord.subject == tenant_id, CertificateRecord.role == "tenant",
            CertificateRecord.revoked_at.is_(None),
        )
    ).all()
    for cert in certs:
        cert.revoked_at = now
        cert.revocation_reason = reason[:500]
    append_audit(session, actor, "tenant.revoked",
                 {"tenant_id": tenant_id, "reason": reason, "certificates": sorted(c.serial for c in certs)}, at=now)
    return len(certs)


def revoke_certificate(session: Session, serial: str, reason: str, actor: str, now: datetime) -> bool:
    """Revoke one certificate (e.g. an admin's); False when it was already revoked."""
    cert = session.get(CertificateRecord, serial.lower())
    if cert is None:
        raise InvalidIdentityRequest(f"no certificate with serial {serial!r}")
    if cert.revoked_at is not None:
        return False
    cert.revoked_at = now
    cert.revocation_reason = reason[:500]
    append_audit(session, actor, "certificate.revoked",
                 {"serial": cert.serial, "subject": cert.subject, "role": cert.role, "reason": reason}, at=now)
    return True


_REFUSALS = (
    select(CertificateRecord.serial, CertificateRecord.revoked_at, CertificateRecord.not_after,
           CertificateRecord.role, CertificateRecord.subject, TenantRecord.revoked_at)
    .outerjoin(TenantRecord, TenantRecord.tenant_id == CertificateRecord.subject)
    .where(CertificateRecord.serial.in_(bindparam("serials", expanding=True)))
)


def certificate_refusal(session: Session, serial: str, now: datetime) -> str | None:
    """Why the certificate with ``serial`` may not be used now, or None when it may.

    One statement (certificate joined with its tenant): every call of every service asks this
    once per revocation-cache period per certificate (see :func:`certificate_refusals`).
    """
    return certificate_refusals(session, [serial], now)[serial]


def certificate_refusals(session: Session, serials: Sequence[str], now: datetime) -> dict[str, str | None]:
    """:func:`certificate_refusal` of each of ``serials``, in one statement."""
    found = {row[0]: row[1:] for row in session.execute(_REFUSALS, {"serials": list(serials)})}
    return {serial: _refusal_of(serial, found.get(serial), now) for serial in serials}


def _refusal_of(serial: str, found: Any, now: datetime) -> str | None:
    if found is None:
        return "client certificate is not known to this server"
    revoked_at, not_after, role, subject, tenant_revoked_at = found
    if revoked_at is not None:
        return f"client certificate {serial} was revoked"
    if aware(not_after) < now:
        return f"client certificate {serial} expired; enroll again"
    if role == "tenant" and tenant_revoked_at is not None:
        return _tenant_revoked(subject)
    return None


def tenant_refusal(session: Session, tenant_id: str) -> str | None:
    tenant = session.get(TenantRecord, tenant_id)
    if tenant is not None and tenant.revoked_at is not None:
        return _tenant_revoked(tenant_id)
    return None


def _tenant_revoked(tenant_id: str) -> str:
    return f"tenant {tenant_id!r} was revoked"


def cohort_tenants(session: Session, cohort: str) -> list[str]:
    """Tenant ids of ``cohort`` that enrolled and are not revoked, sorted."""
    return list(
        session.scalars(
            select(TenantRecord.tenant_id)
            .where(TenantRecord.cohort == cohort, TenantRecord.enrolled_at.is_not(None),
                   TenantRecord.revoked_at.is_(None))
            .order_by(TenantRecord.tenant_id)
        )
    )
