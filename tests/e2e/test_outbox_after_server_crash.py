"""Real collectors' outboxes against a real server process that is SIGKILLed mid-burst.

Every report a collector saw acknowledged is in the server's store after the
crash; after a restart the outboxes re-send the rest, the ones the server had
stored without the collector seeing the ack come back as duplicates, and
every (tenant, window) is stored exactly once.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from sqlalchemy import func, select

from aggregation.dp import calibrate_scale
from aggregation.schema import LOCAL, default_schema
from fedsignal_cli.simulator import AgentNetwork, SimTenant
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.review.trust_root import bootstrap_root
from server.signals.models import SignalReport
from server.signals.schemas import publish_aggregation
from tenant_agent import Collector, CollectorConfig, enroll
from tenant_agent.config import BudgetConfig, ReleaseConfig
from tenant_agent.store import Release
from tests.server.signals.procs import ServerProcess, fedsignal_cli

pytestmark = pytest.mark.slow
TENANTS = ("t-one", "t-two", "t-three")
WINDOWS = 50
WINDOW = 3600


def _enrollment_port(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(rb"enrollment on port (\d+)", log.read_bytes())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError("server did not report its enrollment port")


def _collector(tdir: Path, address: str) -> Collector:
    config = CollectorConfig(state_dir=tdir, server=address,
                             budget=BudgetConfig(rho_per_period=10.0), release=ReleaseConfig(rho=0.01))
    return Collector(config)


def _acked_keys(collector: Collector) -> set[str]:
    with collector.store.engine.connect() as conn:
        return set(conn.scalars(select(Release.release_key).where(Release.delivered_at.is_not(None))))


def test_outboxes_redeliver_exactly_once_after_a_server_sigkill(database_url: str, tmp_path: Path) -> None:
    state, admin = tmp_path / "state", tmp_path / "admin"
    fedsignal_cli("server", "init", "--state-dir", str(state), "--database-url", database_url,
                  "--admin-out", str(admin))
    ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=state))
    with transaction(ctx.sessions) as session:  # enrollment hands out the reviewers' root
        bootstrap_root(session, state_dir=state, reviewers=[CryptoSigner.generate_ed25519()], now=ctx.clock(),
                       thresholds={"low": 1, "high": 1, "critical": 1})
    with transaction(ctx.sessions) as session:
        # The outbox carries per-tenant DP reports: the cohort runs in local mode (secure aggregation, the
        # default, sends masked inputs to rounds instead; tests/e2e/test_secagg_crashes.py covers that path).
        base = default_schema("cohort-x")
        publish_aggregation(session, "cohort-x", LOCAL, calibrate_scale(
            "discrete_gaussian", base.max_cells_per_unit, base.max_count_per_cell, rho=0.01))
    server = ServerProcess(state, database_url, tmp_path / "first.log", min_tenants=1).start()
    restarted: ServerProcess | None = None
    collectors: list[Collector] = []
    try:
        enroll_address = f"127.0.0.1:{_enrollment_port(tmp_path / 'first.log')}"
        ca_pem = (admin / "ca.crt").read_bytes()
        # Closed windows in the recent past, one event stream per tenant.
        first = (int(time.time()) // WINDOW - WINDOWS - 1) * WINDOW
        net = AgentNetwork([SimTenant(t, "cohort-x", 4) for t in TENANTS], seed=3)
        for sim in net.tenants:
            token = fedsignal_cli("server", "enroll-token", "--state-dir", str(state), "--database-url",
                                  database_url, "--tenant", sim.tenant_id, "--cohort", "cohort-x").stdout.split()[0]
            tdir = tmp_path / sim.tenant_id
            enroll(enroll_address, token, tdir, ca_pem)
            collector = _collector(tdir, server.address)
            for w in range(WINDOWS):
                collector.record_many(net.window_events(sim, first + w * WINDOW, WINDOW))
            sealed = collector.close_windows()
            assert [o.state for o in sealed] == ["sealed"] * WINDOWS
            collectors.append(collector)
        total = len(TENANTS) * WINDOWS

        def stored() -> int:
            with ctx.sessions() as session:
                return int(session.scalar(select(func.count()).select_from(SignalReport)) or 0)

        threads = [threading.Thread(target=c.deliver, kwargs={"force": True}) for c in collectors]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while stored() < total // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        for t in threads:
            t.join(60)

        acked = set().union(*(_acked_keys(c) for c in collectors))
        with ctx.sessions() as session:
            in_store = set(session.scalars(select(SignalReport.idempotency_key)))
        assert total // 4 <= len(in_store) < total, "the kill must land mid-burst"
        assert acked <= in_store, "an acknowledged report was lost in the crash"
        unacked_but_stored = in_store - acked

        # Restart the server (new port) and the collectors (same state directories).
        restarted = ServerProcess(state, database_url, tmp_path / "second.log", min_tenants=1).start()
        for c in collectors:
            c.close()
        collectors = [_collector(tmp_path / t, restarted.address) for t in TENANTS]
        duplicates = accepted = 0
        for c in collectors:
            result = c.deliver(force=True)
            assert result.pending == 0 and result.failed == 0 and result.rejected == 0
            duplicates += result.duplicates
            accepted += result.accepted
            assert c.outbox.depth() == 0
        assert duplicates == len(unacked_but_stored)
        assert accepted == total - len(in_store)
        with ctx.sessions() as session:
            rows = session.execute(select(SignalReport.tenant_id, SignalReport.window_start)).all()
        assert len(rows) == total == len(set(rows))
    finally:
        for c in collectors:
            c.close()
        server.stop()
        if restarted is not None:
            restarted.stop()
        ctx.engine.dispose()
