"""The base of every error a user can act on.

The CLI prints a ``FedsignalError`` as one line, without a traceback, and
exits non-zero; servicers map subclasses to gRPC status codes.
"""

from __future__ import annotations


class FedsignalError(Exception):
    """An error whose message tells the user what happened and what to do."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1


# What kind of refusal an error is. A domain error subclasses the one kind that
# describes it (``class CandidateNotFound(NotFound)``); the server's servicers map
# kinds, never concrete types, to wire status codes through one table
# (``server.servicer.STATUS``), and the kinds know nothing of the wire.


class InvalidRequest(FedsignalError):
    """The request itself is wrong (a malformed value, a name out of bounds); retrying it unchanged fails again."""


class Unauthenticated(FedsignalError):
    """The caller could not be identified (an unknown token or credential)."""


class PermissionDenied(FedsignalError):
    """The caller is known but may not do this."""


class NotFound(FedsignalError):
    """The named thing does not exist."""


class AlreadyExists(FedsignalError):
    """The thing to create exists already (or a single-use thing was used)."""


class PreconditionFailed(FedsignalError):
    """The system is not in a state where this may happen (yet)."""


class ResourceExhausted(FedsignalError):
    """A size, rate or quota limit was hit."""


class OutOfRange(FedsignalError):
    """A value lies outside the range the system accepts now (e.g. a window too old or in the future)."""


class Unavailable(FedsignalError):
    """A dependency (the database) is unavailable; the same request may succeed later."""


class Aborted(FedsignalError):
    """A concurrent change won (e.g. two replicas raced on one row); retrying the request is safe."""


class DeadlineExceeded(FedsignalError):
    """The request came after the deadline the protocol set for it (e.g. a round message too late)."""
