"""Secure rounds survive crashes: a collector restarted mid-round, a server SIGKILLed mid-round.

Real collectors, a real server process (``fedsignal server serve``, every service and job),
mutual TLS, both stores. After the crash the round resumes from what was acknowledged: the
window is released exactly once, by every tenant that submitted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select

from fedsignal_cli.simulator import AgentNetwork, SimTenant
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.review.trust_root import bootstrap_root
from server.secagg.models import DONE, UNMASKING, RoundRecord
from server.signals.models import MergedWindow
from tenant_agent import Collector, CollectorConfig, enroll
from tenant_agent.config import BudgetConfig
from tests.server.signals.procs import ServerProcess, fedsignal_cli

WINDOW = 3600
TENANTS = ["k0", "k1", "k2", "k3"]


def _enrollment_port(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(rb"enrollment on port (\d+)", log.read_bytes()) if log.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError("server did not report its enrollment port")


def _collector(tdir: Path, address: str) -> Collector:
    return Collector(CollectorConfig(state_dir=tdir, server=address, budget=BudgetConfig(rho_per_period=10.0)))


def _round(ctx: ServerContext) -> RoundRecord | None:
    with ctx.sessions() as session:
        return session.scalars(select(RoundRecord)).first()


def _advance(collectors: list[Collector], ctx: ServerContext, phase: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = _round(ctx)
        if row is not None and row.phase == phase:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"round did not reach {phase}: {row.phase if row else None}")
        for c in collectors:
            c.secure.advance_all()
        time.sleep(0.1)


@pytest.mark.parametrize("kill_in", ["collecting", "unmasking"])
def test_a_server_sigkilled_mid_round_resumes_and_releases_once(database_url: str, tmp_path: Path,
                                                                 kill_in: str) -> None:
    state, admin = tmp_path / "state", tmp_path / "admin"
    fedsignal_cli("server", "init", "--state-dir", str(state), "--database-url", database_url, "--admin-out", str(admin))
    ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=state))
    with transaction(ctx.sessions) as session:
        bootstrap_root(session, state_dir=state, reviewers=[CryptoSigner.generate_ed25519()], now=ctx.clock(),
                       thresholds={"low": 1, "high": 1, "critical": 1})
    server = ServerProcess(state, database_url, tmp_path / "first.log", min_tenants=1).start()
    restarted: ServerProcess | None = None
    collectors: list[Collector] = []
    try:
        ca_pem = (admin / "ca.crt").read_bytes()
        enroll_address = f"127.0.0.1:{_enrollment_port(tmp_path / 'first.log')}"
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant(t, "crash", 20) for t in TENANTS], seed=9)
        for sim in net.tenants:
            token = fedsignal_cli("server", "enroll-token", "--state-dir", str(state), "--database-url", database_url,
                                  "--tenant", sim.tenant_id, "--cohort", "crash").stdout.split()[0]
            enroll(enroll_address, token, tmp_path / sim.tenant_id, ca_pem)
            c = _collector(tmp_path / sim.tenant_id, server.address)
            assert c.secure.register_key()
            c.refresh_schema()
            c.record_many(net.window_events(sim, start, WINDOW))
            collectors.append(c)
        first = collectors if kill_in == "unmasking" else collectors[:2]
        for c in first:
            assert [o.state for o in c._sealer.close_due(start + WINDOW + 1, c.schema)] == ["sealed"]
        row = _round(ctx)
        assert row is not None
        if kill_in == "unmasking":
            assert row.phase == UNMASKING  # every roster member submitted: closed at once
            collectors[0].secure.advance_all()  # one attestation is in before the crash
        server.kill()
        restarted = ServerProcess(state, database_url, tmp_path / "second.log", min_tenants=1).start()
        for i, c in enumerate(collectors):
            c.close()
            collectors[i] = _collector(tmp_path / TENANTS[i], restarted.address)
        for c in collectors[len(first):]:
            assert [o.state for o in c._sealer.close_due(start + WINDOW + 1, c.schema)] == ["sealed"]
        _advance(collectors, ctx, DONE)
        with ctx.sessions() as session:
            merged = session.scalars(select(MergedWindow).where(MergedWindow.cohort == "crash")).all()
        assert len(merged) == 1 and merged[0].tenants == 4 and merged[0].generation == 1
        assert np.frombuffer(merged[0].cells, dtype="<i8").shape[0] == collectors[0].schema.size
        for c in collectors:  # tenants whose answer came after the release finish on their next pass
            c.secure.advance_all()
            assert c.secure.loss_summary().rounds_done == 1
    finally:
        for c in collectors:
            c.close()
        server.stop()
        if restarted is not None:
            restarted.stop()
        ctx.engine.dispose()


def test_a_collector_restarted_mid_round_still_unmasks(tmp_path: Path) -> None:
    from server.secagg.rounds import SecAggSettings, configure
    from tests.e2e.secagg_support import secure_harness

    h = secure_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    configure(h.ctx, SecAggSettings(submit_seconds=600.0))
    collectors: list[Collector] = []
    try:
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant(t, "retail", 20) for t in TENANTS], seed=2)
        for sim in net.tenants:
            tdir = tmp_path / sim.tenant_id
            enroll(h.enroll_target, h.token(sim.tenant_id), tdir, h.ca.certificate_pem, signals_address=h.mtls_target)
            c = _collector(tdir, h.mtls_target)
            assert c.secure.register_key()
            c.refresh_schema()
            c.record_many(net.window_events(sim, start, WINDOW))
            collectors.append(c)
        for c in collectors:
            c._sealer.close_due(start + WINDOW + 1, c.schema)
        # k0 stops right after its input was acknowledged and comes back with the same state directory.
        collectors[0].close()
        collectors[0] = _collector(tmp_path / TENANTS[0], h.mtls_target)
        _advance(collectors, h.ctx, DONE)
        with h.ctx.sessions() as session:
            merged = session.scalars(select(MergedWindow)).all()
        assert len(merged) == 1 and merged[0].tenants == 4
    finally:
        for c in collectors:
            c.close()
        h.running.stop(0)
        h.ctx.engine.dispose()
