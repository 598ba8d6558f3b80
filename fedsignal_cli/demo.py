"""``fedsignal demo``: the whole self-healing loop on this machine.

Everything is real: a gRPC server with mutual TLS on a loopback port over an
embedded SQLite store, five tenants in two cohorts each running the real
collector (redaction, taxonomy, bounded contributions, OpenDP releases under
a persistent budget ledger, durable outbox), reviewers' Ed25519 keys and a
signed trust root, a candidate found from the merged DP signals, approved by
a reviewer's signature made through the admin CLI, a signed cohort bundle, a
staged rollout, and tenants pulling, verifying and resolving the bundle.

The operator and reviewer steps run the same ``fedsignal`` commands a user
types (in-process). Time is simulated: windows advance one per step, and the
server's and collectors' clocks follow, so an hour-long window takes
milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from fedsignal_cli.simulator import AgentNetwork, Hotspot, SimTenant

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
BUDGET_RHO = 2.0
__all__ = ["HOTSPOT", "TENANTS", "DemoError", "DemoSummary", "run_demo"]


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
    collector: Any
    events: int = 0
    rho_spent: float = 0.0
    bundle_version: int = 0
    # Per window: sessions whose agents resolved the candidate (canary arm).
    candidate_sessions: list[int] = field(default_factory=list)

    def artifact_source(self) -> Callable[[str], tuple[str, Sequence[Mapping[str, Any]]]]:
        """What the simulated agents call per session: the local resolve API."""
        resolver = self.collector.resolver

        def source(session_id: str) -> tuple[str, Sequence[Mapping[str, Any]]]:
            got = resolver.resolve_session(session_id)
            if got.arm == "candidate":
                self.candidate_sessions[-1] += 1
            return got.label, [json.loads(a.content) for a in got.artifacts if a.content]

        return source


def _cli(argv: Sequence[str]) -> str:
    """Run a ``fedsignal`` command in-process; its stdout, or DemoError with its stderr."""
    from fedsignal_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if code != 0:
        raise DemoError(f"`fedsignal {' '.join(argv)}` failed ({code}): {err.getvalue().strip()}")
    return out.getvalue()


def _demo_plan(default: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate's own plan with fewer, larger stages (gates and alpha unchanged)."""
    plan = dict(default)
    plan["stages"] = [
        {"percent": 10, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 50, "min_windows": 1, "min_canary_turns": 300, "min_control_turns": 100},
        {"percent": 100, "min_windows": 0, "min_canary_turns": 0, "min_control_turns": 0},
    ]
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
        self.passphrase = self.keys / "passphrase"
        self.tenants: list[TenantRun] = []
        self.ctx: Any = None
        self.running: Any = None
        self.net: AgentNetwork | None = None
        self.first_stage: list[str] = []

    # -- plumbing ---------------------------------------------------------------
    @property
    def conn(self) -> list[str]:
        return ["--server", self.running.address, "--credentials", str(self.admin_dir)]

    def _stub(self, stub_class: Any) -> Any:
        from server.admin_cli.common import mtls_channel

        return stub_class(mtls_channel(self.running.address, self.admin_dir))

    def close(self) -> None:
        for run in self.tenants:
            run.collector.close()
        if self.running is not None:
            self.running.stop(grace=2)
        if self.ctx is not None:
            self.ctx.engine.dispose()

    # -- steps --------------------------------------------------------------------
    def start_server(self) -> None:
        from server.app import build_server
        from server.context import ServerContext, ServerSettings

        self.p.step("Central server: CA, TLS, SQLite store, gRPC")
        db_url = f"sqlite:///{self.state / 'server.db'}"
        _cli(["server", "init", "--state-dir", str(self.state), "--database-url", db_url,
              "--admin-out", str(self.admin_dir), "--admin-name", "demo-admin"])
        settings = ServerSettings(database_url=db_url, state_dir=self.state, listen="127.0.0.1:0",
                                  min_tenants=self.min_tenants)
        self.ctx = ServerContext.create(settings, clock=self.clock.datetime)
        self.running = build_server(self.ctx, jobs=False)
        self.p.line(f"`fedsignal server init`: CA + server certificate (ECDSA P-256), migrations applied to "
                    f"{self.state / 'server.db'}")
        self.p.line(f"gRPC with mutual TLS on {self.running.address}; enrollment (server-auth TLS) on "
                    f"{self.running.enrollment_address}")
        self.p.line(f"k = {self.min_tenants}: a merged cell is shown only when at least {self.min_tenants} "
                    "tenants reported its window")
        self.secure_rho = self.rho / 2  # secure aggregation: a clearer sum than local mode at >= sqrt(3) x less rho
        self.p.line(secure_cohorts(self.ctx, sorted({c for _, c in TENANTS}), self.secure_rho))

    def sign_trust_root(self) -> None:
        self.p.step("Reviewers: Ed25519 keys and the signed trust root")
        self.keys.mkdir()
        self.passphrase.write_text("demo passphrase\n")
        self.passphrase.chmod(0o600)
        for name in ("alice", "bob"):
            keyid = _cli(["admin", "keygen", "--out", str(self.keys), "--name", name,
                          "--passphrase-file", str(self.passphrase)])
            self.p.line(f"{name:<6} {keyid.strip()} (encrypted with a passphrase, stays on the reviewer's machine)")
        _cli(["admin", "root", "init", "--reviewer", str(self.keys / "alice.pub.json"),
              "--reviewer", str(self.keys / "bob.pub.json"), "--key", str(self.keys / "alice.key"),
              "--key", str(self.keys / "bob.key"), "--root-threshold", "2", "--threshold", "low=1",
              "--threshold", "high=2", "--threshold", "critical=2", "--passphrase-file", str(self.passphrase),
              *self.conn])
        self.p.line("trust root v1 signed by alice and bob: low-risk bundles need 1 reviewer signature, "
                    "high/critical 2")

    def enroll_tenants(self) -> None:
        from tenant_agent import Collector, CollectorConfig, enroll
        from tenant_agent.config import BudgetConfig, ReleaseConfig

        self.p.step("Tenants enroll: one-time token -> client certificate, pinned CA, trust root, schema")
        ca_pem = (self.admin_dir / "ca.crt").read_bytes()
        for tenant_id, cohort in TENANTS:
            token = _cli(["admin", "enroll-token", "--tenant", tenant_id, "--cohort", cohort, *self.conn]).split()[0]
            tdir = self.workdir / "tenants" / tenant_id
            enrolled = enroll(self.running.enrollment_address, token, tdir, ca_pem)
            config = CollectorConfig(
                state_dir=tdir,
                server=self.running.address,
                budget=BudgetConfig(rho_per_period=BUDGET_RHO, anchor=self.clock.datetime()),
                release=ReleaseConfig(mechanism="discrete_gaussian", rho=self.rho, delta=DELTA),
            )
            self.tenants.append(TenantRun(tenant_id, cohort, Collector(config, clock=self.clock.datetime)))
            self.tenants[-1].collector.secure.register_key()  # masking key into the signed roster
            self.p.line(f"{tenant_id:<9} cohort {cohort:<7} schema v{enrolled.schema.version} "
                        f"({enrolled.schema.size} cells), root pinned")
        self.net = AgentNetwork([SimTenant(t.tenant_id, t.cohort, self.sessions) for t in self.tenants],
                                seed=self.seed, hotspot=HOTSPOT)

    def announce_telemetry(self) -> None:
        self.p.step("Agents run; collectors redact, classify, bound contributions, release under DP")
        self.p.line(f"simulated agents: {self.sessions} sessions per tenant per window; planted hotspot: wrong tool "
                    f"in '{HOTSPOT.intent}' for cohort '{HOTSPOT.cohort}'")
        self.p.line(f"each window: discrete Gaussian (OpenDP), rho = {self.rho} per release, "
                    f"budget rho = {BUDGET_RHO} per 30 days")

    def run_window(self, label: str) -> None:
        """Agents work for one window; collectors release, deliver; the server's jobs run."""
        from aggregation.dp import calibrate_scale
        from server.app import run_jobs_once

        assert self.net is not None
        start = self.clock.now
        sims = {s.tenant_id: s for s in self.net.tenants}
        events = 0
        for run in self.tenants:
            run.candidate_sessions.append(0)
            batch = self.net.window_events(sims[run.tenant_id], start, WINDOW_SECONDS, run.artifact_source())
            run.collector.record_many(batch)
            run.events += len(batch)
            events += len(batch)
        self.clock.now = start + WINDOW_SECONDS + 1
        released = 0
        for run in self.tenants:
            for outcome in run.collector.close_windows(self.clock.datetime()):
                if outcome.state != "sealed":
                    raise DemoError(f"{run.tenant_id}: window withheld: {outcome.reason}")
                run.rho_spent += outcome.rho
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
        schema = self.tenants[0].collector.schema
        sigma = calibrate_scale("discrete_gaussian", schema.max_cells_per_unit, schema.max_count_per_cell, rho=self.rho)
        when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M")
        self.p.line(f"{label} window {when} UTC: {events:>6,} events -> {released} DP releases (sigma {sigma:.2f}, "
                    f"L0 {schema.max_cells_per_unit}, Linf {schema.max_count_per_cell}), delivered and merged")

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
        self.p.line(f"{cand.id}: {cand.category} in cohort {cand.cohort} -> {artifact.kind} '{artifact.name}' "
                    f"(risk {cand.risk_class}, needs {cand.threshold} signature(s))")
        self.p.line(f"evidence: {evidence_line(json.loads(cand.evidence_json or '{}'))}")
        self.p.line(f"artifact: {artifact.content.decode()[:110].replace(chr(10), ' ')}")
        if len(found) > 1:
            self.p.line(f"({len(found) - 1} other candidate(s) proposed; left for reviewers)")
        return cand

    def review(self, cand: review_pb2.Candidate) -> review_pb2.Candidate:
        self.p.step("Review: alice shortens the rollout plan, then signs on her machine")
        plan_file = self.workdir / "demo-plan.json"
        plan_file.write_text(json.dumps(_demo_plan(json.loads(cand.rollout_plan_json))))
        _cli(["admin", "edit", cand.id, "--plan", str(plan_file), *self.conn])
        self.p.line("`fedsignal admin edit --plan`: stages 10 % -> 50 % -> 100 %, one window each, same gates "
                    "(the default low-risk plan starts at 1 %, too little traffic for this small demo)")
        seen = ["--review-state", str(self.workdir / "reviews-alice")]  # what alice was shown, on her machine
        _cli(["admin", "candidates", "show", cand.id, *seen, *self.conn])
        _cli(["admin", "approve", cand.id, "--key", str(self.keys / "alice.key"),
              "--passphrase-file", str(self.passphrase), *seen, *self.conn])
        signed = self._stub(review_pb2_grpc.ReviewServiceStub).GetCandidate(review_pb2.GetCandidateRequest(id=cand.id))
        self.p.line(f"`fedsignal admin approve {cand.id}`: signature by {', '.join(signed.signed_by)} "
                    f"-> {signed.state}")
        return signed

    def roll_out(self, cand: review_pb2.Candidate, windows: int) -> rollout_pb2.RolloutStatus:
        self.p.step("Staged rollout: sticky canary tenants and sessions, DP gates, tenants verify")
        _cli(["admin", "rollout", "start", cand.id, *self.conn])
        rollouts = self._stub(rollout_pb2_grpc.RolloutServiceStub)
        status = rollouts.ListRollouts(rollout_pb2.ListRolloutsRequest()).rollouts[0]
        self.p.line(f"rollout {status.rollout_id}: stage {status.stage_index + 1} at {status.stage_percent:g} % "
                    f"-> canary tenants {', '.join(status.canary_tenants)}")
        first = status
        self.pull_bundles(verbose=True)
        for _ in range(windows):
            self.run_window("rollout ")
            status = rollouts.GetRolloutStatus(rollout_pb2.RolloutRef(rollout_id=status.rollout_id))
            gates = "; ".join(f"{g.gate} {g.verdict}" for g in status.gates) or "no gate evidence yet"
            self.p.line(f"controller: state {status.state}, stage {status.stage_index + 1} "
                        f"({status.stage_percent:g} %), next: {status.next_decision} [{gates}]")
            self.pull_bundles(verbose=False)
        cells = self._stub(admin_pb2_grpc.AdminServiceStub).ListSignals(
            admin_pb2.ListSignalsRequest(cohort=HOTSPOT.cohort, limit=100_000)).cells
        self.p.line(f"last window, wrong-tool rate for '{HOTSPOT.intent}' by version: "
                    f"{arm_rates(cells, 'wrong_tool', HOTSPOT.intent)}")
        self.first_stage = list(first.canary_tenants)
        return status

    def pull_bundles(self, *, verbose: bool) -> None:
        for run in self.tenants:
            result = run.collector.pull_bundle()
            run.bundle_version = result.active_version
            if not verbose:
                continue
            bundle = run.collector.resolver.active()
            exposure = bundle.exposure if bundle is not None else None
            if result.active_version == 0:
                role = "no bundle for its cohort"
            elif exposure is not None and exposure.participates(run.tenant_id):
                role = f"canary: {float(exposure.session_fraction) * 100:.1f} % of its sessions get the candidate"
            elif bundle is not None and bundle.candidate is None:
                role = "no candidate for its cohort"
            else:
                role = "control: keeps the stable version"
            self.p.line(f"{run.tenant_id:<9} pulled + verified bundle v{result.active_version} "
                        f"({result.status}); {role}")

    def audit(self) -> tuple[int, bool]:
        from server.audit import iter_audit, verify_audit
        from server.db import transaction

        with transaction(self.ctx.sessions) as session:
            return sum(1 for _ in iter_audit(session)), verify_audit(session).ok


def run_demo(
    workdir: Path,
    *,
    seed: int = 7,
    baseline_windows: int = 3,
    rollout_windows: int = 4,
    sessions: int = 1500,
    rho_per_window: float = 0.1,
    min_tenants: int = 2,
    out: Callable[[str], None] = print,
) -> DemoSummary:
    """Run the loop in ``workdir`` and return what happened (also printed through ``out``)."""
    from aggregation.dp import epsilon_at_delta

    started = time.perf_counter()
    p = Printer(out, total_steps=8)
    loop = DemoLoop(workdir, p, seed=seed, sessions=sessions, rho_per_window=rho_per_window,
                    min_tenants=min_tenants, windows_total=baseline_windows + rollout_windows)
    hotspot: dict[str, Any] | None = None
    candidate_id: str | None = None
    bundle_signed = False
    rollout: dict[str, Any] | None = None
    first_stage: list[str] = []
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
            p.step("Rollout: nothing to roll out")
        else:
            candidate_id = cand.id
            hotspot = {"cohort": cand.cohort, "category": cand.category, "candidate": cand.id,
                       "artifact": cand.artifacts[0].name, "evidence": json.loads(cand.evidence_json or "{}")}
            signed = loop.review(cand)
            bundle_signed = signed.state == "bundled"
            status = loop.roll_out(signed, rollout_windows)
            first_stage = loop.first_stage
            rollout = {"rollout_id": status.rollout_id, "state": status.state, "stage_index": status.stage_index,
                       "stage_percent": status.stage_percent, "canary_tenants": list(status.canary_tenants)}
        audit_entries, audit_ok = loop.audit()
    finally:
        loop.close()

    summary = DemoSummary(
        tenants=len(loop.tenants),
        cohorts=len({c for _, c in TENANTS}),
        events=sum(r.events for r in loop.tenants),
        windows=baseline_windows + (rollout_windows if candidate_id else 0),
        rho_per_tenant={r.tenant_id: round(r.rho_spent, 6) for r in loop.tenants},
        epsilon_per_tenant={r.tenant_id: round(epsilon_at_delta(r.rho_spent, DELTA), 3) for r in loop.tenants},
        delta=DELTA,
        hotspot=hotspot,
        candidate_id=candidate_id,
        bundle_signed=bundle_signed,
        rollout=rollout,
        bundle_version_per_tenant={r.tenant_id: r.bundle_version for r in loop.tenants},
        candidate_sessions_per_window={r.tenant_id: r.candidate_sessions[baseline_windows:] for r in loop.tenants},
        first_stage_canaries=first_stage,
        audit_entries=audit_entries,
        audit_ok=audit_ok,
        seconds=time.perf_counter() - started,
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
                           rollout_windows=args.rollout_windows)
    finally:
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True, default=str))
    return 0 if summary.hotspot and summary.bundle_signed and summary.audit_ok else 1


def register(groups: Any) -> None:
    p = groups.add_parser(
        "demo",
        help="run the whole loop on this machine (server, 5 tenants, DP, review, signed bundle, rollout)",
        description="Start a real server (mutual TLS, SQLite) and five real collectors in two cohorts, feed them "
                    "simulated agent telemetry with a planted hotspot, and run the loop: DP releases, merge, "
                    "candidate, reviewer signature, signed bundle, staged rollout. Needs nothing else installed.",
    )
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    p.add_argument("--sessions", type=int, default=1500, help="sessions per tenant per window (default 1500)")
    p.add_argument("--windows", type=int, default=3, help="baseline windows before review (default 3)")
    p.add_argument("--rollout-windows", type=int, default=4,
                   help="windows run during the rollout (default 4); promotion needs evidence that no gate "
                        "is worse by more than its margin: try --sessions 6000 --rollout-windows 8")
    p.add_argument("--workdir", default=None, help="keep everything in this (empty) directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=cmd_demo)
