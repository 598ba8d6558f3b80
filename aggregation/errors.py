"""The base of every error a user can act on.

The CLI prints a ``FedsignalError`` as one line, without a traceback, and
exits non-zero; servicers map subclasses to gRPC status codes.
"""

from __future__ import annotations


class FedsignalError(Exception):
    """An error whose message tells the user what happened and what to do."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1
