"""Who may call what: identity from the verified certificate only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from fedsignal.v1 import admin_pb2, common_pb2, signals_pb2_grpc
from sqlalchemy import func, select

from aggregation.clock import FakeClock
from server.context import RevocationCache
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import CertificateAuthority
from server.identity.models import EnrollmentTokenRecord, TenantRecord
from tests.harness import Credentials, Harness


def _token_rows(h: Harness) -> int:
    with h.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(EnrollmentTokenRecord)) or 0)


def test_tenant_certificate_calling_admin_method_is_permission_denied(harness: Harness) -> None:
    tenant = harness.tenant("acme")
    before = _token_rows(harness)
    with pytest.raises(grpc.RpcError) as err:
        harness.admin_stub(tenant).CreateEnrollmentToken(
            admin_pb2.CreateEnrollmentTokenRequest(tenant_id="mallory", cohort="retail"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        harness.admin_stub(tenant).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _token_rows(harness) == before
    with harness.ctx.sessions() as s:
        assert s.get(TenantRecord, "mallory") is None


def test_admin_certificate_calling_tenant_method_is_permission_denied(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(harness.admin)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_call_without_client_certificate_is_unauthenticated(harness: Harness) -> None:
    # The enrollment port accepts TLS without a client certificate; nothing but Enroll works there.
    with harness.channel(None, port=harness.running.enrollment_port) as ch:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2.GetAuditLogResponse.FromString(
                ch.unary_unary("/fedsignal.v1.AdminService/GetAuditLog", None, None)(b"", timeout=10)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(None, port=harness.running.enrollment_port)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The mTLS port does not even complete a handshake without one.
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_of_another_ca_is_refused_at_tls(harness: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    key, issued = rogue.issue_key_and_cert("root-admin", None, "admin")
    with pytest.raises(grpc.RpcError) as err:
        harness.admin_stub(Credentials(key, issued.certificate_pem, "root-admin")).GetAuditLog(
            admin_pb2.GetAuditLogRequest(), timeout=10
        )
    # The handshake fails, so no request ever reaches a servicer.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_unknown_to_the_database_is_unauthenticated(harness: Harness) -> None:
    # Signed by our CA but never recorded (e.g. issued against a wiped database).
    key, issued = harness.ca.issue_key_and_cert("ghost", "retail", "tenant")
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(Credentials(key, issued.certificate_pem, "ghost"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_tenant_is_refused(harness: Harness) -> None:
    tenant = harness.tenant("acme")
    assert harness.whoami(tenant) == "acme/retail"
    resp = harness.admin_stub().RevokeTenant(
        admin_pb2.RevokeTenantRequest(tenant_id="acme", reason="contract ended"), timeout=10
    )
    assert resp.certificates_revoked == 1
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(tenant)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (err.value.details() or "")
    with harness.ctx.sessions() as s:
        assert identity.cohort_tenants(s, "retail") == []


def test_revocation_from_another_process_takes_effect_when_the_cached_verdict_expires(harness: Harness) -> None:
    clock = FakeClock(datetime.now(UTC))
    ttl = timedelta(seconds=harness.ctx.settings.revocation_cache_seconds)
    harness.ctx.revocations = RevocationCache(clock, ttl)  # the context's seam: a cache on a clock we move
    tenant = harness.tenant("acme")
    assert harness.whoami(tenant) == "acme/retail"
    # As `fedsignal server revoke` on another host would: straight to the database.
    with transaction(harness.ctx.sessions) as s:
        identity.revoke_tenant(s, "acme", "compromised", "operator:test", harness.ctx.clock())
    clock.advance(ttl / 2)
    assert harness.whoami(tenant) == "acme/retail"  # still the cached verdict: this replica has not asked yet
    clock.advance(ttl)
    with pytest.raises(grpc.RpcError) as err:
        harness.whoami(tenant)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_identity_comes_from_the_certificate_not_the_message(harness: Harness) -> None:
    acme = harness.tenant("acme", "retail")
    harness.tenant("globex", "retail")
    assert harness.whoami(acme, claimed="globex") == "acme/retail"
    report = common_pb2.DpReport(idempotency_key="k-1", tenant_id="globex", cohort="retail")
    with harness.channel(acme) as ch, pytest.raises(grpc.RpcError) as err:
        signals_pb2_grpc.SignalServiceStub(ch).SubmitReport(report, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_revoked_admin_certificate_is_refused(harness: Harness) -> None:
    key, issued = harness.ca.issue_key_and_cert("second", None, "admin")
    with transaction(harness.ctx.sessions) as s:
        identity.record_admin_certificate(s, "second", issued.serial, issued.not_after, "test", harness.ctx.clock())
    second = Credentials(key, issued.certificate_pem, "second")
    harness.admin_stub(second).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
    with transaction(harness.ctx.sessions) as s:
        assert identity.revoke_certificate(s, issued.serial, "lost laptop", "admin:root-admin", harness.ctx.clock())
    harness.ctx.revocations.clear()
    with pytest.raises(grpc.RpcError) as err:
        harness.admin_stub(second).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
