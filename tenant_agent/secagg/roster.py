"""Roster checks: every masking key signed by a tenant certificate of the pinned CA, for this cohort.

Also the verification of survivors' attestations, against the same certificates.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fedsignal.v1 import secagg_pb2

from aggregation.clock import Clock, utc
from aggregation.secagg import (
    RosterEntry,
    SecAggError,
)
from tenant_agent.secagg.errors import RosterRejected

ROSTER_DOMAIN = b"fedsignal/secagg/v1/roster-entry\n"
ATTESTATION_DOMAIN = b"fedsignal/secagg/v1/attestation\n"


def roster_statement(cohort: str, tenant_id: str, public_key: bytes) -> bytes:
    msg = secagg_pb2.RosterStatement(cohort=cohort, tenant_id=tenant_id, public_key=public_key)
    return ROSTER_DOMAIN + msg.SerializeToString(deterministic=True)


def _ecdsa_verify(cert: x509.Certificate | ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    key = cert if isinstance(cert, ec.EllipticCurvePublicKey) else cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def _cert_identity(cert: x509.Certificate) -> tuple[str, str]:
    """(tenant id, cohort) a tenant certificate of our CA binds (CN and fedsignal:// URI must agree)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("fedsignal://")]
    except x509.ExtensionNotFound:
        uris = []
    if not cns or len(uris) != 1:
        raise RosterRejected("roster certificate lacks its fedsignal identity")
    parts = urlsplit(uris[0])
    subject = unquote(parts.path.lstrip("/"))
    if parts.netloc != "tenant" or subject != str(cns[0].value):
        raise RosterRejected("roster certificate is not a tenant certificate")
    return subject, parse_qs(parts.query).get("cohort", [""])[0]


class RosterVerifier:
    """Checks roster entries against the CA this tenant pinned at enrollment."""

    def __init__(self, ca_pem: bytes, cohort: str, clock: Clock) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._cohort = cohort
        self._clock = clock
        self._certs: dict[str, x509.Certificate] = {}
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        # (tenant id, public key) of every entry verified so far: the roster is long-term, so a
        # collector verifies each entry once and a round's context is checked against this set.
        self._verified: dict[str, bytes] = {}
        self._seen: set[bytes] = set()

    def knows(self, entry: RosterEntry) -> bool:
        return self._verified.get(entry.tenant_id) == entry.public_key

    def verify(self, entry: secagg_pb2.RosterEntry) -> RosterEntry:
        """The kernel's roster entry, or ``RosterRejected`` naming what failed."""
        tid = entry.tenant_id
        fingerprint = hashlib.sha256(entry.SerializeToString(deterministic=True)).digest()
        if fingerprint in self._seen:
            return RosterEntry(tid, bytes(entry.public_key))
        try:
            cert = x509.load_pem_x509_certificate(bytes(entry.certificate_pem))
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise RosterRejected(f"roster entry of {tid!r}: certificate not issued by the pinned CA ({exc})") from None
        now = utc(self._clock())
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise RosterRejected(f"roster entry of {tid!r}: certificate not valid now")
        subject, cohort = _cert_identity(cert)
        if subject != tid or cohort != self._cohort:
            raise RosterRejected(f"roster entry of {tid!r}: certificate names {subject!r} of cohort {cohort!r}")
        if not _ecdsa_verify(cert, roster_statement(self._cohort, tid, bytes(entry.public_key)),
                             bytes(entry.signature)):
            raise RosterRejected(f"roster entry of {tid!r}: signature does not verify with its certificate")
        try:
            verified = RosterEntry(tid, bytes(entry.public_key))
        except SecAggError as exc:
            raise RosterRejected(f"roster entry of {tid!r}: {exc}") from None
        self._certs[tid] = cert
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):  # parsed once: every round verifies t attestations
            self._keys[tid] = key
        self._verified[tid] = verified.public_key
        self._seen.add(fingerprint)
        return verified

    def verify_attestation(self, tenant_id: str, digest: bytes, signature: bytes) -> bool:
        key = self._keys.get(tenant_id)
        return key is not None and _ecdsa_verify(key, ATTESTATION_DOMAIN + digest, signature)
