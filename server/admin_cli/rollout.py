"""``fedsignal admin rollout``: start, pause, resume, abort and watch staged rollouts."""

from __future__ import annotations

import argparse
import math
from typing import Any

from fedsignal.v1 import rollout_pb2, rollout_pb2_grpc
from google.protobuf.json_format import MessageToDict

from server.admin_cli.common import add_connection_args, admin_channel, print_json

STATES = ("running", "paused", "promoted", "rolled_back", "aborted")


def register(sub: Any) -> None:
    """Add this module's ``fedsignal admin`` subcommands to ``sub``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "rollout", help="start, steer and watch staged rollouts",
        description="Staged rollouts of reviewer-approved candidates: sticky canary tenants and sessions, "
                    "DP canary-vs-control gates, automatic promotion and rollback. See docs/rollouts.md.",
    )
    rsub = parser.add_subparsers(dest="rollout_command", metavar="COMMAND", required=True)

    p = rsub.add_parser("start", help="start rolling out a bundled candidate",
                        description="Freeze the candidate's plan and gates, publish its version label in the "
                                    "cohort schema, choose the first stage's tenants and issue the stage-0 bundle.")
    p.add_argument("candidate_id", help="a candidate in state 'bundled'")
    _common(p, start=True)

    for name, helptext, desc in (
        ("pause", "pause a running rollout", "Stop advancing; harm still rolls back. Resume by hand."),
        ("resume", "resume a paused rollout", "Let the controller advance the rollout again."),
        ("abort", "take the candidate back now",
         "Roll back by hand: a newer signed bundle pointing at the promoted artifacts only."),
    ):
        p = rsub.add_parser(name, help=helptext, description=desc)
        p.add_argument("rollout_id")
        p.add_argument("--reason", default="", help="why (goes to the audit log)")
        _common(p)
        p.set_defaults(func=_ref_command(name))

    p = rsub.add_parser("status", help="stage, exposure, per-gate estimate and interval, next decision")
    p.add_argument("rollout_id")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = rsub.add_parser("list", help="list rollouts")
    p.add_argument("--state", choices=STATES, default="", help="only rollouts in this state")
    _common(p)
    p.set_defaults(func=cmd_list)


def _common(p: argparse.ArgumentParser, start: bool = False) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    add_connection_args(p)
    if start:
        p.set_defaults(func=cmd_start)


def _stub(args: argparse.Namespace) -> tuple[Any, rollout_pb2_grpc.RolloutServiceStub]:
    channel = admin_channel(args)
    return channel, rollout_pb2_grpc.RolloutServiceStub(channel)


def cmd_start(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        status = stub.StartRollout(rollout_pb2.StartRolloutRequest(candidate_id=args.candidate_id))
    _show(status, args.json)
    return 0


def _ref_command(name: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        channel, stub = _stub(args)
        ref = rollout_pb2.RolloutRef(rollout_id=args.rollout_id, reason=args.reason)
        with channel:
            method = {"pause": stub.PauseRollout, "resume": stub.ResumeRollout, "abort": stub.AbortRollout}[name]
            status = method(ref)
        _show(status, args.json)
        return 0

    return handler


def cmd_status(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        status = stub.GetRolloutStatus(rollout_pb2.RolloutRef(rollout_id=args.rollout_id))
    _show(status, args.json)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        resp = stub.ListRollouts(rollout_pb2.ListRolloutsRequest(state=args.state))
    if args.json:
        print_json([MessageToDict(r, preserving_proto_field_name=True) for r in resp.rollouts])
        return 0
    if not resp.rollouts:
        print("no rollouts")
        return 0
    print(f"{'rollout':<20} {'candidate':<18} {'cohort':<14} {'state':<12} {'stage':>7}  next")
    for r in resp.rollouts:
        print(f"{r.rollout_id:<20} {r.candidate_id:<18} {r.cohort:<14} {r.state:<12} "
              f"{r.stage_percent:>6g}%  {r.next_decision}")
    return 0


def _interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "[      -,       -]"
    return f"[{low:+.4f}, {high:+.4f}]"


def format_status(s: rollout_pb2.RolloutStatus) -> str:
    lines = [
        f"rollout   {s.rollout_id}  ({s.state})",
        f"candidate {s.candidate_id}  cohort {s.cohort}  bundle v{s.bundle_version}",
        f"stage     #{s.stage_index}: {s.stage_percent:g} % of traffic, {s.windows_in_stage} window(s) in stage",
        f"canary    {len(s.canary_tenants)} tenant(s): {', '.join(s.canary_tenants) or '-'}",
        "gates     (canary - control rate; always-valid interval)",
    ]
    for g in s.gates:
        limit = f"{'drop' if g.direction == 'drop' else 'rise'} <= {g.margin:g}"
        lines.append(f"  {g.gate:<17} {limit:<13} {g.estimate:+.4f} {_interval(g.low, g.high)}  {g.verdict}")
    if not s.gates:
        lines.append("  (not assessed yet)")
    lines.append(f"next      {s.next_decision}")
    return "\n".join(lines)


def _show(status: rollout_pb2.RolloutStatus, as_json: bool) -> None:
    if as_json:
        print_json(MessageToDict(status, preserving_proto_field_name=True))
    else:
        print(format_status(status))
