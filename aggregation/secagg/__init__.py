"""Secure aggregation with distributed discrete-Gaussian noise: the pure kernel.

Bonawitz et al. 2017 (double masking, dropout recovery, consistency check),
Bell et al. 2020 (SecAgg+ sparse neighbour graph) and Kairouz, Liu, Steinke
2021 (distributed discrete Gaussian). No I/O: the server and the collector
store and transport the messages. See ``docs/secagg.md``.
"""

from aggregation.secagg.arithmetic import NOISE_HEADROOM_SIGMAS, decode, encode, modulus_bits, word_dtype
from aggregation.secagg.client import ClientRound, Phase, Verifier, pair_sign, share_associated_data
from aggregation.secagg.context import RosterEntry, RoundContext, roster_digest, survivor_set_digest
from aggregation.secagg.crypto import generate_keypair
from aggregation.secagg.errors import (
    CorruptShares,
    DuplicateInput,
    InconsistentSurvivors,
    InsufficientShares,
    InvalidRoundParams,
    MalformedMessage,
    ReplayedMessage,
    RoundAborted,
    SecAggError,
    UnknownParticipant,
    WrongPhase,
    WrongRound,
)
from aggregation.secagg.graph import (
    COMPLETE_GRAPH_MAX,
    default_degree,
    degree_failure_bounds,
    degree_of,
    derived_holders,
    neighbours,
    sent_holders,
    share_holders,
    share_threshold,
)
from aggregation.secagg.messages import (
    Attestation,
    EncryptedShare,
    MaskedInput,
    RelayedAttestations,
    UnmaskRequest,
    UnmaskResponse,
)
from aggregation.secagg.noise import MIN_SIGMA_SHARE, NoisePlan, kls_rho, kls_tau, plan_noise
from aggregation.secagg.server import ServerPhase, ServerRound

__all__ = [
    "COMPLETE_GRAPH_MAX",
    "MIN_SIGMA_SHARE",
    "NOISE_HEADROOM_SIGMAS",
    "Attestation",
    "ClientRound",
    "CorruptShares",
    "DuplicateInput",
    "EncryptedShare",
    "InconsistentSurvivors",
    "InsufficientShares",
    "InvalidRoundParams",
    "MalformedMessage",
    "MaskedInput",
    "NoisePlan",
    "Phase",
    "RelayedAttestations",
    "ReplayedMessage",
    "RosterEntry",
    "RoundAborted",
    "RoundContext",
    "SecAggError",
    "ServerPhase",
    "ServerRound",
    "UnknownParticipant",
    "UnmaskRequest",
    "UnmaskResponse",
    "Verifier",
    "WrongPhase",
    "WrongRound",
    "decode",
    "default_degree",
    "degree_failure_bounds",
    "degree_of",
    "encode",
    "generate_keypair",
    "kls_rho",
    "kls_tau",
    "modulus_bits",
    "neighbours",
    "pair_sign",
    "plan_noise",
    "roster_digest",
    "share_associated_data",
    "derived_holders",
    "sent_holders",
    "share_holders",
    "share_threshold",
    "survivor_set_digest",
    "word_dtype",
]
