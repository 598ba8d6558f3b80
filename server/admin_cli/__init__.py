"""``fedsignal admin``: the central team's commands, run on a reviewer's machine.

Every command is a gRPC client of the server holding an admin certificate;
reviewers' private keys stay on their machines.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(groups: Any) -> None:
    from server.admin_cli import audit, review, rollout, signals

    parser: argparse.ArgumentParser = groups.add_parser(
        "admin", help="review signals, sign approvals, steer rollouts (admin certificate)",
        description="Commands for the central team: signals, candidates, signatures, rollouts, audit.",
    )
    sub = parser.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    signals.register(sub)
    audit.register(sub)
    review.register(sub)
    rollout.register(sub)
