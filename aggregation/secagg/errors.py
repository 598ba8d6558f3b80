"""The errors of the secure-aggregation kernel.

Every refusal is a specific type so that the integrator can map it to a wire
status (a malformed message is the sender's fault, a replay is an attack or a
bug, an aborted round is nobody's fault) and so that tests fail for one reason.
"""

from __future__ import annotations

from aggregation.errors import FedsignalError


class SecAggError(FedsignalError):
    """Base of every error of ``aggregation.secagg``."""


class InvalidRoundParams(SecAggError, ValueError):
    """A round context, noise plan or modulus request that cannot work."""


class MalformedMessage(SecAggError, ValueError):
    """Bytes that do not parse as the expected message: truncated, oversize, trailing data, bad field."""


class WrongRound(SecAggError):
    """A message that belongs to another cohort, schema version, window or round (or another recipient)."""


class ReplayedMessage(WrongRound):
    """An encrypted share that does not decrypt under this round's and this pair's key.

    Shares are bound by their AEAD associated data to the cohort, schema
    version, window, round, sender and recipient; a share moved to any other
    place lands here.
    """


class DuplicateInput(SecAggError):
    """A second message from a tenant that already sent one in this phase."""


class UnknownParticipant(SecAggError):
    """A tenant id that is not in the round's roster (or not where it should be)."""


class RoundAborted(SecAggError):
    """Fewer than ``threshold`` survivors: the round releases nothing."""


class InconsistentSurvivors(SecAggError):
    """A survivor set that the client must not unmask for.

    Raised when fewer than ``threshold`` survivors attested the set the client
    was shown, when someone attested a different set, when a peer appears both
    as survivor and as dropped, or when the set differs from the one this
    client already answered for.
    """


class InsufficientShares(SecAggError):
    """The server cannot unmask yet: some survivor's seed lacks shares, or a dropped peer's key is missing.

    Call ``ServerRound.result()`` again once more unmask responses arrived.
    """


class CorruptShares(SecAggError):
    """Reconstructed self-mask seeds do not match their commitments (a participant sent bad shares)."""


class WrongPhase(SecAggError):
    """An operation that the round's state machine does not allow in its current phase."""
