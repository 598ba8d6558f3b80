"""``fedsignal demo``: the whole self-healing loop on this machine, every validation stage included.

Everything is real: a gRPC server with mutual TLS on a loopback port over an
embedded SQLite store, five tenants in two cohorts each running the real
collector (redaction, taxonomy, bounded contributions, OpenDP releases under
a persistent budget ledger, durable outbox, a local replay set), an agent
harness per tenant served by the simulator on loopback, reviewers' Ed25519
keys and a signed trust root, a candidate found from the merged DP signals
and approved by a reviewer's signature, and then the path a fix takes before
and while users see it:

    hotspot -> candidate -> federated replay -> shadow -> per-intent canary -> promotion (or rollback)

The demo drives the public API: the server is assembled with
:func:`server.app.build_server`, operators and reviewers talk to it over the
same mutual-TLS gRPC services the admin CLI uses (with its reviewer-key
helpers), and tenants are :class:`tenant_agent.Collector` objects. Time is
simulated: one window per step, and the server's and collectors' clocks
follow, so an hour-long window takes milliseconds.

``--plant-regression`` swaps the candidate for one that fixes its own
category but makes another fail (tool timeouts), and shows replay stopping
it before any user sees it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsignal.v1 import admin_pb2, admin_pb2_grpc, review_pb2, review_pb2_grpc, rollout_pb2, rollout_pb2_grpc

from aggregation.errors import FedsignalError
from fedsignal_cli.demo_report import (
    DemoSummary,
    Printer,
    arm_rates,
    evidence_line,
    print_summary,
    signals_table,
)
from fedsignal_cli.simulator import AgentNetwork, HarnessServer, Hotspot, SessionArtifacts, SimTenant

if TYPE_CHECKING:
    from tenant_agent import Collector
    from tenant_agent.replay_set import ReplaySet

TENANTS: tuple[tuple[str, str], ...] = (
    ("acme", "retail"),
    ("globex", "retail"),
    ("initech", "retail"),
    ("umbrella", "travel"),
    ("hooli", "travel"),
)
HOTSPOT = Hotspot(cohort="retail", intent="refund")
WINDOW_SECONDS = 3600
DELTA = 1e-6
BUDGET_RHO = 8.0
#: Two thirds of the simulated traffic is the hotspot's intent, so a per-intent canary sees enough of it.
INTENT_WEIGHTS = (1.0, 12.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: Replay cases kept per failure category, and replayed per rollout, by each tenant.
REPLAY_CAP = 400
#: Secure aggregation: the cohort release's rho (what each ledger spends) per unit of local-mode rho per window.
SECURE_RHO_SHARE = 0.5
#: What --plant-regression ships: it routes refunds right, and makes tool calls time out 25 times as often.
REGRESSION_EFFECTS = {"timeout": 25.0}
__all__ = ["HOTSPOT", "SECURE_RHO_SHARE", "TENANTS", "DemoError", "DemoSummary", "run_demo"]


class DemoError(FedsignalError):
    """A step of the demo failed; the message names the step."""


class SimClock:
    """The simulated wall clock the server and every collector read."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def time(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@dataclass
class TenantRun:
    tenant_id: str
    cohort: str
    collector: Collector
    replay_set: ReplaySet
    harness: HarnessServer
    events: int = 0
    rho_spent: float = 0.0
    bundle_version: int = 0
    # Per window: sessions whose agents were served the candidate (canary arm) / ran it in shadow.
    candidate_sessions: list[int] = field(default_factory=list)
    shadow_sessions: list[int] = field(default_factory=list)
    replays: list[Any] = field(default_factory=list)

    def source(self, artifact: str) -> Callable[[str, str], SessionArtifacts]:
        """What the simulated agents call per session: the local resolve API, with the turn's intent."""
        resolver = self.collector.resolver

        def resolve(session_id: str, intent: str) -> SessionArtifacts:
            got = resolver.resolve(artifact, session_id, intent)
            if got.arm == "candidate":
                self.candidate_sessions[-1] += 1
            docs = [json.loads(got.content)] if got.content else []
            if got.shadow is None:
                return SessionArtifacts(got.version, docs)
            self.shadow_sessions[-1] += 1
            return SessionArtifacts(got.version, docs, got.shadow.version, [json.loads(got.shadow.content)])

        return resolve


def demo_plan(default: Mapping[str, Any], intent: str) -> dict[str, Any]:
    """The reviewer's override: shorter dwell, a shadow stage added, the live stages scoped to ``intent``.

    Gates, alpha and the mandatory replay stage stay as shipped (an override
    may add stages and narrow the scope, never loosen or drop).
    """
    plan = dict(default)
    plan["stages"] = [
        {"percent": 10, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 50, "min_windows": 1, "min_canary_turns": 300, "min_control_turns": 100},
        {"percent": 100, "min_windows": 0, "min_canary_turns": 0, "min_control_turns": 0},
    ]
    validation = [dict(v) for v in default.get("validation", [])]
    if not any(v["kind"] == "shadow" for v in validation):
        validation.append({"kind": "shadow", "min_windows": 1, "min_cases": 300, "min_tenants": 2,
                           "margin": 0.02, "share": 0.5})
    plan["validation"] = validation
    plan["intents"] = [intent]
    return plan


def secure_cohorts(ctx: Any, cohorts: Sequence[str], rho: float) -> str:
    from aggregation.dp import calibrate_scale
    from aggregation.schema import SECURE, default_schema
    from server.db import transaction
    from server.signals.schemas import publish_aggregation

    base = default_schema("demo")
    sigma = calibrate_scale("discrete_gaussian", base.max_cells_per_unit, base.max_count_per_cell, rho=rho)
    with transaction(ctx.sessions) as session:
        for cohort in cohorts:
            publish_aggregation(session, cohort, SECURE, sigma)
    return (f"secure aggregation for {', '.join(cohorts)}: each tenant adds a noise share, the sum carries the central "
            f"sigma {sigma:.2f} (rho {rho} per window); the server sees masked inputs and cohort sums only")


def round_report(ctx: Any, window_start: int) -> str:
    from sqlalchemy import select

    from server.secagg.models import RoundRecord, survivors_count

    with ctx.sessions() as session:
        rows = session.scalars(select(RoundRecord).where(RoundRecord.window_start == window_start)).all()
    parts = [f"{r.cohort}: {survivors_count(r)}/{r.roster_size} contributors, {r.phase}" for r in rows]
    return ("  secure rounds: " + "; ".join(parts) + " (server saw each tenant's masked vector, never its table)"
            if parts else "  secure rounds: none")


class DemoLoop:
    """One run of the loop; each public method is one printed step."""

    def __init__(self, workdir: Path, p: Printer, *, seed: int, sessions: int, rho_per_window: float,
                 min_tenants: int, windows_total: int) -> None:
        self.workdir, self.p = workdir, p
        self.seed, self.sessions, self.rho, self.min_tenants = seed, sessions, rho_per_window, min_tenants
        # Simulated time moves one window per step and ends before the real
        # clock does: certificates are issued at simulated time and TLS checks
        # them against the real one.
        self.clock = SimClock((math.floor(time.time() / WINDOW_SECONDS) - windows_total - 1) * WINDOW_SECONDS)
        self.state = workdir / "server"
        self.admin_dir = workdir / "admin"
        self.keys = workdir / "reviewers"
        self.tenants: list[TenantRun] = []
        self.ctx: Any = None
        self.running: Any = None
        self.channel: Any = None
        self.net: AgentNetwork | None = None
        self.artifact = ""
        self.windows = 0
        self.signers: dict[str, Any] = {}

    # -- plumbing ---------------------------------------------------------------
    def _stub(self, stub_class: Any) -> Any:
        return stub_class(self.channel)

    def close(self) -> None:
        for run in self.tenants:
            run.harness.close()
            run.replay_set.close()
            run.collector.close()
        if self.channel is not None:
            self.channel.close()
        if self.running is not None:
            self.running.stop(grace=2)
        if self.ctx is not None:
            self.ctx.engine.dispose()

    # -- steps --------------------------------------------------------------------
    def start_server(self) -> None:
        from server.admin_cli.common import mtls_channel
        from server.app import build_server
        from server.context import ServerContext, ServerSettings
        from server.db import transaction
        from server.identity import enrollment as identity
        from server.identity.ca import CertificateAuthority, write_credentials_dir
        from server.migrate import init_db

        self.p.step("Central server: CA, TLS, SQLite store, gRPC")
        db_url = f"sqlite:///{self.state / 'server.db'}"
        ca = CertificateAuthority.create(self.state, now=self.clock.datetime() - timedelta(hours=1))
        ca.write_server_cert(self.state)
        settings = ServerSettings(database_url=db_url, state_dir=self.state, listen="127.0.0.1:0",
                                  min_tenants=self.min_tenants)
        self.ctx = ServerContext.create(settings, clock=self.clock.datetime)
        init_db(self.ctx.engine)
        key, issued = ca.issue_key_and_cert("demo-admin", None, "admin", now=self.clock.datetime())
        with transaction(self.ctx.sessions) as session:
            identity.record_admin_certificate(session, "demo-admin", issued.serial, issued.not_after,
                                              "operator:demo", self.clock.datetime())
        write_credentials_dir(self.admin_dir, key, issued.certificate_pem, ca.certificate_pem,
                              {"subject": "demo-admin", "role": "admin", "serial": issued.serial})
        self.running = build_server(self.ctx, jobs=False)
        self.channel = mtls_channel(self.running.address, self.admin_dir)
        self.p.line(f"CA + server certificate (ECDSA P-256), migrations applied to {self.state / 'server.db'}")
        self.p.line(f"gRPC with mutual TLS on {self.running.address}; enrollment (server-auth TLS) on "
                    f"{self.running.enrollment_address}")
        self.p.line(f"k = {self.min_tenants}: a merged cell is shown only when at least {self.min_tenants} "
                    "tenants reported its window")
        self.secure_rho = self.rho * SECURE_RHO_SHARE  # a clearer sum than local mode at >= sqrt(3) x less rho
        self.p.line(secure_cohorts(self.ctx, sorted({c for _, c in TENANTS}), self.secure_rho))

    def sign_trust_root(self) -> None:
        from aggregation.trust_root import to_json_bytes
        from aggregation.trust_root_build import build_root, key_from_public_json
        from server.admin_cli import reviewer_keys

        self.p.step("Reviewers: Ed25519 keys and the signed trust root")
        secret = b"demo passphrase"
        review = self._stub(review_pb2_grpc.ReviewServiceStub)
        for name in ("alice", "bob"):
            public = reviewer_keys.generate(self.keys, name, secret)
            self.signers[name] = reviewer_keys.load_signer(self.keys / f"{name}.key", secret)
            self.p.line(f"{name:<6} {public.keyid} (encrypted with a passphrase, stays on the reviewer's machine)")
        current = review.GetTrustRoot(review_pb2.GetTrustRootRequest(version=0))
        server_key = key_from_public_json(json.loads(current.root)["server_key"])
        md = build_root([s.public_key for s in self.signers.values()], server_key, now=datetime.now(UTC), version=1,
                        root_threshold=2, thresholds={"low": 1, "high": 2, "critical": 2},
                        lifetime=timedelta(days=365))
        for signer in self.signers.values():
            md.sign(signer, append=True)
        review.RotateTrustRoot(review_pb2.RotateTrustRootRequest(root=to_json_bytes(md)))
        self.p.line("trust root v1 signed by alice and bob: low-risk bundles need 1 reviewer signature, "
                    "high/critical 2")

    def enroll_tenants(self) -> None:
        from tenant_agent import Collector, CollectorConfig, enroll
        from tenant_agent.config import BudgetConfig, ReleaseConfig
        from tenant_agent.replay_set import ReplaySet, ReplaySetPolicy

        self.p.step("Tenants enroll: one-time token -> client certificate, pinned CA, trust root, schema")
        ca_pem = (self.admin_dir / "ca.crt").read_bytes()
        admin = self._stub(admin_pb2_grpc.AdminServiceStub)
        sims = []
        for tenant_id, cohort in TENANTS:
            token = admin.CreateEnrollmentToken(admin_pb2.CreateEnrollmentTokenRequest(
                tenant_id=tenant_id, cohort=cohort, ttl_seconds=3600)).token
            tdir = self.workdir / "tenants" / tenant_id
            enrolled = enroll(self.running.enrollment_address, token, tdir, ca_pem)
            config = CollectorConfig(
                state_dir=tdir,
                server=self.running.address,
                budget=BudgetConfig(rho_per_period=BUDGET_RHO, anchor=self.clock.datetime()),
                release=ReleaseConfig(mechanism="discrete_gaussian", rho=self.rho, delta=DELTA),
            )
            sim = SimTenant(tenant_id, cohort, self.sessions if cohort == HOTSPOT.cohort else self.sessions // 4)
            sims.append(sim)
            self.net = AgentNetwork(sims, seed=self.seed, hotspot=HOTSPOT, intent_weights=INTENT_WEIGHTS)
            replay_set = ReplaySet(tdir, ReplaySetPolicy(enabled=True, per_category_cap=REPLAY_CAP), clock=self.clock.datetime)
            run = TenantRun(tenant_id, cohort, Collector(config, clock=self.clock.datetime), replay_set,
                            HarnessServer(self.net, sim))
            self.tenants.append(run)
            run.collector.secure.register_key()  # masking key into the signed roster
            self.p.line(f"{tenant_id:<9} cohort {cohort:<7} schema v{enrolled.schema.version} "
                        f"({enrolled.schema.size} cells), root pinned; replay set on (cap {REPLAY_CAP} per category), "
                        f"agent harness {run.harness.url}")
        self.net = AgentNetwork(sims, seed=self.seed, hotspot=HOTSPOT, intent_weights=INTENT_WEIGHTS)

    def announce_telemetry(self) -> None:
        self.p.step("Agents run; collectors redact, classify, bound contributions, release under DP")
        self.p.line(f"simulated agents: {self.sessions} sessions per retail tenant per window "
                    f"({self.sessions // 4} per travel tenant); planted hotspot: wrong tool in "
                    f"'{HOTSPOT.intent}' for cohort '{HOTSPOT.cohort}'")
        self.p.line(f"each window: one secure round per cohort; each tenant adds its share of a discrete Gaussian "
                    f"(OpenDP sampler) whose sum is the cohort release's noise at rho = {self.secure_rho}, and its "
                    f"ledger spends that (local mode would need rho = {self.rho} per tenant release for a noisier "
                    f"sum); budget rho = {BUDGET_RHO} per 30 days; failing turns are kept as replay cases, "
                    "inside each tenant (no text)")

    def run_window(self, label: str, *, replay: bool = False) -> None:
        """Agents work for one window; collectors replay if asked, release, deliver; the server's jobs run."""
        from aggregation.dp import calibrate_scale
        from server.app import run_jobs_once
        from tenant_agent.replay import HarnessClient, ReplayRunner, replay_active_bundle
        from tenant_agent.secagg import is_secure

        assert self.net is not None
        start = self.clock.now
        sims = {s.tenant_id: s for s in self.net.tenants}
        events = 0
        for run in self.tenants:
            run.candidate_sessions.append(0)
            run.shadow_sessions.append(0)
            batch = self.net.session_events(sims[run.tenant_id], start, WINDOW_SECONDS,
                                            run.source(self.artifact or "none"))
            run.collector.record_many(batch)
            run.replay_set.capture([e for e in batch if e.mode != "shadow"])
            run.events += len(batch)
            events += len(batch)
            if replay:
                runner = ReplayRunner(run.collector, run.replay_set, HarnessClient(run.harness.url, run.tenant_id),
                                      max_cases=REPLAY_CAP)
                done = replay_active_bundle(run.collector, runner)
                if done is not None and done.status != "no_cases":
                    run.replays.append(done)
        self.clock.now = start + WINDOW_SECONDS + 1
        released = 0
        spent = 0.0
        for run in self.tenants:
            for outcome in run.collector.close_windows(self.clock.datetime()):
                if outcome.state != "sealed":
                    raise DemoError(f"{run.tenant_id}: window withheld: {outcome.reason}")
                run.rho_spent += outcome.rho
                spent += outcome.rho
                released += 1
            delivered = run.collector.deliver(self.clock.datetime(), force=True)
            if delivered.pending:
                raise DemoError(f"{run.tenant_id}: {delivered.pending} report(s) not acknowledged")
        for _ in range(2):  # secure rounds: attest the survivor set, then unmask
            for run in self.tenants:
                run.collector.secagg_duty(self.clock.datetime())
        errors = {k: v for k, v in run_jobs_once(self.ctx).items() if v}
        if errors:
            raise DemoError(f"server jobs failed: {errors}")
        self.p.line(round_report(self.ctx, int(start) // WINDOW_SECONDS * WINDOW_SECONDS))
        self.windows += 1
        schema = self.tenants[0].collector.schema
        if is_secure(schema):  # the cohort's published noise: the sum of the tenants' shares
            sigma, what = schema.noise_scale, "masked noise shares, cohort sigma"
        else:
            sigma = calibrate_scale("discrete_gaussian", schema.max_cells_per_unit, schema.max_count_per_cell,
                                    rho=self.rho)
            what = "per-tenant sigma"
        when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M")
        each = spent / released if released else 0.0
        self.p.line(f"{label} window {when} UTC: {events:>6,} turns -> {released} DP releases ({what} {sigma:.2f}, "
                    f"rho {each:.2f} spent per tenant, L0 {schema.max_cells_per_unit}, "
                    f"Linf {schema.max_count_per_cell}), delivered and merged")

    def show_signals(self) -> None:
        self.p.step("Server merges cohort signals (noisy sums, variances, k-suppression, intervals)")
        admin = self._stub(admin_pb2_grpc.AdminServiceStub)
        signals_table(admin.ListSignals(admin_pb2.ListSignalsRequest(limit=8)).cells, self.p)

    def find_candidate(self) -> review_pb2.Candidate | None:
        self.p.step("Hotspot rules -> candidate artifact (remediation map)")
        review = self._stub(review_pb2_grpc.ReviewServiceStub)
        found = review.ListCandidates(review_pb2.ListCandidatesRequest(state="proposed")).candidates
        hot = [c for c in found if c.cohort == HOTSPOT.cohort and c.category == "wrong_tool"
               and any(HOTSPOT.intent in a.name for a in c.artifacts)]
        if not hot:
            self.p.line(f"no candidate for the planted hotspot (found {len(found)} other candidate(s))")
            return None
        cand = hot[0]
        artifact = cand.artifacts[0]
        self.artifact = artifact.name
        self.p.line(f"{cand.id}: {cand.category} in cohort {cand.cohort} -> {artifact.kind} '{artifact.name}' "
                    f"(risk {cand.risk_class}, needs {cand.threshold} signature(s))")
        self.p.line(f"evidence: {evidence_line(json.loads(cand.evidence_json or '{}'))}")
        self.p.line(f"artifact: {json.dumps(json.loads(artifact.content), sort_keys=True)}")
        if len(found) > 1:
            self.p.line(f"({len(found) - 1} other candidate(s) proposed; left for reviewers)")
        return cand

    def review(self, cand: review_pb2.Candidate, *, plant_regression: bool) -> review_pb2.Candidate:
        self.p.step("Review: alice scopes the plan to the intent, adds a shadow stage, signs on her machine")
        review = self._stub(review_pb2_grpc.ReviewServiceStub)
        plan = demo_plan(json.loads(cand.rollout_plan_json), HOTSPOT.intent)
        artifacts = []
        if plant_regression:
            art = cand.artifacts[0]
            content = {**json.loads(art.content), "simulated_effects": REGRESSION_EFFECTS}
            artifacts = [review_pb2.ArtifactSpec(name=art.name, kind=art.kind,
                                                 content=json.dumps(content, sort_keys=True).encode())]
            self.p.line(f"--plant-regression: the artifact now also carries simulated_effects "
                        f"{json.dumps(REGRESSION_EFFECTS)} (fixes refunds' routing, breaks tool timeouts)")
        review.EditCandidate(review_pb2.EditCandidateRequest(id=cand.id, artifacts=artifacts,
                                                             rollout_plan_json=json.dumps(plan)))
        kinds = " -> ".join(v["kind"] for v in plan["validation"])
        self.p.line(f"plan: {kinds} -> live stages 10 % -> 50 % -> 100 % (one window each) for intent "
                    f"'{HOTSPOT.intent}' only; gates and alpha as shipped; replay cannot be dropped")
        # alice's tool, as `fedsignal admin candidates show` then `admin approve`: it rebuilds the approval
        # from what it shows, refuses a server payload that differs, and signs only content shown unchanged.
        from server.admin_cli import approval

        records = approval.ReviewRecords(self.state / "reviews" / "alice", self.running.address)
        shown = review.GetCandidate(review_pb2.GetCandidateRequest(id=cand.id))
        _text, _previous, seen = approval.show_and_record(shown, records, datetime.now(UTC))
        current = review.GetCandidate(review_pb2.GetCandidateRequest(id=cand.id))
        decision = approval.decide(current, records, datetime.now(UTC))
        if decision.payload is None:
            raise decision.refusal or approval.NotYetReviewed(f"candidate {cand.id}: nothing was signed")
        payload = decision.payload
        self.p.line(f"alice's tool rebuilt the approval from what it showed: digest {seen.digest[:16]} "
                    "(equal to the server's payload byte for byte)")
        sig = self.signers["alice"].sign(payload)
        signed = review.ApproveCandidate(review_pb2.ApproveCandidateRequest(
            id=cand.id, keyid=sig.keyid, signature=bytes.fromhex(sig.signature), signing_payload=payload))
        self.p.line(f"approved {cand.id}: signature by {', '.join(signed.signed_by)} -> {signed.state}")
        return signed

    def _status(self, rollout_id: str) -> rollout_pb2.RolloutStatus:
        return self._stub(rollout_pb2_grpc.RolloutServiceStub).GetRolloutStatus(
            rollout_pb2.RolloutRef(rollout_id=rollout_id))

    def _record(self, rollout_id: str) -> Any:
        from server.db import transaction
        from server.rollout.models import RolloutRecord

        with transaction(self.ctx.sessions) as session:
            rec = session.get(RolloutRecord, rollout_id)
            session.expunge(rec)
            return rec

    def start_rollout(self, cand: review_pb2.Candidate) -> str:
        status = self._stub(rollout_pb2_grpc.RolloutServiceStub).StartRollout(
            rollout_pb2.StartRolloutRequest(candidate_id=cand.id))
        self.pull_bundles()
        return str(status.rollout_id)

    def replay(self, rollout_id: str) -> bool:
        """Federated replay; True when it passed (the rollout moved on)."""
        self.p.step("Federated replay: each tenant replays its own incidents through its own agent harness")
        for _ in range(3):
            self.run_window("replay  ", replay=True)
            self.pull_bundles()
            if self._record(rollout_id).phase != "replay" or self._record(rollout_id).state != "running":
                break
        for run in self.tenants:
            for r in run.replays:
                for i, text in enumerate(r.summary_lines()):
                    self.p.line(f"{run.tenant_id:<9} {text}" if i == 0 else f"{'':<9} {text}")
        rec = self._record(rollout_id)
        a = json.loads(rec.last_assessment_json)
        if rec.phase == "replay":
            a = json.loads(rec.last_assessment_json)
        else:
            a = json.loads(rec.validation_json).get("replay", a)
        fix = a.get("fix") or {}
        self.p.line(f"merged with DP noise ({a.get('tenants', 0)} tenants, {a.get('candidate_cases', 0):.0f} "
                    f"cases per arm, noisy): {a.get('category')} rate change candidate - stable "
                    f"{fix.get('estimate', 0):+.3f} [{_num(fix.get('low'))}, {_num(fix.get('high'))}]")
        worse = [v for v in a.get("verdicts", []) if v["verdict"] == "harm"]
        for v in worse:
            self.p.line(f"  regression: {v['gate']} {v['estimate']:+.3f} [{_num(v['low'])}, {_num(v['high'])}] "
                        f"(margin {v['margin']:g})")
        self.p.line(f"replay gate: {a.get('decision')} - {a.get('reason')}")
        if rec.state == "rolled_back":
            served = sum(sum(r.candidate_sessions) + sum(r.shadow_sessions) for r in self.tenants)
            self.p.line(f"rolled back by replay: {served} sessions were ever served the candidate (or ran it in "
                        "shadow); tenants were told by a newer signed bundle")
            return False
        return rec.phase != "replay"

    def shadow(self, rollout_id: str) -> bool:
        self.p.step("Shadow: a sticky share of sessions runs the candidate beside the live path, output discarded")
        for _ in range(4):
            self.run_window("shadow  ")
            self.pull_bundles()
            rec = self._record(rollout_id)
            if rec.phase != "shadow" or rec.state != "running":
                break
            a = json.loads(rec.last_assessment_json)
            self.p.line(f"controller: {a.get('decision')} - {a.get('reason')}")
        served = sum(r.shadow_sessions[-1] for r in self.tenants)
        self.p.line(f"sessions running the candidate in shadow (last window): {served}; served the candidate: "
                    f"{sum(r.candidate_sessions[-1] for r in self.tenants)} (shadow is never canary exposure)")
        rec = self._record(rollout_id)
        a = json.loads(rec.validation_json).get("shadow") if rec.phase == "live" else json.loads(
            rec.last_assessment_json)
        a = a or {}
        for v in a.get("verdicts", []):
            self.p.line(f"  paired {v['gate']:<16} shadow - live {v['estimate']:+.4f} [{_num(v['low'])}, "
                        f"{_num(v['high'])}] ({v['verdict']})")
        self.p.line(f"shadow gate: {a.get('decision')} - {a.get('reason')}")
        return rec.phase == "live" and rec.state == "running"

    def canary(self, rollout_id: str, windows: int) -> rollout_pb2.RolloutStatus:
        self.p.step(f"Per-intent canary: only '{HOTSPOT.intent}' sessions of the stage's tenants get the candidate")
        status = self._status(rollout_id)
        for _ in range(windows):
            before, share = self._status(rollout_id), 100.0 * self._record(rollout_id).session_fraction
            self.run_window("canary  ")
            status = self._status(rollout_id)
            served = ", ".join(f"{r.tenant_id} {r.candidate_sessions[-1]}" for r in self.tenants
                               if r.cohort == HOTSPOT.cohort)
            n = sum(1 for r in self.tenants if r.cohort == HOTSPOT.cohort)
            k = len(before.canary_tenants)
            self.p.line(f"stage {before.stage_index + 1} at {before.stage_percent:g} % of the cohort: {k} of {n} "
                        f"tenants ({', '.join(before.canary_tenants)}) put {share:.1f} % of their "
                        f"'{HOTSPOT.intent}' sessions on the candidate ({k}/{n} x {share:.1f} % = "
                        f"{100.0 * k / n * share / 100.0:.0f} %; the rest of their sessions is the control); "
                        f"served: {served}")
            gates = "; ".join(f"{g.gate} {g.verdict}" for g in status.gates) or "no gate evidence yet"
            self.p.line(f"controller: {status.state}, next: {status.next_decision} [{gates}]")
            self.pull_bundles()
            if status.state != "running":
                break
        cells = self._stub(admin_pb2_grpc.AdminServiceStub).ListSignals(
            admin_pb2.ListSignalsRequest(cohort=HOTSPOT.cohort, limit=100_000)).cells
        self.p.line(f"last window, wrong-tool rate for '{HOTSPOT.intent}' by version: "
                    f"{arm_rates(cells, 'wrong_tool', HOTSPOT.intent)}")
        if status.state == "promoted":
            self.p.line("promoted: the candidate entered the 100 % stage, i.e. it is now the stable version for "
                        f"every '{HOTSPOT.intent}' session of the cohort")
        elif status.state == "running":
            self.p.line("not promoted yet: promotion needs every gate's interval to exclude harm beyond its margin; "
                        "run longer with --rollout-windows")
        return status

    def pull_bundles(self) -> None:
        for run in self.tenants:
            run.bundle_version = run.collector.pull_bundle().active_version

    def audit(self) -> tuple[int, bool]:
        from server.audit import iter_audit, verify_audit
        from server.db import transaction

        with transaction(self.ctx.sessions) as session:
            return sum(1 for _ in iter_audit(session)), verify_audit(session).ok


def _num(x: Any) -> str:
    return "-inf/inf" if x is None else f"{float(x):+.3f}"


def run_demo(
    workdir: Path,
    *,
    seed: int = 7,
    baseline_windows: int = 3,
    rollout_windows: int = 12,
    sessions: int = 2000,
    rho_per_window: float = 0.5,
    min_tenants: int = 2,
    plant_regression: bool = False,
    out: Callable[[str], None] = print,
) -> DemoSummary:
    """Run the loop in ``workdir`` and return what happened (also printed through ``out``)."""
    from aggregation.dp import epsilon_at_delta

    started = time.perf_counter()
    p = Printer(out, total_steps=10)
    loop = DemoLoop(workdir, p, seed=seed, sessions=sessions, rho_per_window=rho_per_window,
                    min_tenants=min_tenants, windows_total=baseline_windows + rollout_windows + 8)
    hotspot: dict[str, Any] | None = None
    candidate_id: str | None = None
    bundle_signed = False
    rollout: dict[str, Any] | None = None
    stages: list[str] = []
    try:
        loop.start_server()
        loop.sign_trust_root()
        loop.enroll_tenants()
        loop.announce_telemetry()
        for _ in range(baseline_windows):
            loop.run_window("baseline")
        loop.show_signals()
        cand = loop.find_candidate()
        if cand is None:
            p.step("Review: nothing to review")
        else:
            candidate_id = cand.id
            hotspot = {"cohort": cand.cohort, "category": cand.category, "candidate": cand.id,
                       "artifact": cand.artifacts[0].name, "evidence": json.loads(cand.evidence_json or "{}")}
            signed = loop.review(cand, plant_regression=plant_regression)
            bundle_signed = signed.state == "bundled"
            rid = loop.start_rollout(signed)
            stages.append("replay")
            if loop.replay(rid):
                stages.append("shadow")
                if loop.shadow(rid):
                    stages.append("canary")
                    loop.canary(rid, rollout_windows)
            status = loop._status(rid)
            rec = loop._record(rid)
            rollout = {"rollout_id": status.rollout_id, "state": status.state, "stage_index": status.stage_index,
                       "stage_percent": status.stage_percent, "canary_tenants": list(status.canary_tenants),
                       "phase": rec.phase, "stages_run": stages,
                       "replay_statuses": sorted({r.status for t in loop.tenants for r in t.replays})}
        audit_entries, audit_ok = loop.audit()
    finally:
        loop.close()

    summary = DemoSummary(
        tenants=len(loop.tenants),
        cohorts=len({c for _, c in TENANTS}),
        events=sum(r.events for r in loop.tenants),
        windows=loop.windows,
        rho_per_tenant={r.tenant_id: round(r.rho_spent, 6) for r in loop.tenants},
        epsilon_per_tenant={r.tenant_id: round(epsilon_at_delta(r.rho_spent, DELTA), 3) for r in loop.tenants},
        delta=DELTA,
        hotspot=hotspot,
        candidate_id=candidate_id,
        bundle_signed=bundle_signed,
        rollout=rollout,
        bundle_version_per_tenant={r.tenant_id: r.bundle_version for r in loop.tenants},
        candidate_sessions_per_window={r.tenant_id: r.candidate_sessions[baseline_windows:] for r in loop.tenants},
        first_stage_canaries=[],
        audit_entries=audit_entries,
        audit_ok=audit_ok,
        seconds=time.perf_counter() - started,
        shadow_sessions_per_window={r.tenant_id: r.shadow_sessions[baseline_windows:] for r in loop.tenants},
        replays={r.tenant_id: [{"status": x.status, "cases": x.cases,
                                "stable_failing": x.failing("stable", x.category),
                                "candidate_failing": x.failing("candidate", x.category)} for x in r.replays]
                 for r in loop.tenants},
    )
    print_summary(summary, p)
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        workdir = Path(args.workdir)
        if workdir.exists() and any(workdir.iterdir()):
            raise DemoError(f"{workdir} is not empty; give an empty or new directory")
        workdir.mkdir(parents=True, exist_ok=True)
        cleanup = False
    else:
        workdir = Path(tempfile.mkdtemp(prefix="fedsignal-demo-"))
        cleanup = not args.keep
    print(f"fedsignal demo: the whole loop on this machine (seed {args.seed}, work dir {workdir})")
    try:
        summary = run_demo(workdir, seed=args.seed, sessions=args.sessions, baseline_windows=args.windows,
                           rollout_windows=args.rollout_windows, plant_regression=args.plant_regression)
    finally:
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True, default=str))
    closed = summary.rollout is not None and summary.rollout["state"] in ("promoted", "rolled_back")
    return 0 if summary.hotspot and summary.bundle_signed and summary.audit_ok and closed else 1


def register(groups: Any) -> None:
    p = groups.add_parser(
        "demo",
        help="run the whole loop on this machine (server, 5 tenants, DP, review, replay, shadow, canary)",
        description="Start a real server (mutual TLS, SQLite) and five real collectors in two cohorts, each with "
                    "a simulated agent harness on loopback, feed them simulated agent telemetry with a planted "
                    "hotspot, and run the loop: DP releases, merge, candidate, reviewer signature, signed bundle, "
                    "federated replay, shadow, per-intent canary, promotion or rollback. Needs nothing else "
                    "installed.",
    )
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    p.add_argument("--sessions", type=int, default=2000,
                   help="sessions per retail tenant per window (travel tenants: a quarter; default 2000)")
    p.add_argument("--windows", type=int, default=3, help="baseline windows before review (default 3)")
    p.add_argument("--rollout-windows", type=int, default=12,
                   help="most windows the live canary runs (default 12; it stops at promotion or rollback); promotion needs every gate's interval "
                        "to exclude harm beyond its margin")
    p.add_argument("--plant-regression", action="store_true",
                   help="ship a candidate that fixes its own category but breaks another (tool timeouts), and "
                        "watch replay stop it before any user sees it")
    p.add_argument("--workdir", default=None, help="keep everything in this (empty) directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=cmd_demo)
