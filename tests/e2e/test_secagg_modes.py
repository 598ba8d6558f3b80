"""Per-cohort mode and the tenant's own limits, over real gRPC: the worst-case cap withholds, windows
without events still get an input, a local-mode cohort releases at the schema's noise only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import common_pb2, secagg_pb2, signals_pb2_grpc

from aggregation.schema import LOCAL
from fedsignal_cli.simulator import AgentNetwork, SimTenant
from server.db import transaction
from server.secagg.rounds import SecAggSettings
from server.signals.schemas import publish_aggregation
from tenant_agent.secagg import SecAggConfig
from tests.e2e.secagg_support import secure_collector, serving
from tests.harness import Harness

WINDOW = 3600


@pytest.fixture
def h(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    with serving(database_url, tmp_path / "server", SecAggSettings(submit_seconds=600.0)) as h:
        yield h


def test_the_own_worst_case_cap_withholds_and_empty_windows_still_submit(h: Harness, tmp_path: Path) -> None:
    cs = [secure_collector(h, tmp_path, f"m{i}") for i in range(3)]
    try:
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant("m0", "retail", 20)], seed=1)
        cs[0].record_many(net.window_events(net.tenants[0], start, WINDOW))
        cs[0].secure.config = SecAggConfig(own_worst_case_rho_cap=0.001)
        [outcome] = cs[0]._sealer.close_due(start + WINDOW + 1, cs[0].schema)
        assert outcome.state == "withheld" and "cap" in (outcome.reason or "")
        assert cs[0].budget_status().spent == 0.0  # nothing spent for a withheld window
        # m1 was online during that window but had no traffic: it still submits (an empty table, no spend).
        policy = lambda conn, now: cs[1]._budget_policy(conn, now)  # noqa: E731
        assert cs[1].secure.cover_empty_windows(start + 10, cs[1].schema, policy) == []  # comes online
        assert cs[1].secure.cover_empty_windows(start + WINDOW + 1, cs[1].schema, policy) == [start]
        assert cs[1].secure.cover_empty_windows(start + WINDOW + 2, cs[1].schema, policy) == []  # once
        [state] = cs[1].secure.pending()
        status = cs[1].secure._stub().GetRoundStatus(secagg_pb2.RoundRef(round_id=state["round_id"]))  # type: ignore[union-attr]
        assert status.inputs == 1
        assert cs[1].secure.loss_summary().cohort_rho == 0.0
    finally:
        for c in cs:
            c.close()


def test_a_local_mode_cohort_releases_at_the_schema_noise_only(h: Harness, tmp_path: Path) -> None:
    c = secure_collector(h, tmp_path, "l0")
    try:
        schema = c.schema
        with transaction(h.ctx.sessions) as session:
            local = publish_aggregation(session, "retail", LOCAL, schema.noise_scale * 2)
        c.refresh_schema()
        assert c.schema.version == local.version and c.schema.aggregation_mode == LOCAL
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant("l0", "retail", 20)], seed=4)
        c.record_many(net.window_events(net.tenants[0], start, WINDOW))
        [outcome] = c._sealer.close_due(start + WINDOW + 1, c.schema)
        assert outcome.state == "sealed"
        result = c.deliver(force=True)
        assert result.accepted == 1
        # A report declaring its own (smaller) scale is refused: the schema fixes the cohort's noise.
        from tenant_agent.store import Release

        with c.store.engine.connect() as conn:
            data = conn.execute(Release.__table__.select()).first().report  # type: ignore[union-attr]
        report = common_pb2.DpReport.FromString(data)
        assert report.noise_scale == pytest.approx(local.noise_scale)
        channel = c.channel()
        assert channel is not None
        forged = common_pb2.DpReport()
        forged.CopyFrom(report)
        forged.noise_scale = 1.0
        forged.idempotency_key = "l0/forged"
        forged.window_start, forged.window_end = start - WINDOW, start
        with pytest.raises(grpc.RpcError) as info:
            signals_pb2_grpc.SignalServiceStub(channel).SubmitReport(forged)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "fixes" in (info.value.details() or "")
    finally:
        c.close()
