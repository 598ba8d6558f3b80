"""The whole loop in one process: a real server over mutual TLS, enrolled collectors, simulated agents.

Simulated time is shared by the server and the collectors; every step is
one window: the simulator's agents resolve their artifact per session
through their tenant's local resolver (so canary sessions really behave
differently), the collectors record, seal (DP release) and deliver, the
server merges and runs the rollout controller, and every collector pulls
the cohort's bundle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from fedsignal.v1 import rollout_pb2, rollout_pb2_grpc
from securesystemslib.signer import CryptoSigner

from aggregation.dp import calibrate_scale
from aggregation.schema import SECURE, default_schema
from fedsignal_cli.simulator import AgentNetwork, HarnessServer, Hotspot, SimTenant
from server.app import RunningServer, build_server
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import CertificateAuthority
from server.migrate import init_db
from server.review.trust_root import bootstrap_root, current_root
from server.review.workflow import approve_candidate, create_candidate
from server.rollout.controller import run_controller
from server.rollout.models import RolloutRecord
from server.secagg.job import run_secagg
from server.signals.merge import run_merge
from server.signals.schemas import publish_aggregation
from server.signals.views import merged_cells
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, CollectorConfig, ReleaseConfig
from tenant_agent.replay import HarnessClient, ReplayRun, ReplayRunner, replay_active_bundle
from tenant_agent.replay_set import ReplaySet, ReplaySetPolicy
from tenant_agent.transport import enroll

COHORT = "retail-eu"
WINDOW = 3600
ARTIFACT = "routing.refund"


@dataclass
class SimClock:
    now: float

    def __call__(self) -> float:
        return self.now

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@dataclass
class Resolved:
    """One resolution an agent made: which tenant, session, label, in which window."""

    window: int
    tenant: str
    session: str
    version: str
    arm: str


@dataclass
class Loop:
    ctx: ServerContext
    running: RunningServer
    clock: SimClock
    collectors: dict[str, Collector]
    network: AgentNetwork
    admin_channel: grpc.Channel
    reviewer: CryptoSigner
    window_start: int
    admin_credentials: Path
    silenced: set[str] = field(default_factory=set)
    resolved: list[Resolved] = field(default_factory=list)
    #: Per tenant: its replay set, its agent harness (the simulator on loopback) and the replays it ran.
    replay_sets: dict[str, ReplaySet] = field(default_factory=dict)
    harnesses: dict[str, HarnessServer] = field(default_factory=dict)
    replays: list[ReplayRun] = field(default_factory=list)

    @classmethod
    def start(cls, database_url: str, tmp: Path, *, tenants: int = 5, sessions: int = 300, k: int = 3,
              rho: float = 8.0, seed: int = 11) -> Loop:
        # Simulated time starts two days back on a window boundary (certificates are valid from then).
        t0 = (int(datetime.now(UTC).timestamp()) // WINDOW - 48) * WINDOW
        clock = SimClock(float(t0))
        state = tmp / "server"
        ca = CertificateAuthority.create(state, now=clock.dt() - timedelta(hours=1))
        ca.write_server_cert(state)
        settings = ServerSettings(database_url=database_url, state_dir=state, listen="127.0.0.1:0", min_tenants=k)
        ctx = ServerContext.create(settings, clock=clock.dt)
        init_db(ctx.engine)
        reviewer = CryptoSigner.generate_ed25519()
        admin_key, admin_cert = ca.issue_key_and_cert("root-admin", None, "admin", now=clock.dt())
        ids = [f"tenant-{i}" for i in range(tenants)]
        tokens = {}
        with transaction(ctx.sessions) as s:
            identity.record_admin_certificate(s, "root-admin", admin_cert.serial, admin_cert.not_after, "test",
                                              clock.dt())
            bootstrap_root(s, state_dir=state, reviewers=[reviewer], now=clock.dt(),
                           thresholds={"low": 1, "high": 1, "critical": 1})
        # One transaction per step, as the admin service runs them (server.db.locks' order holds in each).
        for t in ids:
            with transaction(ctx.sessions) as s:
                tokens[t] = identity.create_enrollment_token(s, t, COHORT, timedelta(hours=1), "test", clock.dt())[0]
        with transaction(ctx.sessions) as s:
            # Secure aggregation, the default mode: the cohort's noise (the sum of the tenants' shares) is
            # the central mechanism's at ``rho`` per window, published before anyone enrolls.
            base = default_schema(COHORT)
            publish_aggregation(s, COHORT, SECURE, calibrate_scale(
                "discrete_gaussian", base.max_cells_per_unit, base.max_count_per_cell, rho=rho), clock=clock.dt)
        ctx.revocations.clear()
        running = build_server(ctx, jobs=False)
        collectors = {}
        for t in ids:
            sd = tmp / t
            enroll(f"localhost:{running.enrollment_port}", tokens[t], sd, ca.certificate_pem)
            config = CollectorConfig(
                state_dir=sd, server=f"localhost:{running.port}",
                release=ReleaseConfig(rho=rho), budget=BudgetConfig(rho_per_period=1e6),
            )
            collectors[t] = Collector(config, clock=clock.dt)
        tls = grpc.ssl_channel_credentials(ca.certificate_pem, admin_key, admin_cert.certificate_pem)
        admin = grpc.secure_channel(f"localhost:{running.port}", tls)
        creds = tmp / "admin"
        creds.mkdir()
        (creds / "client.key").write_bytes(admin_key)
        (creds / "client.crt").write_bytes(admin_cert.certificate_pem)
        (creds / "ca.crt").write_bytes(ca.certificate_pem)
        network = AgentNetwork([SimTenant(t, COHORT, sessions) for t in ids], seed=seed,
                               hotspot=Hotspot(COHORT, intent="refund"))
        loop = cls(ctx, running, clock, collectors, network, admin, reviewer, t0, creds)
        for sim in network.tenants:
            t = sim.tenant_id
            loop.replay_sets[t] = ReplaySet(tmp / t, ReplaySetPolicy(enabled=True), clock=clock.dt)
            loop.harnesses[t] = HarnessServer(network, sim)
        return loop

    def close(self) -> None:
        self.admin_channel.close()
        for h in self.harnesses.values():
            h.close()
        for r in self.replay_sets.values():
            r.close()
        for c in self.collectors.values():
            c.close()
        self.running.stop(0)
        self.ctx.engine.dispose()

    # -- central team -----------------------------------------------------------------------
    def candidate(self, artifact: Mapping[str, Any], plan: Mapping[str, Any], key: str) -> str:
        content = json.dumps(artifact).encode()
        with transaction(self.ctx.sessions) as s:
            rec = create_candidate(
                s, cohort=COHORT, category="wrong_tool", kind=str(artifact["kind"]), risk_class="low",
                artifacts=[(ARTIFACT, str(artifact["kind"]), content)], evidence={"test": key},
                rollout_plan_json=json.dumps(plan), dedupe_key=key, now=self.clock.dt(),
            )
            assert rec is not None
            payload = rec.signing_payload.encode()
            signature = bytes.fromhex(self.reviewer.sign(payload).signature)
            approve_candidate(s, rec.id, keyid=self.reviewer.public_key.keyid, signature=signature,
                              signing_payload=payload, root=current_root(s), actor="reviewer:alice",
                              now=self.clock.dt())
            return rec.id

    @property
    def rollouts(self) -> rollout_pb2_grpc.RolloutServiceStub:
        return rollout_pb2_grpc.RolloutServiceStub(self.admin_channel)

    def start_rollout(self, candidate_id: str) -> rollout_pb2.RolloutStatus:
        status = self.rollouts.StartRollout(rollout_pb2.StartRolloutRequest(candidate_id=candidate_id), timeout=30)
        self.pull_all()
        return status

    def status(self, rollout_id: str) -> rollout_pb2.RolloutStatus:
        return self.rollouts.GetRolloutStatus(rollout_pb2.RolloutRef(rollout_id=rollout_id), timeout=30)

    def record(self, rollout_id: str) -> RolloutRecord:
        with transaction(self.ctx.sessions) as s:
            rec = s.get(RolloutRecord, rollout_id)
            assert rec is not None
            return rec

    # -- one window -------------------------------------------------------------------------
    def pull_all(self) -> None:
        for c in self.collectors.values():
            c.pull_bundle()

    def _source(self, tenant: str) -> Any:
        collector = self.collectors[tenant]
        window = self.window_start

        def source(session_id: str) -> tuple[str, Sequence[Mapping[str, Any]]]:
            r = collector.resolver.resolve(ARTIFACT, session_id)
            self.resolved.append(Resolved(window, tenant, session_id, r.version, r.arm))
            return r.version, [json.loads(r.content)] if r.content else []

        return source

    def run_window(self) -> None:
        """Agents work one window; collectors release and deliver; the server merges and decides; tenants pull."""
        for sim in self.network.tenants:
            events = self.network.window_events(sim, self.window_start, WINDOW, self._source(sim.tenant_id))
            collector = self.collectors[sim.tenant_id]
            collector.record_many(events)
            self.replay_sets[sim.tenant_id].capture(events)
            runner = ReplayRunner(collector, self.replay_sets[sim.tenant_id],
                                  HarnessClient(self.harnesses[sim.tenant_id].url, sim.tenant_id), max_cases=150)
            run = replay_active_bundle(collector, runner)
            if run is not None and run.status != "no_cases":
                self.replays.append(run)
        self.window_start += WINDOW
        # On the boundary: the window just simulated is closed, the next one not begun.
        self.clock.now = float(self.window_start)
        for tenant, c in self.collectors.items():
            if tenant in self.silenced:
                continue  # cut off: under secure aggregation its window's masked input never reaches the round
            c.close_windows()
            c.deliver(force=True)
        # Secure aggregation (every cohort's default): one round per window; the survivors attest the
        # survivor set, then unmask. A silenced tenant is a dropout.
        for _ in range(2):
            for tenant, c in self.collectors.items():
                if tenant not in self.silenced:
                    c.secagg_duty()
            run_secagg(self.ctx)
        run_merge(self.ctx)
        run_controller(self.ctx)
        self.pull_all()

    # -- what the merged signals say --------------------------------------------------------
    def cohort_rate(self, measure: str, windows: Sequence[int]) -> float:
        """Rate of ``measure`` over the whole cohort (every intent and version) in the given windows."""
        num = den = 0.0
        with transaction(self.ctx.sessions) as s:
            for cell in merged_cells(s, COHORT, self.ctx.settings):
                if cell.window_start in windows and cell.measure == measure and not cell.suppressed:
                    num += cell.estimate
                    den += cell.turns_estimate
        return num / den if den > 0 else float("nan")
