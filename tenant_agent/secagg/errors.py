"""Refusals of the collector's secure-aggregation client."""

from __future__ import annotations

from aggregation.errors import FedsignalError


class SecAggClientError(FedsignalError):
    """Base of the tenant-side secure-aggregation refusals."""


class RosterRejected(SecAggClientError):
    """A roster entry or round context the tenant does not accept (bad signature, foreign CA, mismatch)."""


class NotInRound(SecAggClientError):
    """The window's round was opened without this tenant (it registered its key later)."""


class OwnLossCapExceeded(SecAggClientError):
    """The tenant's own worst-case loss would pass its configured cap."""
