"""Enrollment: one-time tokens for client certificates, over real TLS."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from fedsignal.v1 import enrollment_pb2, enrollment_pb2_grpc
from sqlalchemy import func, select

from aggregation.schema import SignalSchema
from server.audit import iter_audit, verify_audit
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import generate_key, make_csr, parse_client_certificate
from server.identity.models import CertificateRecord, EnrollmentTokenRecord
from tests.harness import Harness


def _enroll_raw(h: Harness, token: str, csr: bytes | None = None) -> enrollment_pb2.EnrollResponse:
    with h.enroll_channel() as ch:
        return enrollment_pb2_grpc.EnrollmentServiceStub(ch).Enroll(
            enrollment_pb2.EnrollRequest(token=token, csr_pem=csr or make_csr(generate_key(), "anyone")), timeout=10
        )


def _cert_count(h: Harness, tenant: str) -> int:
    with h.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(CertificateRecord).where(
            CertificateRecord.subject == tenant)) or 0)


def test_enrollment_issues_a_certificate_bound_to_tenant_and_cohort(harness: Harness) -> None:
    token = harness.token("acme", "retail")
    creds, resp = harness.enroll(token, name="evil-requested-name")

    assert (resp.tenant_id, resp.cohort) == ("acme", "retail")
    assert resp.ca_certificate_pem == harness.ca.certificate_pem
    assert resp.trust_root.startswith(b"{")
    schema = SignalSchema.from_proto(resp.signal_schema)
    assert schema.cohort == "retail" and schema.size > 0
    claims = parse_client_certificate(resp.client_certificate_pem)
    assert (claims.subject, claims.role, claims.cohort) == ("acme", "tenant", "retail")
    cert = x509.load_pem_x509_certificate(resp.client_certificate_pem)
    assert cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=91)
    # The CSR's requested name is ignored; the identity is what the CA bound.
    assert harness.whoami(creds) == "acme/retail"
    with harness.ctx.sessions() as s:
        assert identity.cohort_tenants(s, "retail") == ["acme"]
        row = s.get(CertificateRecord, claims.serial)
        assert row is not None and row.subject == "acme" and row.cohort == "retail"
        kinds = [e.kind for e in iter_audit(s)]
        assert "enrollment_token.created" in kinds and "tenant.enrolled" in kinds
        assert verify_audit(s).ok
        # Only the token's hash is stored.
        assert s.scalar(select(func.count()).select_from(EnrollmentTokenRecord).where(
            EnrollmentTokenRecord.token_hash == token)) == 0


def test_unknown_token_is_unauthenticated(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _enroll_raw(harness, "fst_not-a-real-token")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_expired_token_is_refused_and_stays_unused(harness: Harness) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    with transaction(harness.ctx.sessions) as s:
        token, _ = identity.create_enrollment_token(s, "late", "retail", timedelta(hours=1), "test", past)
    with pytest.raises(grpc.RpcError) as err:
        _enroll_raw(harness, token)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (err.value.details() or "")
    assert _cert_count(harness, "late") == 0
    with harness.ctx.sessions() as s:
        assert s.get(EnrollmentTokenRecord, identity.token_hash(token)).used_at is None  # type: ignore[union-attr]


def test_reused_token_is_refused(harness: Harness) -> None:
    token = harness.token("acme")
    harness.enroll(token)
    with pytest.raises(grpc.RpcError) as err:
        _enroll_raw(harness, token)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _cert_count(harness, "acme") == 1


def test_concurrent_enrollments_with_one_token_exactly_one_wins(harness: Harness) -> None:
    token = harness.token("racer")
    barrier = threading.Barrier(4)
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            _enroll_raw(harness, token)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(c.name for c in codes) == ["ALREADY_EXISTS"] * 3 + ["OK"]
    assert _cert_count(harness, "racer") == 1


def test_bad_csr_is_invalid_argument_and_leaves_token_usable(harness: Harness) -> None:
    token = harness.token("acme")
    with pytest.raises(grpc.RpcError) as err:
        _enroll_raw(harness, token, csr=b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    creds, _ = harness.enroll(token)
    assert harness.whoami(creds) == "acme/retail"


def test_token_for_revoked_tenant_cannot_be_created_or_redeemed(harness: Harness) -> None:
    from fedsignal.v1 import admin_pb2

    token = harness.token("gone")
    harness.admin_stub().RevokeTenant(admin_pb2.RevokeTenantRequest(tenant_id="gone", reason="left"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        _enroll_raw(harness, token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        harness.token("gone")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_concurrent_tokens_for_a_new_tenant_all_succeed(harness: Harness) -> None:
    barrier = threading.Barrier(4)
    tokens: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        token = harness.token("newco")
        with lock:
            tokens.append(token)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(tokens)) == 4
