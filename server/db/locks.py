"""Every advisory-lock key the server takes, named in one place, and the order to take them in.

PostgreSQL transaction-scoped advisory locks (``pg_advisory_xact_lock``,
taken with :func:`server.db.advisory_lock`) serialize critical sections across
replicas until the transaction ends. On SQLite the ``BEGIN IMMEDIATE`` write
lock already serializes every writer, so these calls are no-ops there.

Lock order. A transaction that needs several of these takes them in this
order and never the other way round (two replicas taking two locks in opposite
orders would deadlock until PostgreSQL's deadlock detector aborts one):

1. entity locks: at most one of :func:`tenant` (enrollment, revocation),
   :func:`rollout_cohort` (starting a rollout in a cohort) or :func:`rollout`
   (one rollout's state), then :func:`schema` (a cohort's signal-schema
   versions; :func:`server.signals.schemas.current_schema` takes it when it
   creates a new cohort's first version, so a transaction reads its cohort's
   schema before it appends to the audit chain);
2. :data:`AUDIT`, the audit chain's tail. Every writer that appends to the
   chain takes it, so writers that also need a lock of step 3 take it first,
   before any of those (``server.review.workflow.serialize_writes``);
3. at most one of :data:`TRUST_ROOT` (installing a trust-root version),
   :data:`DETECT` (one hotspot-detection pass at a time) or :func:`bundle`
   (issuing one cohort's bundle; a rollout step reissues it under step 1's lock).

Row locks (``SELECT ... FOR UPDATE``) come after the advisory locks.

The numeric values are part of the deployment: replicas of different releases
may share one database during an upgrade, so a key never changes its value.
"""

from __future__ import annotations

import hashlib
import zlib

#: The audit chain (``"FSAU"``): appends read the tail and insert after it under this lock.
AUDIT = 0x46534155
#: Trust-root installation (``"FSRT"``).
TRUST_ROOT = 0x46535254
#: Hotspot detection (``"FSCD"``).
DETECT = 0x46534344
#: The remediation-SLA sync (``"FSS\0SLA"``): one hotspot-age pass at a time; taken alone.
SLA = 0x46535300534C41


#: Ranks of the order above: within one transaction the ranks of the locks taken never decrease
#: (checked by :func:`server.db.advisory_lock` when ``FEDSIGNAL_CHECK_LOCK_ORDER=1``, as in the tests).
ENTITY_RANK, SCHEMA_RANK, AUDIT_RANK, LAST_RANK = 1, 2, 3, 4
_FIXED_RANKS = {AUDIT: AUDIT_RANK, TRUST_ROOT: LAST_RANK, DETECT: LAST_RANK}
_ranks: dict[int, int] = {}


def _ranked(key: int, rank: int) -> int:
    if len(_ranks) >= 65_536:  # bounded: a forgotten key only goes unchecked
        _ranks.clear()
    _ranks[key] = rank
    return key


def rank_of(key: int) -> int | None:
    """The order rank of an advisory-lock key made here (None: a key taken alone, or unknown)."""
    return _FIXED_RANKS.get(key) or _ranks.get(key)


def _blake_key(namespace: bytes, name: str) -> int:
    digest = hashlib.blake2b(namespace + name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def tenant(tenant_id: str) -> int:
    """One tenant's record (enrollment, revocation)."""
    return _ranked(_blake_key(b"fedsignal.tenant:", tenant_id), ENTITY_RANK)


def schema(cohort: str) -> int:
    """One cohort's signal-schema versions."""
    return _ranked(_blake_key(b"fedsignal.schema:", cohort), SCHEMA_RANK)


def rollout(rollout_id: str) -> int:
    """One rollout's state transitions."""
    return _ranked(0x46535200000000 + zlib.crc32(rollout_id.encode("utf-8")), ENTITY_RANK)


def rollout_cohort(cohort: str) -> int:
    """Starting a rollout in ``cohort`` (one active rollout per cohort)."""
    return rollout("cohort:" + cohort)


def bundle(cohort: str) -> int:
    """Issuing ``cohort``'s signed bundle."""
    return _ranked(0x46534200000000 + zlib.crc32(cohort.encode("utf-8")), LAST_RANK)
