"""Real server processes on one PostgreSQL schema, over mutual TLS.

Two replicas ingest and merge at the same time: no report lost, none merged twice, every
window's merged sum equals the sum of its stored reports. A replica killed with SIGKILL during a
burst loses no acknowledged report; resending everything (same idempotency keys) counts each once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import signals_pb2, signals_pb2_grpc
from sqlalchemy import func, select

from aggregation.schema import LOCAL, SignalSchema
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.signals.models import SignalReport
from server.signals.schemas import publish_aggregation
from tests.server.signals.helpers import SCALE, make_report
from tests.server.signals.pki import Pki
from tests.server.signals.procs import (
    ServerProcess,
    assert_every_window_sums_its_reports,
    fedsignal_cli,
    wait_until_merged,
)

pytestmark = pytest.mark.slow
COHORT = "replica-cohort"
ACK = {signals_pb2.SubmitReportResponse.ACCEPTED, signals_pb2.SubmitReportResponse.DUPLICATE}


@pytest.fixture
def deployment(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Path, ServerContext, Pki]]:
    state = tmp_path / "state"
    fedsignal_cli("server", "init", "--state-dir", str(state), "--database-url", postgres_url,
                  "--admin-out", str(tmp_path / "admin"))
    ctx = ServerContext.create(ServerSettings(database_url=postgres_url, state_dir=state))
    try:
        yield state, ctx, Pki.load(state)
    finally:
        ctx.engine.dispose()


def closed_windows(count: int, window_seconds: int) -> list[int]:
    last_closed = int(time.time()) // window_seconds * window_seconds - window_seconds
    return [last_closed - i * window_seconds for i in range(count)]


def tenant_stubs(ctx: ServerContext, pki: Pki, tenants: list[str],
                 servers: list[ServerProcess]) -> dict[str, list[signals_pb2_grpc.SignalServiceStub]]:
    stubs = {}
    for tenant in tenants:
        creds = pki.issue(ctx, tenant, "tenant", COHORT)
        stubs[tenant] = [signals_pb2_grpc.SignalServiceStub(grpc.secure_channel(s.address, creds)) for s in servers]
    return stubs


def local_mode(ctx: ServerContext, schema: SignalSchema) -> SignalSchema:
    """These replicas ingest per-tenant reports: the cohort is switched to local mode first."""
    with transaction(ctx.sessions) as session:
        return publish_aggregation(session, schema.cohort, LOCAL, SCALE, clock=ctx.clock)


def test_two_replicas_ingest_and_merge_concurrently(deployment: tuple[Path, ServerContext, Pki],
                                                    tmp_path: Path) -> None:
    state, ctx, pki = deployment
    replicas = [ServerProcess(state, ctx.settings.database_url, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        for r in replicas:
            r.start()
        tenants = [f"tenant-{i}" for i in range(6)]
        stubs = tenant_stubs(ctx, pki, tenants, replicas)
        # both replicas answer the first schema request at once: one version 1
        with ThreadPoolExecutor(4) as pool:
            protos = list(pool.map(lambda s: s.GetSignalSchema(signals_pb2.GetSignalSchemaRequest(), timeout=30),
                                   [stubs[t][i] for t in tenants[:2] for i in range(2)]))
        assert {p.version for p in protos} == {1}
        schema = local_mode(ctx, SignalSchema.from_proto(protos[0]))
        windows = closed_windows(5, schema.window_seconds)

        def tenant_run(tenant: str) -> list[int]:
            outcomes = []
            for n, start in enumerate(windows):
                report = make_report(schema, tenant, window_start=start, seed=hash((tenant, n)) % 1000)
                first, other = stubs[tenant][n % 2], stubs[tenant][(n + 1) % 2]
                outcomes.append(first.SubmitReport(report, timeout=30).outcome)
                outcomes.append(other.SubmitReport(report, timeout=30).outcome)  # a resend to the other replica
            return outcomes

        with ThreadPoolExecutor(len(tenants)) as pool:
            results = list(pool.map(tenant_run, tenants))
        for outcomes in results:
            assert outcomes[0::2] == [signals_pb2.SubmitReportResponse.ACCEPTED] * len(windows)
            assert outcomes[1::2] == [signals_pb2.SubmitReportResponse.DUPLICATE] * len(windows)
        total = len(tenants) * len(windows)
        wait_until_merged(ctx, total)
        assert assert_every_window_sums_its_reports(ctx) == total
        with ctx.sessions() as session:
            assert session.scalar(select(func.count()).select_from(SignalReport)) == total
    finally:
        for r in replicas:
            r.stop()


def test_sigkill_during_a_burst_loses_no_acknowledged_report(deployment: tuple[Path, ServerContext, Pki],
                                                             tmp_path: Path) -> None:
    state, ctx, pki = deployment
    server = ServerProcess(state, ctx.settings.database_url, tmp_path / "server.log").start()
    restarted: ServerProcess | None = None
    try:
        tenants = [f"tenant-{i}" for i in range(6)]
        stubs = tenant_stubs(ctx, pki, tenants, [server])
        schema = local_mode(ctx, SignalSchema.from_proto(
            stubs[tenants[0]][0].GetSignalSchema(signals_pb2.GetSignalSchemaRequest(), timeout=30)
        ))
        windows = closed_windows(40, schema.window_seconds)
        outbox = {t: [make_report(schema, t, window_start=w, seed=i) for i, w in enumerate(windows)] for t in tenants}
        acked: set[str] = set()
        lock = threading.Lock()

        def burst(tenant: str) -> None:
            for report in outbox[tenant]:
                try:
                    reply = stubs[tenant][0].SubmitReport(report, timeout=10)
                except grpc.RpcError:
                    return  # the server died: the rest stays in the outbox
                if reply.outcome in ACK:
                    with lock:
                        acked.add(report.idempotency_key)

        threads = [threading.Thread(target=burst, args=(t,)) for t in tenants]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
        for t in threads:
            t.join(60)
        total = sum(len(v) for v in outbox.values())
        assert 60 <= len(acked) < total, "the kill must land mid-burst"

        with ctx.sessions() as session:
            stored = set(session.scalars(select(SignalReport.idempotency_key)))
        assert acked <= stored  # every acknowledged report survived the crash

        restarted = ServerProcess(state, ctx.settings.database_url, tmp_path / "restarted.log").start()
        outcomes: dict[str, int] = {}
        for tenant in tenants:
            creds = pki.issue(ctx, tenant, "tenant", COHORT)
            stub = signals_pb2_grpc.SignalServiceStub(grpc.secure_channel(restarted.address, creds))
            for report in outbox[tenant]:  # the outbox resends everything it has not seen acknowledged (and more)
                outcomes[report.idempotency_key] = stub.SubmitReport(report, timeout=30).outcome
        for key in stored:
            assert outcomes[key] == signals_pb2.SubmitReportResponse.DUPLICATE
        for key in set(outcomes) - stored:
            assert outcomes[key] == signals_pb2.SubmitReportResponse.ACCEPTED
        wait_until_merged(ctx, total)
        assert assert_every_window_sums_its_reports(ctx) == total
        with ctx.sessions() as session:
            assert session.scalar(select(func.count()).select_from(SignalReport)) == total
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()

