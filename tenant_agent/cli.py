"""`fedsignal agent …`: enroll, run, import, budget, status."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from tenant_agent.config import BudgetConfig, CollectorConfig, ConfigError, ReleaseConfig

CONFIG_FILE = "collector.toml"
CONFIG_ENV = "FEDSIGNAL_AGENT_CONFIG"
TOKEN_ENV = "FEDSIGNAL_ENROLL_TOKEN"


def register(groups: Any) -> None:
    """Add this module's command group to the top-level ``fedsignal`` parser."""
    agent = groups.add_parser(
        "agent",
        help="run the tenant collector (enroll, run, import, budget, status)",
        description="The collector a tenant runs inside its own boundary: it ingests agent telemetry, "
        "redacts and classifies it, releases differentially private window tables and pulls signed bundles.",
    )
    sub = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "enroll",
        help="exchange a one-time enrollment token for this tenant's credentials",
        description="Generate a private key locally (ECDSA P-256), send a CSR with the one-time token, and write "
        "credentials/, trust/root.json, the signal schema and a starter collector.toml under --state-dir.",
    )
    p.add_argument("--server", required=True, help="server (mutual-TLS) address host:port the collector reports to")
    p.add_argument(
        "--enroll-server",
        help="enrollment address host:port (default: the --server port + 1, the server's default; "
        "with --insecure-dev: --server)",
    )
    p.add_argument("--token", required=True, help="one-time enrollment token from the operator")
    p.add_argument("--state-dir", required=True, type=Path, help="collector state directory")
    p.add_argument("--force", action="store_true", help="replace the credentials of an already enrolled state dir")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--ca-file", type=Path, help="PEM of the server CA to pin (from the operator)")
    trust.add_argument("--insecure-dev", action="store_true", help="plaintext, for a development server only")
    p.set_defaults(func=cmd_enroll)

    def add_config(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help=f"collector TOML config (env {CONFIG_ENV})")
        parser.add_argument(
            "--state-dir", type=Path, help=f"collector state directory (uses its {CONFIG_FILE} when present)"
        )

    p = sub.add_parser(
        "run",
        help="serve OTLP and the resolve endpoint; close, release and deliver windows until SIGTERM",
        description="Serve the OTLP TraceService/LogsService and the local artifact-resolve endpoint, and "
        "periodically seal due windows (DP release under the budget ledger), deliver the outbox and pull "
        f"bundles. SIGTERM or Ctrl-C stops gracefully. Not enrolled yet and {TOKEN_ENV} set: enrolls first "
        "(config ca_file pins the server CA).",
    )
    add_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "import",
        help="import decision events from a JSON Lines file",
        description="Read a JSON Lines file of decision events; bad lines are reported with their line number "
        "and reason and never stop the import. Events are durable when the command returns.",
    )
    add_config(p)
    p.add_argument("file", type=Path, help="JSON Lines file")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "budget",
        help="show the privacy budget: spent, remaining and renewal per period, and lifetime",
        description="Show the zCDP (rho) budget ledger of this collector.",
    )
    add_config(p)
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser(
        "status",
        help="show windows, outbox depth, active bundle and redaction statistics",
        description="Windows open/sealed/withheld/delivered, outbox depth, active bundle, local counters.",
    )
    add_config(p)
    p.set_defaults(func=cmd_status)


def load_config(args: argparse.Namespace) -> CollectorConfig:
    path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is not None:
        return CollectorConfig.load(path)
    if args.state_dir is not None:
        candidate = args.state_dir / CONFIG_FILE
        if candidate.exists():
            return CollectorConfig.load(candidate)
        return CollectorConfig(state_dir=args.state_dir)
    raise ConfigError(f"pass --config or --state-dir (or set {CONFIG_ENV})")


def cmd_enroll(args: argparse.Namespace) -> int:
    from tenant_agent.transport import enroll

    ca_pem = args.ca_file.read_bytes() if args.ca_file else None
    enroll_address = args.enroll_server or (args.server if args.insecure_dev else _next_port(args.server))
    result = enroll(
        enroll_address,
        args.token,
        args.state_dir,
        ca_pem,
        insecure=args.insecure_dev,
        signals_address=args.server,
        force=args.force,
    )
    config_path = args.state_dir / CONFIG_FILE
    if not config_path.exists():
        # The defaults of tenant_agent.config, written out so operators see and tune them.
        budget, release = BudgetConfig(), ReleaseConfig()
        config_path.write_text(
            'state_dir = "."\n'
            f'server = "{args.server}"\n'
            f"insecure_dev = {'true' if args.insecure_dev else 'false'}\n"
            f"\n[budget]\nrho_per_period = {budget.rho_per_period!r}\n"
            f"period_days = {budget.period.total_seconds() / 86400:g}\n"
            f'\n[release]\nmechanism = "{release.mechanism}"\nrho = {release.rho!r}\n'
            f"epsilon = {release.epsilon!r}\ndelta = {release.delta!r}\n"
        )
    print(f"enrolled tenant {result.tenant_id} in cohort {result.cohort} (schema v{result.schema.version})")
    print(f"credentials written to {args.state_dir / 'credentials'}; config {config_path}")
    return 0


def _enroll_from_env(config: CollectorConfig) -> None:
    """Containers: enroll on first start from FEDSIGNAL_ENROLL_TOKEN (a no-op once enrolled)."""
    from tenant_agent.config import IDENTITY_FILE
    from tenant_agent.transport import enroll

    token = os.environ.get(TOKEN_ENV)
    if not token or (config.state_dir / IDENTITY_FILE).exists():
        return
    if not config.server:
        raise ConfigError(f"{TOKEN_ENV} is set but the config names no server to enroll with")
    if config.ca_file is None and not config.insecure_dev:
        raise ConfigError(f"{TOKEN_ENV} is set: the config needs ca_file (the server CA to pin) or insecure_dev")
    ca_pem = config.ca_file.read_bytes() if config.ca_file is not None else None
    address = config.enroll_server or (config.server if config.insecure_dev else _next_port(config.server))
    result = enroll(address, token, config.state_dir, ca_pem, insecure=config.insecure_dev,
                    signals_address=config.server)
    print(f"enrolled tenant {result.tenant_id} in cohort {result.cohort}", flush=True)


def _log_to_state_dir(config: CollectorConfig) -> None:
    # Logs never carry event text or ids: only window starts, keys, counts, errors.
    logs = config.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "collector.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _next_port(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"server address {address!r} must be HOST:PORT")
    return f"{host}:{int(port) + 1}"


def cmd_run(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector
    from tenant_agent.serving import Serving

    config = load_config(args)
    _log_to_state_dir(config)
    _enroll_from_env(config)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(serving: Serving) -> None:
        print(f"collector ready: OTLP on port {serving.otlp_port}, resolve on port {serving.resolve_port}", flush=True)

    with Collector(config) as collector:
        collector.serve(stop, ready=ready)
    print("collector stopped", flush=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        result = collector.import_jsonl(args.file)
    for line, reason in result.errors[:20]:
        print(f"line {line}: {reason}")
    if len(result.errors) > 20:
        print(f"... and {len(result.errors) - 20} more bad lines")
    print(
        f"imported {result.imported} events from {result.lines} lines; {len(result.errors)} bad lines; "
        f"{result.late_dropped} events for already-closed windows dropped"
    )
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        status = collector.budget_status()
        policy = collector.config.budget
        secure = collector.secure.loss_summary()
    print(f"period:    {status.period_start.isoformat()} .. {status.renews_at.isoformat()}"
          f" ({policy.period.total_seconds() / 86400:g} days, rho {policy.rho_per_period:g} per period)")
    print(f"spent:     rho {status.spent:.6g}")
    print(f"remaining: rho {status.remaining:.6g}")
    print(f"renews at: {status.renews_at.isoformat()}")
    lifetime = "no cap" if status.lifetime_remaining is None else f"rho {status.lifetime_remaining:.6g} remaining"
    print(f"lifetime:  rho {status.lifetime_spent:.6g} spent; {lifetime}")
    if secure.releases or secure.rounds_dropped or secure.rounds_aborted:
        cap = "no cap" if secure.own_worst_case_rho_cap is None else f"cap rho {secure.own_worst_case_rho_cap:g}"
        print(f"secure:    {secure.releases} releases, cohort rho {secure.cohort_rho:.6g} (on the ledger); "
              f"own worst case rho {secure.own_worst_case_rho:.6g} ({cap}); rounds {secure.rounds_done} done, "
              f"{secure.rounds_dropped} missed, {secure.rounds_aborted} aborted")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        st = collector.status()
    w = st.windows
    print(f"tenant {st.tenant_id} (cohort {st.cohort}), signal schema v{st.schema_version}")
    print(f"windows:  {w['open']} open, {w['sealed']} sealed, {w['withheld']} withheld, {w['delivered']} delivered")
    print(f"outbox:   {st.outbox_depth} waiting, {st.rejected_releases} rejected by the server")
    print(f"bundle:   {st.active_bundle or 'none (baseline)'}")
    print(f"audit:    {'chain verifies' if st.audit_ok else 'CHAIN BROKEN: the local audit log was altered'}")
    for name, value in sorted(st.counters.items()):
        print(f"counter:  {name} = {value}")
    redaction = ", ".join(f"{k} {v}" for k, v in sorted(st.redaction.items())) or "none"
    print(f"redacted: {redaction}")
    return 0
