r"""`fedsignal agent …`: enroll, run, import, flush, budget, status.

Every failure is one line on stderr and a non-zero exit (``fedsignal: error:
…``), never a traceback: the commands raise :class:`FedsignalError`\ s and
:func:`_one_line_errors` turns the OS's (a missing file, a closed pipe) into
the same. The collector's modules are imported inside the commands: ``fedsignal
--help`` and the server's commands should not pay for loading the collector
(gRPC stubs, SQLAlchemy, OpenDP, tuf).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregation.clock import from_unix
from aggregation.errors import FedsignalError
from tenant_agent import replay_cli
from tenant_agent.config import IDENTITY_FILE, BudgetConfig, CollectorConfig, ConfigError, ReleaseConfig
from tenant_agent.files import FILE_MODE, private_dir, write_atomic

CONFIG_FILE = "collector.toml"
CONFIG_ENV = "FEDSIGNAL_AGENT_CONFIG"
TOKEN_ENV = "FEDSIGNAL_ENROLL_TOKEN"

Command = Callable[[argparse.Namespace], int]


class AgentCommandError(FedsignalError):
    """A collector command could not do what was asked (the message says why)."""


def _one_line_errors(func: Command) -> Command:
    """OS errors become one-line errors; a reader that closed the pipe (``| head``) ends the command quietly."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            code = func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
            return code
        except BrokenPipeError:
            # The reader is gone: send the rest of stdout nowhere so the interpreter's final flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0
        except OSError as exc:
            what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            raise AgentCommandError(what) from None

    return run


def register(groups: Any) -> None:
    """Add this module's command group to the top-level ``fedsignal`` parser."""
    agent = groups.add_parser(
        "agent",
        help="run the tenant collector (enroll, run, import, flush, budget, status)",
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
    token = p.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the one-time enrollment token (safer than --token; or set {TOKEN_ENV})",
    )
    token.add_argument(
        "--token",
        help=f"the one-time enrollment token itself (visible to other users in `ps`: prefer --token-file or {TOKEN_ENV})",
    )
    p.add_argument("--state-dir", required=True, type=Path, help="collector state directory")
    p.add_argument("--force", action="store_true", help="replace the credentials of an already enrolled state dir")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--ca-file", type=Path, help="PEM of the server CA to pin (from the operator)")
    trust.add_argument("--insecure-dev", action="store_true", help="plaintext, for a development server only")
    p.set_defaults(func=_one_line_errors(cmd_enroll))

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
    p.set_defaults(func=_one_line_errors(cmd_run))

    p = sub.add_parser(
        "import",
        help="import decision events from a JSON Lines file",
        description="Read a JSON Lines file of decision events; bad lines are reported with their line number "
        "and reason and never stop the import. Events are durable when the command returns.",
    )
    add_config(p)
    p.add_argument("file", type=Path, help="JSON Lines file")
    p.set_defaults(func=_one_line_errors(cmd_import))

    p = sub.add_parser(
        "flush",
        help="close the current window now (for trying things out) and deliver what the server accepts",
        description="Seal every window that has started, the current one included, as a DP release under the "
        "budget ledger (the same spend as at the window's end; later events for it are dropped as late), then "
        "deliver the outbox when a server is configured. Windows are an hour long by default (the cohort "
        "schema's). The server accepts a window only once it has ended: a report sealed early waits in the "
        "outbox until then and `agent run` (or another flush) delivers it.",
    )
    add_config(p)
    p.add_argument("--no-deliver", action="store_true", help="seal only; leave the reports in the outbox")
    p.set_defaults(func=_one_line_errors(cmd_flush))

    p = sub.add_parser(
        "budget",
        help="show the privacy budget: spent, remaining and renewal per period, and lifetime",
        description="Show the zCDP (rho) budget ledger of this collector.",
    )
    add_config(p)
    p.set_defaults(func=_one_line_errors(cmd_budget))

    p = sub.add_parser(
        "status",
        help="show windows, outbox depth and dead letters, active bundle and redaction statistics",
        description="Windows open/sealed/withheld/delivered, outbox depth, reports the server refused for good "
        "(dead letters, with the server's reason), active bundle, local counters.",
    )
    add_config(p)
    p.set_defaults(func=_one_line_errors(cmd_status))

    replay_cli.register(sub, add_config, load_config)  # replay-set list|show|purge, replay --candidate


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


def _enroll_token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise AgentCommandError(f"cannot read the token file {args.token_file}: {exc.strerror or exc}") from None
        source = f"token file {args.token_file}"
    elif args.token is not None:
        token, source = args.token.strip(), "--token"
    else:
        token, source = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
        if not token:
            raise AgentCommandError(f"no enrollment token: pass --token-file FILE (or set {TOKEN_ENV})")
    if not token:
        raise AgentCommandError(f"the enrollment token from {source} is empty")
    return token


def cmd_enroll(args: argparse.Namespace) -> int:
    from tenant_agent.transport import enroll

    token = _enroll_token(args)
    ca_pem = None
    if args.ca_file is not None:
        try:
            ca_pem = args.ca_file.read_bytes()
        except OSError as exc:
            raise AgentCommandError(
                f"cannot read the server CA file {args.ca_file}: {exc.strerror or exc} (the operator gives it out "
                "with the enrollment token)"
            ) from None
    enroll_address = args.enroll_server or (args.server if args.insecure_dev else _next_port(args.server))
    result = enroll(
        enroll_address,
        token,
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
        write_atomic(
            config_path,
            (
                'state_dir = "."\n'
                f'server = "{args.server}"\n'
                f"insecure_dev = {'true' if args.insecure_dev else 'false'}\n"
                f"\n[budget]\nrho_per_period = {budget.rho_per_period!r}\n"
                f"period_days = {budget.period_days:g}\n"
                f'\n[release]\nmechanism = "{release.mechanism}"\nrho = {release.rho!r}\n'
                f"epsilon = {release.epsilon!r}\ndelta = {release.delta!r}\n"
            ).encode(),
            FILE_MODE,
        )
    print(f"enrolled tenant {result.tenant_id} in cohort {result.cohort} (schema v{result.schema.version})")
    print(f"credentials written to {args.state_dir / 'credentials'}; config {config_path}")
    return 0


def _enroll_from_env(config: CollectorConfig) -> None:
    """Containers: enroll on first start from FEDSIGNAL_ENROLL_TOKEN (a no-op once enrolled)."""
    from tenant_agent.transport import enroll

    token = os.environ.get(TOKEN_ENV)
    if not token or (config.state_dir / IDENTITY_FILE).exists():
        return
    if not config.server:
        raise ConfigError(f"{TOKEN_ENV} is set but the config names no server to enroll with")
    if config.ca_file is None and not config.insecure_dev:
        raise ConfigError(f"{TOKEN_ENV} is set: the config needs ca_file (the server CA to pin) or insecure_dev")
    try:
        ca_pem = config.ca_file.read_bytes() if config.ca_file is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot read ca_file {config.ca_file}: {exc.strerror or exc}") from None
    address = config.enroll_server or (config.server if config.insecure_dev else _next_port(config.server))
    result = enroll(address, token, config.state_dir, ca_pem, insecure=config.insecure_dev,
                    signals_address=config.server)
    print(f"enrolled tenant {result.tenant_id} in cohort {result.cohort}", flush=True)


def _log_to_state_dir(config: CollectorConfig) -> logging.Handler:
    # Logs never carry event text or ids: only window starts, keys, counts, errors.
    logs = private_dir(config.state_dir / "logs")
    path = logs / "collector.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE))  # created 0600 before logging opens it
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def _next_port(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"server address {address!r} must be HOST:PORT")
    return f"{host}:{int(port) + 1}"


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args)
    log_file = _log_to_state_dir(config)
    try:
        return _run(config)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def _run(config: CollectorConfig) -> int:
    from tenant_agent.collector import Collector
    from tenant_agent.serving import Serving, serve

    _enroll_from_env(config)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(serving: Serving) -> None:
        print(f"collector ready: OTLP on port {serving.otlp_port}, resolve on port {serving.resolve_port}", flush=True)

    with Collector(config) as collector:
        serve(collector, stop, ready=ready)
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


def cmd_flush(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        outcomes = collector.flush()
        for o in outcomes:
            line = f"window {from_unix(o.window_start).isoformat()}..{from_unix(o.window_end).isoformat()}: {o.state}"
            print(line + (f" ({o.reason})" if o.reason else f" (rho {o.rho:.6g})"))
        if not outcomes:
            print("no open window to close")
        if args.no_deliver or not collector.has_server:
            print(f"outbox: {collector.outbox.depth()} waiting (not delivered)")
            return 0
        result = collector.deliver(force=True)
    print(f"delivered {result.delivered}, failed {result.failed}, dead-lettered {result.rejected}; "
          f"{result.pending} waiting (a window that has not ended yet is delivered once it ends)")
    return 0 if result.failed == 0 and result.rejected == 0 else 1


def cmd_budget(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        status = collector.budget_status()
        policy = collector.config.budget
        secure = collector.secure.loss_summary()
        delta = collector.config.release.delta
    print(f"period:    {status.period_start.isoformat()} .. {status.renews_at.isoformat()}"
          f" ({policy.period.total_seconds() / 86400:g} days, rho {policy.rho_per_period:g} per period)")
    print(f"spent:     rho {status.spent:.6g}")
    print(f"remaining: rho {status.remaining:.6g}")
    print(f"renews at: {status.renews_at.isoformat()}")
    lifetime = "no cap" if status.lifetime_remaining is None else f"rho {status.lifetime_remaining:.6g} remaining"
    print(f"lifetime:  rho {status.lifetime_spent:.6g} spent; {lifetime}")
    _print_budget_extras(status, delta)
    if secure.releases or secure.rounds_dropped or secure.rounds_aborted:
        cap = "no cap" if secure.own_worst_case_rho_cap is None else f"cap rho {secure.own_worst_case_rho_cap:g}"
        print(f"secure:    {secure.releases} releases, cohort rho {secure.cohort_rho:.6g} (on the ledger); "
              f"own worst case rho {secure.own_worst_case_rho:.6g} ({cap}); rounds {secure.rounds_done} done, "
              f"{secure.rounds_dropped} missed, {secure.rounds_aborted} aborted")
    return 0


def _print_budget_extras(status: Any, delta: float) -> None:
    """The totals in (epsilon, delta) and the ledger's clock check, where the ledger reports them.

    ``BudgetStatus.in_epsilon`` and ``clock_behind`` come with the ledger's high-water mark and epsilon view
    (aggregation.budget); a ledger without them prints rho only.
    """
    in_epsilon = getattr(status, "in_epsilon", None)
    if in_epsilon is not None:
        e = in_epsilon(delta)
        cap = "no cap" if e.lifetime_cap is None else f"cap epsilon {e.lifetime_cap:.3g}"
        print(f"epsilon:   at delta {e.delta:g}: period limit {e.period_limit:.3g}, spent {e.period_spent:.3g}; "
              f"lifetime spent {e.lifetime_spent:.3g}, {cap}")
        print("           (rho is what the ledger adds up: zCDP composes in rho, so epsilons of parts do not sum)")
    if getattr(status, "clock_behind", False):
        high_water = getattr(status, "high_water", None)
        mark = high_water.isoformat() if high_water is not None else "the latest time it has seen"
        print(f"clock:     BEHIND the ledger's high-water mark {mark}: releases are refused until it catches up")


def cmd_status(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector

    with Collector(load_config(args)) as collector:
        st = collector.status()
    w = st.windows
    print(f"tenant {st.tenant_id} (cohort {st.cohort}), signal schema v{st.schema_version}")
    print(f"windows:  {w['open']} open, {w['sealed']} sealed, {w['withheld']} withheld, {w['delivered']} delivered")
    print(f"outbox:   {st.outbox_depth} waiting, {len(st.dead_letters)} dead letters (refused by the server for good)")
    for dead in st.dead_letters[:10]:
        print(f"dead:     window {dead.window_start.isoformat()}..{dead.window_end.isoformat()}: {dead.reason}")
    if len(st.dead_letters) > 10:
        print(f"dead:     ... and {len(st.dead_letters) - 10} more")
    if st.bundle_problem is not None:
        print(f"bundle:   NOT SERVED: {st.bundle_problem}")
    else:
        print(f"bundle:   {st.active_bundle or 'none (baseline)'}")
    print(f"audit:    {'chain verifies' if st.audit_ok else 'CHAIN BROKEN: the local audit log was altered'}")
    for name, value in sorted(st.counters.items()):
        print(f"counter:  {name} = {value}")
    redaction = ", ".join(f"{k} {v}" for k, v in sorted(st.redaction.items())) or "none"
    print(f"redacted: {redaction}")
    print(f"text:     {st.texts_discarded} free text(s) discarded unread (no replay capture stored them, "
          "no taxonomy rule read them)")
    return 0
