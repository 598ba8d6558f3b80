"""SignalService over real mutual TLS: statuses on the wire, the server keeps serving,
refused calls leave the store unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import admin_pb2, admin_pb2_grpc, signals_pb2, signals_pb2_grpc
from sqlalchemy.exc import OperationalError

from server.app import ADMIN, SIGNALS, RunningServer, Service, build_server
from server.context import ServerContext
from server.signals import service as signals_service
from server.signals.ingest import ReportIngest
from server.signals.merge import merge_pending
from server.signals.store import ReportStore, _Pending
from tests.server.signals.helpers import COHORT, cohort_schema, make_report
from tests.server.signals.pki import Pki
from tests.server.signals.test_ingest import store_counts


@dataclass
class Served:
    ctx: ServerContext
    server: RunningServer
    pki: Pki

    def channel(self, subject: str, role: str = "tenant", cohort: str | None = COHORT) -> grpc.Channel:
        creds = self.pki.issue(self.ctx, subject, role, cohort if role == "tenant" else None)
        return grpc.secure_channel(f"127.0.0.1:{self.server.port}", creds)


@pytest.fixture
def served(ctx: ServerContext, tmp_path: Path) -> Iterator[Served]:
    pki = Pki.create(tmp_path / "state")
    ctx.settings = ctx.settings.with_changes(state_dir=pki.state_dir, listen="127.0.0.1:0", insecure_dev=False,
                                             max_message_bytes=64 * 1024)
    running = build_server(ctx, jobs=False, services=[SIGNALS, ADMIN])
    try:
        yield Served(ctx, running, pki)
    finally:
        running.stop(0)


def submit_raw(channel: grpc.Channel, payload: bytes) -> signals_pb2.SubmitReportResponse:
    call = channel.unary_unary(
        "/fedsignal.v1.SignalService/SubmitReport",
        request_serializer=lambda b: b,
        response_deserializer=signals_pb2.SubmitReportResponse.FromString,
    )
    return call(payload, timeout=10)  # type: ignore[no-any-return]


def test_tenant_gets_its_cohort_schema_and_submits(served: Served) -> None:
    stub = signals_pb2_grpc.SignalServiceStub(served.channel("acme"))
    schema = stub.GetSignalSchema(signals_pb2.GetSignalSchemaRequest(), timeout=10)
    assert (schema.cohort, schema.version) == (COHORT, 1)
    report = make_report(cohort_schema(served.ctx), "acme")
    first = stub.SubmitReport(report, timeout=10)
    again = stub.SubmitReport(report, timeout=10)
    assert first.outcome == signals_pb2.SubmitReportResponse.ACCEPTED
    assert (again.outcome, again.report_id) == (signals_pb2.SubmitReportResponse.DUPLICATE, first.report_id)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetSignalSchema(signals_pb2.GetSignalSchemaRequest(version=9), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_calls_get_their_status_and_change_nothing(served: Served) -> None:
    tenant = served.channel("acme")
    stub = signals_pb2_grpc.SignalServiceStub(tenant)
    schema = cohort_schema(served.ctx)
    before = store_counts(served.ctx)

    def refused(call: object, *args: object) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as err:
            call(*args)  # type: ignore[operator]
        return err.value.code()  # type: ignore[no-any-return]

    assert refused(submit_raw, tenant, b"\xff\xff\xff\xff\x0f") == grpc.StatusCode.INVALID_ARGUMENT
    big = make_report(schema, "acme")
    big.collector_version = "x" * (70 * 1024)
    assert refused(stub.SubmitReport, big) == grpc.StatusCode.RESOURCE_EXHAUSTED
    short = make_report(schema, "acme")
    del short.cells[-1]
    assert refused(stub.SubmitReport, short) == grpc.StatusCode.INVALID_ARGUMENT
    scale = make_report(schema, "acme")
    scale.noise_scale = -1.0
    assert refused(stub.SubmitReport, scale) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = make_report(schema, "acme")
    unknown.schema_version = 42
    assert refused(stub.SubmitReport, unknown) == grpc.StatusCode.FAILED_PRECONDITION
    assert refused(stub.SubmitReport, make_report(schema, "globex")) == grpc.StatusCode.PERMISSION_DENIED
    admin = signals_pb2_grpc.SignalServiceStub(served.channel("ops", role="admin"))
    assert refused(admin.SubmitReport, make_report(schema, "acme")) == grpc.StatusCode.PERMISSION_DENIED
    assert refused(admin_pb2_grpc.AdminServiceStub(tenant).ListSignals,
                   admin_pb2.ListSignalsRequest()) == grpc.StatusCode.PERMISSION_DENIED
    assert store_counts(served.ctx) == before
    # still serving
    accepted = stub.SubmitReport(make_report(schema, "acme"), timeout=10)
    assert accepted.outcome == signals_pb2.SubmitReportResponse.ACCEPTED
    registry = served.server.metrics.registry

    def counted(outcome: str, reason: str) -> float | None:
        return registry.get_sample_value("fedsignal_reports_total", {"outcome": outcome, "reason": reason})

    assert counted("refused", "malformed") == 1
    assert counted("refused", "vector_length") == 1
    assert counted("refused", "noise_scale") == 1
    assert counted("refused", "unknown_schema_version") == 1
    assert counted("refused", "foreign_tenant") == 1
    assert counted("accepted", "accepted") == 1


def test_replayed_key_for_another_window_is_already_exists(served: Served) -> None:
    stub = signals_pb2_grpc.SignalServiceStub(served.channel("acme"))
    schema = cohort_schema(served.ctx)
    first = make_report(schema, "acme", key="k-1", seed=1)
    stub.SubmitReport(first, timeout=10)
    replay = make_report(schema, "acme", key="k-1", seed=2, window_start=first.window_start - 3600)
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitReport(replay, timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_admin_lists_released_signals(served: Served) -> None:
    schema = cohort_schema(served.ctx)
    for tenant in ("a", "b", "c"):
        signals_pb2_grpc.SignalServiceStub(served.channel(tenant)).SubmitReport(
            make_report(schema, tenant, seed=ord(tenant)), timeout=10
        )
    merge_pending(served.ctx)
    admin = admin_pb2_grpc.AdminServiceStub(served.channel("ops", role="admin"))
    listed = admin.ListSignals(admin_pb2.ListSignalsRequest(cohort=COHORT, limit=5), timeout=10)
    assert listed.min_tenants == 3
    assert len(listed.cells) == 5
    assert all(c.tenants == 3 and not c.suppressed for c in listed.cells)


class _FlakyStore(ReportStore):
    """A report store whose database can be switched off (the seam: handed to the servicer)."""

    down = False

    def _write(self, batch: list[_Pending]) -> list[int | None]:
        if self.down:
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        return super()._write(batch)


def test_store_outage_is_unavailable_so_the_collector_retries(ctx: ServerContext, tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "state")
    ctx.settings = ctx.settings.with_changes(state_dir=pki.state_dir, listen="127.0.0.1:0", insecure_dev=False)
    store = _FlakyStore(ctx)
    signals = Service(SIGNALS.name, lambda server, c: signals_service.add_to_server(
        server, c, ReportIngest(c, store=store)))
    running = build_server(ctx, jobs=False, services=[signals])
    try:
        served = Served(ctx, running, pki)
        stub = signals_pb2_grpc.SignalServiceStub(served.channel("acme"))
        report = make_report(cohort_schema(ctx), "acme")
        store.down = True
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitReport(report, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        store.down = False
        assert stub.SubmitReport(report, timeout=10).outcome == signals_pb2.SubmitReportResponse.ACCEPTED
    finally:
        running.stop(0)
