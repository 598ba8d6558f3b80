"""``fedsignal server``: set up, migrate and run the central server.

Commands that touch the database directly (``init``, ``init-db``,
``upgrade``, ``enroll-token``, ``admin-cert``, ``revoke``) are for operators on
the server's host; everyone else uses ``fedsignal admin`` over mutual TLS.

The commands import the server's modules inside their functions on purpose: every
``fedsignal`` invocation (``agent``, ``admin``, ...) registers this group, and
loading gRPC, SQLAlchemy and the domain packages for those would cost start-up time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregation.errors import FedsignalError

DATABASE_ENV = "FEDSIGNAL_DATABASE_URL"
STATE_DIR_ENV = "FEDSIGNAL_STATE_DIR"
DEFAULT_STATE_DIR = "fedsignal-server"


class ServerCliError(FedsignalError):
    """A server command cannot run as asked."""


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir)


def _database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    return f"sqlite:///{(_state_dir(args) / 'server.db').resolve()}"


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR),
                   help=f"server state directory: CA, TLS and bundle keys (env {STATE_DIR_ENV}; "
                        f"default ./{DEFAULT_STATE_DIR})")
    p.add_argument("--database-url", default=os.environ.get(DATABASE_ENV),
                   help=f"SQLAlchemy URL, e.g. postgresql://user@host/db (env {DATABASE_ENV}; "
                        "default: SQLite file server.db in the state directory)")


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    """The typed server settings of the command line (a mistyped value is a one-line error)."""
    from server.context import ServerSettings

    _state_dir(args).mkdir(parents=True, exist_ok=True)
    doc = {"database_url": _database_url(args), "state_dir": str(_state_dir(args)), **overrides}
    return ServerSettings.parse(doc, source="fedsignal server (command line)")


def _context(args: argparse.Namespace, *, schema: bool = True, **overrides: Any) -> Any:
    """The server context of the command line's settings. ``schema``: the database must hold this
    release's schema (every command but those that create or migrate it), else a one-line error."""
    from server.context import ServerContext

    settings = _settings(args, **overrides)
    if schema:
        _refuse_missing_sqlite_file(settings)
    ctx = ServerContext.create(settings)
    if schema:
        _require_schema(ctx)
    return ctx


def _refuse_missing_sqlite_file(settings: Any) -> None:
    """A one-line error for a SQLite database file that does not exist, before opening it would
    create an empty one (only the commands that create or migrate the schema may)."""
    from sqlalchemy.engine import make_url

    from server.db import sqlite_file_of

    path = sqlite_file_of(make_url(settings.database_url))
    if path is not None and not path.exists():
        raise ServerCliError(f"no database at {path}: run `fedsignal server init-db` with the same --database-url")


def _require_schema(ctx: Any) -> None:
    """A one-line error unless the database holds this release's schema (it is reached here: an
    unreachable one stops the command too)."""
    from server.migrate import schema_problem

    problem = schema_problem(ctx.engine)
    if problem is not None:
        ctx.engine.dispose()
        raise ServerCliError(problem)


def register(groups: Any) -> None:
    """Add this module's command group to the top-level ``fedsignal`` parser."""
    parser: argparse.ArgumentParser = groups.add_parser(
        "server", help="set up, migrate and run the central server",
        description="The central fedsignal server: certificate authority, database, gRPC service.",
    )
    sub = parser.add_subparsers(dest="server_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "init", help="create the CA, the server's TLS certificate and the first admin's credentials",
        description="Create the certificate authority (STATE_DIR/ca, keys 0600), a TLS certificate for the "
                    "server covering localhost, 127.0.0.1, ::1 and every --host, bring the database schema up "
                    "to date, and write the first admin's credentials (client.key, client.crt, ca.crt) into "
                    "--admin-out. No trust root is created: reviewers make it with `fedsignal admin root init`.",
    )
    _add_store_args(p)
    p.add_argument("--host", action="append", default=[],
                   help="extra DNS name or IP address for the server certificate (repeatable)")
    p.add_argument("--admin-out", "--admin-dir", dest="admin_out", required=True, type=Path,
                   help="directory to write the first admin's credentials into")
    p.add_argument("--admin-name", default="admin", help="name of the first admin (certificate CN)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("init-db", help="create the database schema (runs every migration)",
                       description="Create or upgrade the server's database schema to the newest migration.")
    _add_store_args(p)
    p.set_defaults(func=cmd_init_db)

    p = sub.add_parser("upgrade", help="migrate the database schema to a revision (default: newest)",
                       description="Apply Alembic migrations up to --revision. Safe to run on a live database "
                                   "before rolling out new replicas.")
    _add_store_args(p)
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser(
        "serve", help="run the gRPC server",
        description="Serve fedsignal over mutual TLS on --listen, and enrollment (server-authenticated TLS, "
                    "no client certificate) on --enrollment-listen. SIGTERM or Ctrl-C stops accepting calls "
                    "and lets in-flight ones finish (up to --grace seconds). Logs are JSON lines on stderr.",
    )
    _add_store_args(p)
    p.add_argument("--listen", default="127.0.0.1:7443", help="mTLS address HOST:PORT (default 127.0.0.1:7443)")
    p.add_argument("--enrollment-listen", default=None,
                   help="enrollment address HOST:PORT (default: the --listen host, port + 1)")
    p.add_argument("--min-tenants", type=int, default=5, help="k: distinct tenants before a cell is shown (default 5)")
    p.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024,
                   help="largest accepted request in bytes (default 4 MiB)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics over HTTP on this port (default: off)")
    p.add_argument("--health-listen", default=None,
                   help="also serve only the gRPC health check, in plaintext, on HOST:PORT (for probes without TLS)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 to expose it)")
    p.add_argument("--job-interval", type=float, default=10.0,
                   help="seconds between runs of merge, detection and rollout jobs (default 10)")
    p.add_argument("--no-jobs", action="store_true", help="do not run periodic jobs on this replica")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight calls get at shutdown (default 30)")
    p.add_argument("--workers", type=int, default=16, help="request worker threads (default 16)")
    p.add_argument("--insecure-dev", action="store_true",
                   help="DEVELOPMENT ONLY: plaintext, identity taken from x-fedsignal-* metadata; "
                        "only on a loopback --listen and a SQLite database")
    p.add_argument("--insecure-dev-anywhere", action="store_true",
                   help="allow --insecure-dev on a non-loopback address or a non-SQLite database (dangerous)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("enroll-token", help="create a one-time enrollment token (direct database access)",
                       description="Create a one-time, expiring enrollment token for a tenant and print it. "
                                   "Runs against the database directly; remote operators use "
                                   "`fedsignal admin enroll-token`.")
    _add_store_args(p)
    p.add_argument("--tenant", required=True, help="tenant id")
    p.add_argument("--cohort", required=True, help="cohort the tenant belongs to")
    p.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default 86400)")
    p.set_defaults(func=cmd_enroll_token)

    p = sub.add_parser("admin-cert", help="issue credentials for another admin",
                       description="Issue an admin certificate and key from the server CA and write them with "
                                   "ca.crt into --out (the directory `fedsignal admin --credentials` reads).")
    _add_store_args(p)
    p.add_argument("--name", required=True, help="admin name (certificate CN)")
    p.add_argument("--out", required=True, type=Path, help="directory to write the credentials into")
    p.add_argument("--days", type=int, default=90, help="validity in days (default 90)")
    p.set_defaults(func=cmd_admin_cert)

    p = sub.add_parser("revoke", help="revoke a tenant or one certificate (direct database access)",
                       description="Revoke a tenant (all its certificates) or a single certificate by serial. "
                                   "Every replica refuses it within seconds. Recorded in the audit log.")
    _add_store_args(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", help="tenant id to revoke")
    target.add_argument("--serial", help="certificate serial (hex) to revoke, e.g. an admin's")
    p.add_argument("--reason", required=True, help="why (goes to the audit log)")
    p.set_defaults(func=cmd_revoke)


def cmd_init(args: argparse.Namespace) -> int:
    from server.db import transaction
    from server.identity import enrollment as identity
    from server.identity.ca import CertificateAuthority, write_credentials_dir
    from server.migrate import init_db

    state = _state_dir(args)
    admin_out: Path = args.admin_out
    if (admin_out / "client.key").exists():
        raise ServerCliError(f"{admin_out} already holds credentials; choose another --admin-out")
    # The database first: a mistyped or unreachable one is refused before any key is written.
    ctx = _context(args, schema=False)
    init_db(ctx.engine)
    ca = CertificateAuthority.create(state)
    ca.write_server_cert(state, args.host)
    now = ctx.clock()
    key, issued = ca.issue_key_and_cert(args.admin_name, None, "admin", now=now)
    with transaction(ctx.sessions) as session:
        identity.record_admin_certificate(session, args.admin_name, issued.serial, issued.not_after,
                                          "operator:server-init", now)
    write_credentials_dir(admin_out, key, issued.certificate_pem, ca.certificate_pem,
                          {"subject": args.admin_name, "role": "admin", "serial": issued.serial})
    ctx.engine.dispose()
    print(f"CA and server certificate written to {CertificateAuthority.directory(state)}")
    print(f"admin credentials for {args.admin_name!r} written to {admin_out} (serial {issued.serial})")
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from server.migrate import init_db

    ctx = _context(args, schema=False)
    init_db(ctx.engine)
    ctx.engine.dispose()
    print("database schema is up to date")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from server.migrate import upgrade

    ctx = _context(args, schema=False)
    upgrade(ctx.engine, args.revision)
    ctx.engine.dispose()
    print(f"database upgraded to {args.revision}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import build_server, check_insecure_dev
    from server.context import ServerContext
    from server.observability import configure_json_logging

    configure_json_logging(getattr(logging, args.log_level.upper()))
    if args.min_tenants < 1:
        raise ServerCliError("--min-tenants must be at least 1")
    settings = _settings(args, listen=args.listen, insecure_dev=args.insecure_dev,
                         insecure_dev_anywhere=args.insecure_dev_anywhere, min_tenants=args.min_tenants,
                         max_message_bytes=args.max_message_bytes)
    check_insecure_dev(settings)  # what the settings refuse, before the database is asked
    _refuse_missing_sqlite_file(settings)
    ctx = ServerContext.create(settings)
    _require_schema(ctx)
    running = build_server(
        ctx, jobs=not args.no_jobs, job_interval=args.job_interval, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, enrollment_listen=args.enrollment_listen, health_listen=args.health_listen,
        workers=args.workers,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"fedsignal server listening on {running.address} (enrollment on port {running.enrollment_port})",
          file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    running.stop(args.grace)
    ctx.engine.dispose()
    return 0


def cmd_enroll_token(args: argparse.Namespace) -> int:
    from server.db import transaction
    from server.identity import enrollment as identity

    ctx = _context(args)
    with transaction(ctx.sessions) as session:
        token, expires_at = identity.create_enrollment_token(
            session, args.tenant, args.cohort, timedelta(seconds=args.ttl), "operator:cli", ctx.clock()
        )
    ctx.engine.dispose()
    print(token)
    print(f"# tenant {args.tenant} (cohort {args.cohort}); single use; expires {expires_at.isoformat()}",
          file=sys.stderr)
    return 0


def cmd_admin_cert(args: argparse.Namespace) -> int:
    from server.db import transaction
    from server.identity import enrollment as identity
    from server.identity.ca import CertificateAuthority, write_credentials_dir

    if (args.out / "client.key").exists():
        raise ServerCliError(f"{args.out} already holds credentials; choose another --out")
    ca = CertificateAuthority.load(_state_dir(args))
    ctx = _context(args)
    now = ctx.clock()
    key, issued = ca.issue_key_and_cert(args.name, None, "admin", now=now, days=args.days)
    with transaction(ctx.sessions) as session:
        identity.record_admin_certificate(session, args.name, issued.serial, issued.not_after, "operator:cli", now)
    write_credentials_dir(args.out, key, issued.certificate_pem, ca.certificate_pem,
                          {"subject": args.name, "role": "admin", "serial": issued.serial})
    ctx.engine.dispose()
    print(f"admin credentials for {args.name!r} written to {args.out} (serial {issued.serial})")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from server.db import transaction
    from server.identity import enrollment as identity

    ctx = _context(args)
    now = ctx.clock()
    with transaction(ctx.sessions) as session:
        if args.tenant:
            count = identity.revoke_tenant(session, args.tenant, args.reason, "operator:cli", now)
            message = f"revoked tenant {args.tenant}: {count} certificate(s)"
        else:
            changed = identity.revoke_certificate(session, args.serial, args.reason, "operator:cli", now)
            message = f"revoked certificate {args.serial}" if changed else f"certificate {args.serial} was already revoked"
    ctx.engine.dispose()
    print(message)
    return 0
