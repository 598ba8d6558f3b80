"""The cohort roster: each tenant's long-term X25519 masking key, signed with its enrolled identity.

A tenant registers its masking key with an ECDSA-SHA256 signature made by the
key of its client certificate over the canonical statement
``ROSTER_DOMAIN || RosterStatement(cohort, tenant_id, public_key)``
(deterministic protobuf encoding, ``proto/fedsignal/v1/secagg.proto``). The
server checks that signature against the caller's certificate before storing
the entry, keeps the certificate beside it, and appends every change to the
audit log (``secagg.roster.registered`` / ``secagg.roster.replaced``), so the
party that runs enrollment cannot add a member to a roster without leaving a
trace. Tenants verify every entry themselves (``tenant_agent.secagg``); the
server's check only keeps garbage out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fedsignal.v1 import secagg_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.errors import FedsignalError, InvalidRequest, PermissionDenied
from server.audit import append_audit
from server.identity.models import TenantRecord
from server.secagg.models import RosterRecord

#: Domain tag of a roster signature (the tenant side uses the same bytes).
ROSTER_DOMAIN = b"fedsignal/secagg/v1/roster-entry\n"
#: Domain tag of a survivor-set attestation signature.
ATTESTATION_DOMAIN = b"fedsignal/secagg/v1/attestation\n"
PUBLIC_KEY_BYTES = 32
MAX_SIGNATURE_BYTES = 200


class RosterError(FedsignalError):
    """A masking key registration the server refuses."""


class BadRosterSignature(RosterError, PermissionDenied):
    """The signature does not verify with the caller's certificate key."""


class MalformedRosterEntry(RosterError, InvalidRequest):
    """A public key or signature of the wrong size or shape."""


def statement(cohort: str, tenant_id: str, public_key: bytes) -> bytes:
    """The exact bytes a roster signature covers."""
    msg = secagg_pb2.RosterStatement(cohort=cohort, tenant_id=tenant_id, public_key=public_key)
    return ROSTER_DOMAIN + msg.SerializeToString(deterministic=True)


@lru_cache(maxsize=4096)
def _public_key(certificate_pem: bytes) -> ec.EllipticCurvePublicKey | None:
    """The certificate's EC public key (parsed once per certificate); None for another key type."""
    key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verify_ecdsa(certificate_pem: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is an ECDSA-SHA256 signature of ``message`` by the certificate's P-256 key."""
    try:
        key = _public_key(certificate_pem)
        if key is None:
            return False
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class RegisterOutcome:
    outcome: str  # "registered", "unchanged", "replaced"


def register(
    session: Session, tenant_id: str, cohort: str, public_key: bytes, signature: bytes, certificate_pem: bytes,
    now: datetime,
) -> RegisterOutcome:
    """Store (or replace) ``tenant_id``'s masking key after checking its signature; audited."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise MalformedRosterEntry(f"a masking key is {PUBLIC_KEY_BYTES} raw X25519 bytes, got {len(public_key)}")
    if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise MalformedRosterEntry(f"signature of {len(signature)} bytes; expected a DER ECDSA signature")
    if not verify_ecdsa(certificate_pem, statement(cohort, tenant_id, public_key), signature):
        raise BadRosterSignature(
            f"the roster signature of {tenant_id!r} does not verify with its client certificate's key"
        )
    row = session.get(RosterRecord, tenant_id, with_for_update=True)
    fingerprint = hashlib.sha256(public_key).hexdigest()
    if row is not None and row.public_key == public_key and row.cohort == cohort:
        if row.certificate_pem != certificate_pem or row.signature != signature:
            row.certificate_pem, row.signature = certificate_pem, signature
        return RegisterOutcome("unchanged")
    kind = "secagg.roster.registered" if row is None else "secagg.roster.replaced"
    if row is None:
        session.add(RosterRecord(tenant_id=tenant_id, cohort=cohort, public_key=public_key, signature=signature,
                                 certificate_pem=certificate_pem, registered_at=now))
    else:
        row.cohort, row.public_key, row.signature = cohort, public_key, signature
        row.certificate_pem, row.registered_at = certificate_pem, now
    cert = x509.load_pem_x509_certificate(certificate_pem)
    append_audit(session, f"tenant:{tenant_id}", kind, {
        "tenant_id": tenant_id, "cohort": cohort, "public_key_sha256": fingerprint,
        "certificate_serial": format(cert.serial_number, "x"),
    }, at=now)
    session.flush()
    return RegisterOutcome("registered" if row is None else "replaced")


def active_entries(session: Session, cohort: str) -> list[RosterRecord]:
    """The roster of ``cohort``: entries of tenants that are not revoked, sorted by tenant id."""
    stmt = (
        select(RosterRecord)
        .join(TenantRecord, TenantRecord.tenant_id == RosterRecord.tenant_id)
        .where(RosterRecord.cohort == cohort, TenantRecord.revoked_at.is_(None), TenantRecord.cohort == cohort)
        .order_by(RosterRecord.tenant_id)
    )
    return list(session.scalars(stmt))


def to_proto(row: RosterRecord) -> secagg_pb2.RosterEntry:
    return secagg_pb2.RosterEntry(tenant_id=row.tenant_id, public_key=row.public_key, signature=row.signature,
                                  certificate_pem=row.certificate_pem)
