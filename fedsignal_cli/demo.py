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
from fedsignal_cli.simulator import AgentNetwork, Hotspot, SimTenant

TENANTS: tuple[tuple[str, str], ...] = (
    ("acme", "retail"),
    ("globex", "retail"),
    ("initech", "retail"),
    ("umbrella", "travel"),
    ("hooli", "travel"),
)
HOTSPOT = Hotspot(cohort="retail", intent="refund")


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
    releases: int = 0
    bundle_version: int = 0
    # Per window: sessions whose agents resolved the candidate (canary arm).
    candidate_sessions: list[int] = field(default_factory=list)


@dataclass
class DemoSummary:
    tenants: int
    cohorts: int
    events: int
    windows: int
    rho_per_tenant: dict[str, float]
    epsilon_per_tenant: dict[str, float]
    delta: float
    hotspot: dict[str, Any] | None
    candidate_id: str | None
    bundle_signed: bool
    rollout: dict[str, Any] | None
    bundle_version_per_tenant: dict[str, int]
    # Per tenant, per rollout window: sessions that resolved the candidate.
    candidate_sessions_per_window: dict[str, list[int]]
    first_stage_canaries: list[str]
    audit_entries: int
    audit_ok: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Printer:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out

    def step(self, n: int, total: int, title: str) -> None:
        self.out(f"\n[{n}/{total}] {title}")

    def line(self, text: str = "") -> None:
        self.out(f"      {text}" if text else "")


def _cli(argv: Sequence[str]) -> str:
    """Run a ``fedsignal`` command in-process; its stdout, or DemoError with its stderr."""
    from fedsignal_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if code != 0:
        raise DemoError(f"`fedsignal {' '.join(argv)}` failed ({code}): {err.getvalue().strip()}")
    return out.getvalue()


def _rho_to_epsilon(rho: float, delta: float) -> float:
    """(ε, δ) of a total zCDP ρ through OpenDP's conversion (tighter than ρ + 2√(ρ ln 1/δ))."""
    if rho <= 0:
        return 0.0
    from aggregation.dp import epsilon_at_delta

    return epsilon_at_delta(rho, delta)


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
    from sqlalchemy import select

    from server.app import build_server, run_jobs_once
    from server.audit import verify_audit
    from server.context import ServerContext, ServerSettings
    from server.db import transaction
    from tenant_agent import Collector, CollectorConfig, enroll
    from tenant_agent.config import BudgetConfig, ReleaseConfig

    started = time.perf_counter()
    p = Printer(out)
    total_steps = 8
    window = 3600
    # Simulated time moves one window per step and ends before the real clock
    # does: certificates are issued at simulated time and TLS checks them
    # against the real one.
    clock = SimClock((math.floor(time.time() / window) - baseline_windows - rollout_windows - 1) * window)
    delta = 1e-6

    state = workdir / "server"
    admin_dir = workdir / "admin"
    db_url = f"sqlite:///{state / 'server.db'}"
    common = ["--state-dir", str(state), "--database-url", db_url]

    # -- 1. server ------------------------------------------------------------
    p.step(1, total_steps, "Central server: CA, TLS, SQLite store, gRPC")
    _cli(["server", "init", *common, "--admin-out", str(admin_dir), "--admin-name", "demo-admin"])
    settings = ServerSettings(database_url=db_url, state_dir=state, listen="127.0.0.1:0", min_tenants=min_tenants)
    ctx = ServerContext.create(settings, clock=clock.datetime)
    running = build_server(ctx, jobs=False)
    address = running.address
    conn = ["--server", address, "--credentials", str(admin_dir)]
    p.line(f"`fedsignal server init`: CA + server certificate (ECDSA P-256), migrations applied to {state / 'server.db'}")
    p.line(f"gRPC with mutual TLS on {address}; enrollment (server-auth TLS) on {running.enrollment_address}")
    p.line(f"k = {min_tenants}: a merged cell is shown only when at least {min_tenants} tenants reported its window")

    collectors: list[TenantRun] = []
    first_stage: list[str] = []
    try:
        # -- 2. reviewers and trust root --------------------------------------
        p.step(2, total_steps, "Reviewers: Ed25519 keys and the signed trust root")
        keys = workdir / "reviewers"
        keys.mkdir()
        passphrase = keys / "passphrase"
        passphrase.write_text("demo passphrase\n")
        passphrase.chmod(0o600)
        for name in ("alice", "bob"):
            keyid = _cli(["admin", "keygen", "--out", str(keys), "--name", name, "--passphrase-file", str(passphrase)])
            p.line(f"{name:<6} {keyid.strip()} (private key encrypted with a passphrase, stays on the reviewer's machine)")
        _cli(["admin", "root", "init", "--reviewer", str(keys / "alice.pub.json"), "--reviewer", str(keys / "bob.pub.json"),
              "--key", str(keys / "alice.key"), "--key", str(keys / "bob.key"), "--root-threshold", "2",
              "--threshold", "low=1", "--threshold", "high=2", "--threshold", "critical=2",
              "--passphrase-file", str(passphrase), *conn])
        p.line("trust root v1 signed by alice and bob: low-risk bundles need 1 reviewer signature, high/critical 2")

        # -- 3. enrollment ----------------------------------------------------
        p.step(3, total_steps, "Tenants enroll: one-time token -> client certificate, pinned CA, trust root, schema")
        ca_pem = (admin_dir / "ca.crt").read_bytes()
        for tenant_id, cohort in TENANTS:
            token = _cli(["admin", "enroll-token", "--tenant", tenant_id, "--cohort", cohort, *conn]).split()[0]
            tdir = workdir / "tenants" / tenant_id
            enrolled = enroll(running.enrollment_address, token, tdir, ca_pem)
            config = CollectorConfig(
                state_dir=tdir,
                server=address,
                budget=BudgetConfig(rho_per_period=2.0, anchor=clock.datetime()),
                release=ReleaseConfig(mechanism="discrete_gaussian", rho=rho_per_window, delta=delta),
            )
            collector = Collector(config, clock=clock.time)
            collectors.append(TenantRun(tenant_id, cohort, collector))
            p.line(f"{tenant_id:<9} cohort {cohort:<7} schema v{enrolled.schema.version} "
                   f"({enrolled.schema.size} cells), root pinned")

        net = AgentNetwork(
            [SimTenant(t.tenant_id, t.cohort, sessions) for t in collectors], seed=seed, hotspot=HOTSPOT
        )
        sims = {s.tenant_id: s for s in net.tenants}

        def artifact_source(run: TenantRun) -> Callable[[str], tuple[str, Sequence[Mapping[str, Any]]]]:
            resolver = run.collector.resolver

            def source(session_id: str) -> tuple[str, Sequence[Mapping[str, Any]]]:
                got = resolver.resolve_session(session_id)
                if got.arm == "candidate":
                    run.candidate_sessions[-1] += 1
                return got.label, [json.loads(a.content) for a in got.artifacts if a.content]

            return source

        def one_window(label: str) -> None:
            start = clock.now
            counts = {}
            for run in collectors:
                run.candidate_sessions.append(0)
                events = net.window_events(sims[run.tenant_id], start, window, artifact_source(run))
                run.collector.record_many(events)
                run.events += len(events)
                counts[run.tenant_id] = len(events)
            clock.now = start + window + 1
            released = 0
            scale = ""
            for run in collectors:
                for outcome in run.collector.close_windows(clock.now):
                    if outcome.state == "sealed":
                        run.rho_spent += outcome.rho
                        run.releases += 1
                        released += 1
                    else:
                        raise DemoError(f"{run.tenant_id}: window withheld: {outcome.reason}")
                delivered = run.collector.deliver(clock.now, force=True)
                if getattr(delivered, "pending", 0):
                    raise DemoError(f"{run.tenant_id}: {delivered.pending} report(s) not acknowledged")
                if not scale:
                    scale = _release_scale(run.collector, rho_per_window)
            errors = {k: v for k, v in run_jobs_once(ctx).items() if v}
            if errors:
                raise DemoError(f"server jobs failed: {errors}")
            when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M")
            p.line(f"{label} window {when} UTC: {sum(counts.values()):>6,} events -> {released} DP releases "
                   f"({scale}), delivered and merged")

        # -- 4. telemetry and DP releases -------------------------------------
        p.step(4, total_steps, "Agents run; collectors redact, classify, bound contributions, release under DP")
        p.line(f"simulated agents: {sessions} sessions per tenant per window; planted hotspot: wrong tool in "
               f"'{HOTSPOT.intent}' for cohort '{HOTSPOT.cohort}'")
        p.line(f"each window: discrete Gaussian (OpenDP), rho = {rho_per_window} per release, budget rho = 2.0 per 30 days")
        for _ in range(baseline_windows):
            one_window("baseline")

        # -- 5. merged signals --------------------------------------------------
        p.step(5, total_steps, "Server merges cohort signals (noisy sums, variances, k-suppression, intervals)")
        admin = admin_pb2_grpc.AdminServiceStub(_admin_channel(admin_dir, address))
        signals = admin.ListSignals(admin_pb2.ListSignalsRequest(limit=8))
        p.line(f"{'cohort':<7} {'window':<16} {'measure':<17} {'intent':<13} {'version':<9} "
               f"{'rate':>6}  {'95% interval':<15} tenants")
        for cell in signals.cells[:8]:
            when = datetime.fromtimestamp(cell.window_start, UTC).strftime("%m-%d %H:%M")
            p.line(f"{cell.cohort:<7} {when:<16} {cell.measure:<17} {cell.slice.get('intent', ''):<13} "
                   f"{cell.slice.get('artifact_version', ''):<9} {cell.rate:>6.3f}  "
                   f"[{cell.rate_low:.3f}, {cell.rate_high:.3f}]  {cell.tenants}")

        # -- 6. candidate ---------------------------------------------------------
        p.step(6, total_steps, "Hotspot rules -> candidate artifact (remediation map)")
        review = review_pb2_grpc.ReviewServiceStub(_admin_channel(admin_dir, address))
        found = review.ListCandidates(review_pb2.ListCandidatesRequest(state="proposed"))
        hot = [c for c in found.candidates if c.cohort == HOTSPOT.cohort and c.category == "wrong_tool"
               and HOTSPOT.intent in json.loads(c.evidence_json or "{}").get("artifact_name", c.artifacts[0].name)]
        hotspot_info: dict[str, Any] | None = None
        candidate_id: str | None = None
        if not hot:
            p.line(f"no candidate for the planted hotspot (found {len(found.candidates)} other candidate(s))")
        else:
            cand = hot[0]
            candidate_id = cand.id
            evidence = json.loads(cand.evidence_json or "{}")
            hotspot_info = {"cohort": cand.cohort, "category": cand.category, "candidate": cand.id,
                            "artifact": cand.artifacts[0].name, "evidence": evidence}
            p.line(f"{cand.id}: {cand.category} in cohort {cand.cohort} -> {cand.artifacts[0].kind} "
                   f"'{cand.artifacts[0].name}' (risk {cand.risk_class}, needs {cand.threshold} signature(s))")
            p.line(f"evidence: {_evidence_line(evidence)}")
            p.line(f"artifact: {cand.artifacts[0].content.decode()[:110].replace(chr(10), ' ')}")
            others = [c for c in found.candidates if c.id != cand.id]
            if others:
                p.line(f"({len(others)} other candidate(s) proposed; left for reviewers)")

        rollout_info: dict[str, Any] | None = None
        bundle_signed = False
        if candidate_id is not None:
            # -- 7. review -----------------------------------------------------
            p.step(7, total_steps, "Review: alice shortens the rollout plan, then signs on her machine")
            plan_file = workdir / "demo-plan.json"
            plan_file.write_text(json.dumps(_demo_plan(json.loads(cand.rollout_plan_json))))
            _cli(["admin", "edit", candidate_id, "--plan", str(plan_file), *conn])
            p.line("`fedsignal admin edit --plan`: stages 10 % -> 50 % -> 100 %, one window each, same gates "
                   "(the default low-risk plan starts at 1 %, too little traffic for this small demo)")
            _cli(["admin", "approve", candidate_id, "--key", str(keys / "alice.key"),
                  "--passphrase-file", str(passphrase), *conn])
            cand = review.GetCandidate(review_pb2.GetCandidateRequest(id=candidate_id))
            bundle_signed = cand.state == "bundled"
            p.line(f"`fedsignal admin approve {candidate_id}`: signature by {', '.join(cand.signed_by)} "
                   f"-> {cand.state}")

            # -- 8. rollout ----------------------------------------------------
            p.step(8, total_steps, "Staged rollout: sticky canary tenants and sessions, DP gates, tenants verify")
            _cli(["admin", "rollout", "start", candidate_id, *conn])
            rollouts = rollout_pb2_grpc.RolloutServiceStub(_admin_channel(admin_dir, address))
            status = rollouts.ListRollouts(rollout_pb2.ListRolloutsRequest()).rollouts[0]
            first_stage = list(status.canary_tenants)
            p.line(f"rollout {status.rollout_id}: stage {status.stage_index + 1} at {status.stage_percent:g} % "
                   f"-> canary tenants {', '.join(status.canary_tenants)}")
            _pull_all(collectors, p)
            for _ in range(rollout_windows):
                one_window("rollout ")
                status = rollouts.GetRolloutStatus(rollout_pb2.RolloutRef(rollout_id=status.rollout_id))
                gates = "; ".join(f"{g.gate} {g.verdict}" for g in status.gates) or "no gate evidence yet"
                p.line(f"controller: state {status.state}, stage {status.stage_index + 1} "
                       f"({status.stage_percent:g} %), next: {status.next_decision} [{gates}]")
                _pull_all(collectors, p, quiet=True)
            if status.state == "promoted":
                before = _hotspot_rate(admin, first=True)
                after = _hotspot_rate(admin, first=False)
                p.line(f"promoted: wrong-tool rate for '{HOTSPOT.intent}' in {HOTSPOT.cohort}: "
                       f"{before} in the first window, {after} in the last")
            rollout_info = {"rollout_id": status.rollout_id, "state": status.state,
                            "stage_index": status.stage_index, "stage_percent": status.stage_percent,
                            "canary_tenants": list(status.canary_tenants)}
        else:
            p.step(7, total_steps, "Review: nothing to review")
            p.step(8, total_steps, "Rollout: nothing to roll out")


        with transaction(ctx.sessions) as session:
            verdict = verify_audit(session)
            from server.models.audit import AuditRecord

            audit_entries = len(session.scalars(select(AuditRecord.seq)).all())
    finally:
        for run in collectors:
            run.collector.close()
        running.stop(grace=2)
        ctx.engine.dispose()

    summary = DemoSummary(
        tenants=len(collectors),
        cohorts=len({c for _, c in TENANTS}),
        events=sum(r.events for r in collectors),
        windows=baseline_windows + (rollout_windows if candidate_id else 0),
        rho_per_tenant={r.tenant_id: round(r.rho_spent, 6) for r in collectors},
        epsilon_per_tenant={r.tenant_id: round(_rho_to_epsilon(r.rho_spent, delta), 3) for r in collectors},
        delta=delta,
        hotspot=hotspot_info,
        candidate_id=candidate_id,
        bundle_signed=bundle_signed,
        rollout=rollout_info,
        bundle_version_per_tenant={r.tenant_id: r.bundle_version for r in collectors},
        candidate_sessions_per_window={r.tenant_id: r.candidate_sessions[baseline_windows:] for r in collectors},
        first_stage_canaries=first_stage,
        audit_entries=audit_entries,
        audit_ok=verdict.ok,
        seconds=time.perf_counter() - started,
    )
    _print_summary(summary, p)
    return summary


def _demo_plan(default: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate's own plan with fewer, larger stages (gates and alpha unchanged)."""
    plan = dict(default)
    plan["stages"] = [
        {"percent": 10, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 50, "min_windows": 1, "min_canary_turns": 300, "min_control_turns": 100},
        {"percent": 100, "min_windows": 0, "min_canary_turns": 0, "min_control_turns": 0},
    ]
    return plan


def _hotspot_rate(admin: Any, *, first: bool) -> str:
    """The merged wrong-tool rate of the hotspot slice (all artifact versions) in the first or last window."""
    cells = admin.ListSignals(admin_pb2.ListSignalsRequest(cohort=HOTSPOT.cohort, limit=100000)).cells
    windows: dict[int, list[float]] = {}
    for c in cells:
        if c.measure == "wrong_tool" and c.slice.get("intent") == HOTSPOT.intent and not c.suppressed:
            windows.setdefault(c.window_start, []).extend([c.estimate, c.estimate / c.rate if c.rate > 0 else 0.0])
    if not windows:
        return "n/a"
    wrong, turns = 0.0, 0.0
    pairs = windows[min(windows) if first else max(windows)]
    for i in range(0, len(pairs), 2):
        wrong += pairs[i]
        turns += pairs[i + 1]
    return f"{wrong / turns:.3f}" if turns > 0 else "n/a"


def _admin_channel(admin_dir: Path, address: str) -> Any:
    from server.admin_cli.common import mtls_channel

    return mtls_channel(address, admin_dir)


def _release_scale(collector: Any, rho: float) -> str:
    from aggregation.dp import calibrate_scale

    schema = collector.schema
    sigma = calibrate_scale("discrete_gaussian", schema.max_cells_per_unit, schema.max_count_per_cell, rho=rho)
    return f"sigma {sigma:.2f}, L0 {schema.max_cells_per_unit}, Linf {schema.max_count_per_cell}"


def _pull_all(collectors: Sequence[TenantRun], p: Printer, *, quiet: bool = False) -> None:
    for run in collectors:
        result = run.collector.pull_bundle()
        run.bundle_version = result.active_version
        if quiet:
            continue
        bundle = run.collector.resolver.active()
        exposure = getattr(bundle, "exposure", None) if bundle is not None else None
        takes_part = bool(exposure is not None and exposure.participates(run.tenant_id))
        role = (f"canary: {float(exposure.session_fraction) * 100:.1f} % of its sessions get the candidate"
                if takes_part and exposure is not None else "control: keeps the stable version")
        if result.active_version == 0:
            role = "no bundle for its cohort"
        p.line(f"{run.tenant_id:<9} pulled + verified bundle v{result.active_version} ({result.status}); {role}")


def _evidence_line(evidence: Mapping[str, Any]) -> str:
    cells = evidence.get("cells") or []
    if cells:
        c = cells[0]
        rate = c.get("rate")
        low, high = c.get("rate_low"), c.get("rate_high")
        if rate is not None and low is not None:
            return (f"rate {rate:.3f} [{low:.3f}, {high:.3f}] from {c.get('tenants', '?')} tenants, "
                    f"rule {evidence.get('rule', '?')}")
    return json.dumps(evidence)[:120]


def _print_summary(s: DemoSummary, p: Printer) -> None:
    p.out("\nSummary")
    p.line(f"tenants {s.tenants} in {s.cohorts} cohorts, {s.events:,} agent turns over {s.windows} windows")
    eps = ", ".join(f"{t} rho {s.rho_per_tenant[t]:.2f} (eps {s.epsilon_per_tenant[t]:.2f})" for t in s.rho_per_tenant)
    p.line(f"privacy spent per tenant at delta={s.delta:g}: {eps}")
    if s.hotspot:
        p.line(f"hotspot found: {s.hotspot['category']} in cohort {s.hotspot['cohort']} "
               f"-> candidate {s.candidate_id} ({s.hotspot['artifact']})")
    else:
        p.line("hotspot: not found")
    p.line(f"bundle signed by reviewer threshold: {'yes' if s.bundle_signed else 'no'}")
    if s.rollout:
        p.line(f"rollout {s.rollout['rollout_id']}: {s.rollout['state']} at stage {s.rollout['stage_index'] + 1} "
               f"({s.rollout['stage_percent']:g} %), canary tenants {', '.join(s.rollout['canary_tenants'])}")
    versions = ", ".join(f"{t} v{v} ({sum(s.candidate_sessions_per_window[t])} canary sessions)"
                         for t, v in s.bundle_version_per_tenant.items())
    p.line(f"bundle version per tenant: {versions}")
    p.line(f"audit log: {s.audit_entries} entries, hash chain {'verified' if s.audit_ok else 'BROKEN'}")
    p.line(f"wall time {s.seconds:.1f} s")


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
    p.add_argument("--rollout-windows", type=int, default=4, help="windows run during the rollout (default 4)")
    p.add_argument("--workdir", default=None, help="keep everything in this (empty) directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=cmd_demo)
