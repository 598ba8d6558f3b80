"""Operations: bad bytes, size limit, health, reflection, metrics, graceful shutdown, jobs."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import admin_pb2, enrollment_pb2, enrollment_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import func, select

from server.app import run_jobs_once
from server.audit import AuditRecord
from tests.harness import PROBE_SLOW, Harness, start_harness


def _audit_rows(h: Harness) -> int:
    with h.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AuditRecord)) or 0)


def _health(h: Harness, service: str = "") -> int:
    with h.channel(h.admin) as ch:
        return int(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=10).status)


def test_malformed_protobuf_bytes_are_refused_and_the_server_keeps_serving(harness: Harness) -> None:
    before = _audit_rows(harness)
    with harness.channel(harness.admin) as ch:
        raw = ch.unary_unary("/fedsignal.v1.AdminService/CreateEnrollmentToken", None, None)
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    assert _audit_rows(harness) == before
    assert _health(harness) == health_pb2.HealthCheckResponse.SERVING
    assert harness.token("acme").startswith("fst_")


def test_oversized_message_is_resource_exhausted(tmp_path: Path) -> None:
    h = start_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "state", max_message_bytes=32 * 1024)
    try:
        with h.enroll_channel() as ch, pytest.raises(grpc.RpcError) as err:
            enrollment_pb2_grpc.EnrollmentServiceStub(ch).Enroll(
                enrollment_pb2.EnrollRequest(token="t", csr_pem=b"x" * (64 * 1024)), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert h.token("acme").startswith("fst_")
    finally:
        h.running.stop(0)
        h.ctx.engine.dispose()


def test_health_reports_serving_for_the_server_and_its_services(harness: Harness) -> None:
    assert _health(harness) == health_pb2.HealthCheckResponse.SERVING
    assert _health(harness, "fedsignal.v1.AdminService") == health_pb2.HealthCheckResponse.SERVING
    # Probes without a client certificate use the enrollment port.
    with harness.enroll_channel() as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_registered_services(harness: Harness) -> None:
    with harness.channel(harness.admin) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"fedsignal.v1.EnrollmentService", "fedsignal.v1.AdminService", "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_exposes_request_and_report_counters(harness: Harness) -> None:
    tenant = harness.tenant("acme")
    harness.whoami(tenant)
    with pytest.raises(grpc.RpcError):
        harness.admin_stub(tenant).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
    url = f"http://127.0.0.1:{harness.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert 'fedsignal_requests_total{code="OK",method="/fedsignal.v1.EnrollmentService/Enroll"} 1.0' in text
    assert 'fedsignal_requests_total{code="PERMISSION_DENIED",method="/fedsignal.v1.AdminService/GetAuditLog"} 1.0' in text
    assert 'fedsignal_request_seconds_count{method="/fedsignal.v1.AdminService/CreateEnrollmentToken"} 1.0' in text
    assert 'fedsignal_reports_total{outcome="accepted",reason="accepted"} 1.0' in text
    assert "fedsignal_merge_lag_seconds" in text


def test_graceful_shutdown_lets_an_in_flight_call_finish(harness: Harness) -> None:
    result: dict[str, object] = {}
    ch = harness.channel(harness.admin)

    def call() -> None:
        try:
            result["value"] = ch.unary_unary(PROBE_SLOW, None, None)(b"", timeout=30)
        except grpc.RpcError as exc:
            result["error"] = exc.code()

    caller = threading.Thread(target=call)
    caller.start()
    assert harness.probe_started.wait(10)
    stopper = threading.Thread(target=harness.running.stop, args=(20,))
    stopper.start()
    # The server is draining: it no longer reports SERVING, yet the call is still running.
    assert not harness.running.wait(0.3)
    harness.probe_release.set()
    caller.join(20)
    stopper.join(20)
    ch.close()
    assert result == {"value": b"finished"}
    assert harness.running.wait(0)
    with harness.channel(harness.admin) as ch2, pytest.raises(grpc.RpcError) as err:
        ch2.unary_unary(PROBE_SLOW, None, None)(b"", timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_run_jobs_once_isolates_a_failing_job(harness: Harness) -> None:
    seen: list[str] = []

    def broken(ctx: object) -> None:
        raise RuntimeError("boom")

    def healthy(ctx: object) -> None:
        seen.append("ran")

    outcome = run_jobs_once(harness.ctx, [("t:broken", broken), ("t:healthy", healthy)])
    assert outcome == {"t:broken": "RuntimeError: boom", "t:healthy": None}
    assert seen == ["ran"]


def test_default_build_registers_every_service_module(tmp_path: Path) -> None:
    from server.app import SERVICES, build_server
    from server.context import ServerContext, ServerSettings
    from server.migrate import init_db
    from tests.harness import make_pki

    make_pki(tmp_path / "state")
    ctx = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}",
                                              state_dir=tmp_path / "state", listen="127.0.0.1:0"))
    init_db(ctx.engine)
    running = build_server(ctx, jobs=True, job_interval=3600, health_listen="127.0.0.1:0")
    try:
        assert running.services == [
            "fedsignal.v1.EnrollmentService", "fedsignal.v1.AdminService", "fedsignal.v1.SignalService",
            "fedsignal.v1.ReviewService", "fedsignal.v1.BundleService", "fedsignal.v1.RolloutService",
            "fedsignal.v1.SecureAggregationService",
        ]
        assert running.services == [s.name for s in SERVICES]
        assert running.port != running.enrollment_port
        # The plaintext probe port answers health checks and nothing else.
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/fedsignal.v1.AdminService/GetAuditLog", None, None)(b"", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop(0)
        ctx.engine.dispose()
