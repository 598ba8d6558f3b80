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


def _advisory_waiters(conn, key: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(granted, waiting) holders of the bigint advisory lock ``key`` in this database."""
    from sqlalchemy import text as sql

    unsigned = key & 0xFFFFFFFFFFFFFFFF
    rows = conn.execute(sql(
        "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND classid = :hi AND objid = :lo"), {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).all()
    return sum(1 for r in rows if r[0]), sum(1 for r in rows if not r[0])


def _advisory_pids(conn, key: int, *, granted: bool) -> set[int]:  # type: ignore[no-untyped-def]
    """The backends holding (``granted``) or waiting for the advisory lock ``key``. Advisory keys are
    per database, not per schema: another test worker's schema in the same database may hold one too."""
    from sqlalchemy import text as sql

    unsigned = key & 0xFFFFFFFFFFFFFFFF
    rows = conn.execute(sql(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND classid = :hi AND objid = :lo AND granted = :granted"),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF, "granted": granted}).all()
    return {r[0] for r in rows}


def test_enrollment_into_a_new_cohort_takes_the_schema_lock_before_the_audit_lock(
        postgres_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The lock order of server.db.locks: a new cohort's first schema version is created under the
    cohort's schema lock, and enrollment takes it *before* the audit lock. Taken the other way round,
    an enrollment holding the audit lock while it waits for the schema lock deadlocks against a
    rollout start (schema lock, then audit lock) in the same cohort. Here another transaction holds the
    schema lock: the enrollment must wait for it without holding the audit lock, then complete."""
    import time

    from sqlalchemy import create_engine
    from sqlalchemy import text as sql

    from server.db import locks
    from tests.harness import running_harness

    with running_harness(postgres_url, tmp_path / "state") as h:
        now = h.ctx.clock()
        with transaction(h.ctx.sessions) as session:
            token, _ = identity.create_enrollment_token(session, "orderly", "fresh-cohort", timedelta(hours=1),
                                                        "test", now)
        engine = create_engine(postgres_url)
        try:
            with engine.connect() as holder, engine.connect() as observer:
                holder.execute(sql("SELECT pg_advisory_xact_lock(:k)"), {"k": locks.schema("fresh-cohort")})
                result: dict[str, object] = {}
                thread = threading.Thread(target=lambda: result.update(resp=_enroll_raw(h, token)))
                thread.start()
                deadline = time.monotonic() + 20
                while _advisory_waiters(observer, locks.schema("fresh-cohort"))[1] == 0:
                    assert time.monotonic() < deadline, "the enrollment never waited for the cohort's schema lock"
                    assert thread.is_alive(), "the enrollment finished while the schema lock was held"
                    time.sleep(0.02)
                    observer.rollback()
                # Waiting for the schema lock, the enrollment holds no audit lock.
                waiting = _advisory_pids(observer, locks.schema("fresh-cohort"), granted=False)
                assert waiting and not waiting & _advisory_pids(observer, locks.AUDIT, granted=True)
                holder.rollback()  # releases the schema lock
                thread.join(20)
                assert not thread.is_alive()
        finally:
            engine.dispose()
        resp = result["resp"]
        assert isinstance(resp, enrollment_pb2.EnrollResponse)
        assert resp.tenant_id == "orderly" and resp.cohort == "fresh-cohort"
        assert SignalSchema.from_proto(resp.signal_schema).version == 1
