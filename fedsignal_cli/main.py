"""The ``fedsignal`` command line.

Each package contributes its own command group; this module only wires them
together and turns errors into one-line messages and exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import grpc
import sqlalchemy.exc

from aggregation.errors import FedsignalError
from server.db import database_error_line
from server.observability import ConsoleFormatter, StderrHandler


def build_parser() -> argparse.ArgumentParser:
    from fedsignal import __version__

    from fedsignal_cli import demo
    from server import cli as server_cli
    from server.admin_cli import register as register_admin
    from tenant_agent import cli as agent_cli

    parser = argparse.ArgumentParser(
        prog="fedsignal",
        description="Privacy-preserving federated learning signals for self-healing AI-agent platforms.",
    )
    parser.add_argument("--version", action="version", version=f"fedsignal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    demo.register(groups)
    server_cli.register(groups)
    agent_cli.register(groups)
    register_admin(groups)
    return parser


def _console_logging(level: int) -> None:
    """One console handler on the root logger (replacing an earlier call's), unless logging is set up already."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    if not root.handlers:
        handler = StderrHandler()
        handler.setFormatter(ConsoleFormatter())
        root.addHandler(handler)
        root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _console_logging(logging.DEBUG if args.verbose else logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except FedsignalError as exc:
        print(f"fedsignal: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        print(f"fedsignal: server refused the request ({name}): {details}", file=sys.stderr)
        return 3
    except sqlalchemy.exc.OperationalError as exc:
        # The database could not be reached, refused the connection or timed out on a lock: one line
        # from the driver, which names host, port and database, never the password (-v: the traceback).
        logging.getLogger(__name__).debug("database error", exc_info=True)
        print(f"fedsignal: error: database error: {database_error_line(exc)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
