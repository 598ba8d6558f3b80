"""The collector's side of secure aggregation: masking key, roster checks, masked release, unmasking.

What the tenant does, and why each check is here rather than on the server:

* **Masking key.** A long-term X25519 key pair lives in ``state_dir/secagg/masking.key``
  (0600). Its public half is registered in the cohort's roster with an ECDSA-SHA256
  signature by the enrolled identity key (``credentials/client.key``) over
  ``ROSTER_DOMAIN || RosterStatement(cohort, tenant, key)``.
* **Roster.** Before using a round, every roster entry is verified here: its certificate
  chains to the CA pinned at enrollment (``credentials/ca.crt``), names that tenant and
  this cohort, and its key signed the entry. The round context must list exactly the
  verified entries, this window, this schema version and the schema's noise. A server
  that inserts a key of its own is refused (:class:`RosterRejected`).
* **Seal.** At window seal (``tenant_agent.release`` calls :meth:`SecureRelease.seal`)
  the bounded table, clipped per cell to the round's room and multiplied by the plan's
  scale factor, is masked with the kernel (``aggregation.secagg.ClientRound``), which adds
  this tenant's discrete-Gaussian noise share. In the same store transaction the ledger
  spends the *cohort* release's loss (honest majority) and the tenant's own worst-case loss
  is recorded beside it (capped by ``SecAggConfig.own_worst_case_rho_cap``); the round state
  and the masked input are persisted, so a restart resends the same bytes, never redraws.
* **Presence.** Every due window the collector is online for gets an input, an empty table
  included (:meth:`SecureRelease.cover_empty_windows`), so the server cannot tell windows
  with traffic from windows without.
* **Unmask.** Once the survivor set is fixed the tenant signs the set it was shown, waits for
  at least t valid attestations of the same set (signatures checked against the roster's
  certificates), then answers with the kernel. A round it missed is a dropout, not an error.

The package by responsibility: ``keys`` (the masking key file), ``roster`` (roster and
attestation signatures), ``noise_pool`` (noise shares drawn ahead of the round, memory
only), ``round`` (:class:`SecureRelease`: seal, persist, transport calls, unmask),
``errors``. Only the names below are public.
"""

from tenant_agent.config import SecAggConfig
from tenant_agent.secagg.errors import NotInRound, OwnLossCapExceeded, RosterRejected, SecAggClientError
from tenant_agent.secagg.keys import KEY_FILE, load_or_create_masking_key
from tenant_agent.secagg.noise_pool import NoisePool
from tenant_agent.secagg.roster import ATTESTATION_DOMAIN, ROSTER_DOMAIN, RosterVerifier, roster_statement
from tenant_agent.secagg.round import (
    ABORTED,
    ACKED,
    ANSWERED,
    DONE,
    DROPPED,
    EMPTY_WINDOW_BACKFILL,
    FINAL_STATES,
    LOCAL_FALLBACK,
    MAX_CELL_COUNT,
    ONLINE_SINCE_SETTING,
    REFUSED,
    REGISTERED_SETTING,
    ROUND_PREFIX,
    SUBMITTED,
    LossSummary,
    PreparedRound,
    SecureRelease,
    is_secure,
)

__all__ = [
    "ABORTED",
    "ACKED",
    "ANSWERED",
    "ATTESTATION_DOMAIN",
    "DONE",
    "DROPPED",
    "EMPTY_WINDOW_BACKFILL",
    "FINAL_STATES",
    "KEY_FILE",
    "LOCAL_FALLBACK",
    "MAX_CELL_COUNT",
    "ONLINE_SINCE_SETTING",
    "REFUSED",
    "REGISTERED_SETTING",
    "ROSTER_DOMAIN",
    "ROUND_PREFIX",
    "SUBMITTED",
    "LossSummary",
    "NoisePool",
    "NotInRound",
    "OwnLossCapExceeded",
    "PreparedRound",
    "RosterRejected",
    "RosterVerifier",
    "SecAggClientError",
    "SecAggConfig",
    "SecureRelease",
    "is_secure",
    "load_or_create_masking_key",
    "roster_statement",
]
