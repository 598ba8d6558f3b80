"""``fedsignal admin``: the central team's commands, run on a reviewer's machine.

Every command is a gRPC client of the server holding an admin certificate;
reviewers' private keys stay on their machines.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

#: Exit status when the reader of our output went away (`fedsignal admin signals | head`), as a shell reports it.
EXIT_BROKEN_PIPE = 141


def register(groups: Any) -> None:
    from server.admin_cli import audit, cohort, review, rollout, signals

    parser: argparse.ArgumentParser = groups.add_parser(
        "admin", help="review signals, sign approvals, steer rollouts (admin certificate)",
        description="Commands for the central team: signals, candidates, signatures, rollouts, audit.",
    )
    sub = parser.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    signals.register(sub)
    audit.register(sub)
    review.register(sub)
    rollout.register(sub)
    cohort.register(sub)
    _guard_output(parser)


def quiet_on_broken_pipe(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``func``; when stdout's reader closed early, stop quietly with one exit status, no traceback.

    The output is flushed here, inside the guard: piped stdout is block-buffered, so the broken pipe
    would otherwise surface at interpreter exit as "Exception ignored ... BrokenPipeError".
    """

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            code = func(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # Python's documented recipe: point stdout at /dev/null so the final flush cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE

    return run


def _guard_output(parser: argparse.ArgumentParser) -> None:
    """Wrap every admin subcommand's ``func`` with :func:`quiet_on_broken_pipe`."""
    func = parser.get_default("func")
    if func is not None and not getattr(func, "__wrapped__", None):
        parser.set_defaults(func=quiet_on_broken_pipe(func))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _guard_output(child)
