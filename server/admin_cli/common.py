"""Connection options shared by every ``fedsignal admin`` command.

An admin credentials directory holds ``client.key`` (0600), ``client.crt``
(an admin-role certificate), ``ca.crt`` (the server CA) and
``identity.json``; ``fedsignal server init --admin-dir DIR`` and
``fedsignal server admin-cert`` write one.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from aggregation.errors import FedsignalError

SERVER_ENV = "FEDSIGNAL_SERVER"
CREDENTIALS_ENV = "FEDSIGNAL_ADMIN_CREDENTIALS"
DEFAULT_SERVER = "127.0.0.1:7443"


class AdminCredentialsError(FedsignalError):
    """The admin credentials directory is missing or incomplete."""


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--server``, ``--credentials``, ``--tls-server-name``, ``--insecure-dev`` and ``--as-admin``."""
    group = parser.add_argument_group("connection")
    group.add_argument("--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
                       help=f"server address HOST:PORT (env {SERVER_ENV}; default {DEFAULT_SERVER})")
    group.add_argument("--credentials", type=Path, default=os.environ.get(CREDENTIALS_ENV),
                       help=f"admin credentials directory with client.key, client.crt, ca.crt (env {CREDENTIALS_ENV})")
    group.add_argument("--tls-server-name", default=None,
                       help="host name to verify in the server certificate, when it differs from --server's host")
    group.add_argument("--insecure-dev", action="store_true",
                       help="plaintext connection to a server started with --insecure-dev (development only)")
    group.add_argument("--as-admin", default="dev-admin",
                       help="with --insecure-dev: the admin name sent as x-fedsignal-subject")


class _IdentityMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the x-fedsignal-* identity metadata an --insecure-dev server reads."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = list(metadata)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self._metadata])

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)


def insecure_identity_channel(address: str, subject: str, role: str, cohort: str | None = None) -> grpc.Channel:
    """A plaintext channel to an --insecure-dev server that claims ``subject``/``role``/``cohort``."""
    metadata = [("x-fedsignal-subject", subject), ("x-fedsignal-role", role)]
    if cohort:
        metadata.append(("x-fedsignal-cohort", cohort))
    return grpc.intercept_channel(grpc.insecure_channel(address), _IdentityMetadata(metadata))


def read_credentials(directory: Path) -> tuple[bytes, bytes, bytes]:
    """(client key, client certificate, CA certificate) from an admin credentials directory."""
    try:
        return (
            (directory / "client.key").read_bytes(),
            (directory / "client.crt").read_bytes(),
            (directory / "ca.crt").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise AdminCredentialsError(
            f"{directory} is not a complete admin credentials directory (missing {Path(exc.filename).name}); "
            "create one with `fedsignal server admin-cert`"
        ) from exc


def mtls_channel(address: str, directory: Path, tls_server_name: str | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    key, cert, ca = read_credentials(directory)
    opts = list(options)
    if tls_server_name:
        opts.append(("grpc.ssl_target_name_override", tls_server_name))
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert), options=opts)


def admin_channel(args: argparse.Namespace) -> grpc.Channel:
    """The channel the admin commands use, from the parsed connection arguments."""
    if getattr(args, "insecure_dev", False):
        return insecure_identity_channel(args.server, args.as_admin, "admin")
    if not args.credentials:
        raise AdminCredentialsError(
            f"no admin credentials: pass --credentials DIR or set {CREDENTIALS_ENV} "
            "(`fedsignal server init --admin-dir DIR` writes the first one)"
        )
    return mtls_channel(args.server, Path(args.credentials), args.tls_server_name)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))
