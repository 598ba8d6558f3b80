"""``fedsignal admin cohort``: a cohort's aggregation settings (SecureAggregationService, admin certificate)."""

from __future__ import annotations

import argparse
from typing import Any

from fedsignal.v1 import secagg_pb2, secagg_pb2_grpc

from aggregation.schema import AGGREGATION_MODES
from server.admin_cli.common import add_connection_args, admin_channel, print_json


def register(sub: Any) -> None:
    """Add ``fedsignal admin cohort ...`` to ``sub``."""
    parser = sub.add_parser("cohort", help="a cohort's aggregation mode",
                            description="Settings of one cohort that every tenant of it follows.")
    cohort_sub = parser.add_subparsers(dest="cohort_command", metavar="COMMAND", required=True)
    p = cohort_sub.add_parser(
        "mode", help="switch a cohort between secure aggregation and per-tenant (local) releases",
        description="Publish a new schema version of COHORT with aggregation MODE: 'secure' (the server "
                    "learns only the sum of at least t tenants) or 'local' (each tenant noises its own "
                    "table). Windows already under way keep the mode of their schema version. Audited.",
    )
    p.add_argument("cohort", metavar="COHORT")
    p.add_argument("mode", metavar="MODE", choices=AGGREGATION_MODES)
    p.add_argument("--noise-scale", type=float, default=0.0,
                   help="the cohort's central discrete-Gaussian sigma (default: keep the schema's)")
    p.add_argument("--reason", required=True, help="why (goes to the audit log)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_connection_args(p)
    p.set_defaults(func=cmd_mode)


def cmd_mode(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        stub = secagg_pb2_grpc.SecureAggregationServiceStub(channel)
        resp = stub.SetAggregationMode(secagg_pb2.SetAggregationModeRequest(
            cohort=args.cohort, mode=args.mode, noise_scale=args.noise_scale, reason=args.reason))
    doc = {"cohort": args.cohort, "mode": resp.mode, "noise_scale": resp.noise_scale,
           "schema_version": resp.schema_version, "changed": resp.changed}
    if args.json:
        print_json(doc)
    elif resp.changed:
        print(f"{args.cohort}: {resp.mode} aggregation from schema version {resp.schema_version} "
              f"(noise scale {resp.noise_scale:g})")
    else:
        print(f"{args.cohort}: already {resp.mode} at noise scale {resp.noise_scale:g} "
              f"(schema version {resp.schema_version}); nothing published")
    return 0
