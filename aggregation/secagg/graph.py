"""Who shares with whom: the complete graph for small cohorts, SecAgg+'s sparse random graph above.

Bonawitz et al. 2017 mask every pair and share every seed with everyone: O(n)
work per tenant and O(n^2) at the server. Bell et al. 2020 (SecAgg+) show that
a random graph of degree k = O(log n) keeps the same guarantees with
overwhelming probability, each tenant masking with and sharing to its k
neighbours only. Here:

* n <= ``COMPLETE_GRAPH_MAX`` (32): the complete graph; a seed is shared
  ``ctx.threshold``-of-n among all tenants (each holds one share, the owner
  too), exactly Bonawitz et al.'s t-out-of-n setting.
* above: a random k-regular circulant graph: the roster is put in a random
  order, and every tenant is joined to the tenants k/2 distinct random
  offsets away on either side of that circle. Order and offsets come from a
  ChaCha20 stream keyed by the round context's digest, so every party
  computes the same graph and a new round id gives a new graph. Because the
  order is a uniformly random permutation, each tenant's k neighbours are a
  uniformly random k-subset of the others, which is what the per-tenant
  bounds below assume. A seed is shared among the owner and its neighbours
  with a strict-majority threshold floor((k+1)/2) + 1 of those k+1 holders.

The default degree is computed, not asserted: the smallest even k for which
a union bound over the n tenants gives, for a fraction ``ASSUMED_CORRUPT``
of tenants colluding with the server and a fraction ``ASSUMED_DROPOUT``
dropping,

    n * P[Binomial(k, gamma) >= t(k)]       <= 2^-SECURITY_BITS   (no honest seed reconstructible by the adversary)
    n * P[Binomial(k+1, delta) > k+1-t(k)]  <= 2^-CORRECTNESS_BITS (every survivor's seed reconstructible)

(``degree_failure_bounds`` gives both figures; the binomial is the model of
the neighbours' draw, and sampling without replacement concentrates at least
as well, Hoeffding 1963, Section 6). For gamma = delta = 0.1 this
is k = 56 at n = 100, 60 at n = 1000 and 64 at n = 10000 (about 6 log2 n at
n = 1000): the O(log n) growth of Bell et al., Section 3. The connectivity of
the honest survivors' subgraph, which the pairwise masks need (a component
of honest survivors with no honest edge out of it has its own sum revealed),
is the other half of their argument (Bell et al. 2020, Section 3); we rely on
their analysis for it and do not recompute it here. The server chooses the round id and could grind it for a
favourable graph: G attempts multiply the security figure by G, which is why
it is 2^-40 and not 2^-20.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from aggregation.secagg.context import RoundContext

COMPLETE_GRAPH_MAX = 32
ASSUMED_CORRUPT = 0.1
ASSUMED_DROPOUT = 0.1
SECURITY_BITS = 40
CORRECTNESS_BITS = 20


def majority_threshold(holders: int) -> int:
    return holders // 2 + 1


def _binomial_tail(m: int, p: float, k: int) -> float:
    """P[Binomial(m, p) >= k], summed exactly in floating point from the top."""
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    return float(sum(math.comb(m, i) * p**i * (1.0 - p) ** (m - i) for i in range(k, m + 1)))


def degree_failure_bounds(
    n: int, k: int, corrupt: float = ASSUMED_CORRUPT, dropout: float = ASSUMED_DROPOUT
) -> tuple[float, float]:
    """(security failure, correctness failure) union bounds of degree k over n tenants (see module doc)."""
    holders = k + 1
    t = majority_threshold(holders)
    security = n * _binomial_tail(k, corrupt, t)
    correctness = n * _binomial_tail(holders, dropout, holders - t + 1)
    return security, correctness


@lru_cache(maxsize=256)
def default_degree(n: int) -> int:
    """The smallest even degree meeting both bounds for ``n`` tenants (n - 1 means the complete graph)."""
    if n <= COMPLETE_GRAPH_MAX:
        return n - 1
    for k in range(2, n - 1, 2):
        security, correctness = degree_failure_bounds(n, k)
        if security <= 2.0**-SECURITY_BITS and correctness <= 2.0**-CORRECTNESS_BITS:
            return k
    return n - 1


def degree_of(ctx: RoundContext) -> int:
    """The graph degree the round uses: n - 1 for the complete graph."""
    n = len(ctx.roster)
    k = ctx.neighbour_degree if ctx.neighbour_degree is not None else default_degree(n)
    return n - 1 if k >= n - 1 else k


def is_complete(ctx: RoundContext) -> bool:
    return degree_of(ctx) == len(ctx.roster) - 1


def neighbours(ctx: RoundContext) -> Mapping[str, frozenset[str]]:
    """Each tenant's neighbours (itself excluded); symmetric; the same for every party of the round."""
    return _neighbours(ctx)


@lru_cache(maxsize=64)
def _neighbours(ctx: RoundContext) -> Mapping[str, frozenset[str]]:
    ids = ctx.tenant_ids
    n = len(ids)
    if is_complete(ctx):
        everyone = frozenset(ids)
        return {tid: everyone - {tid} for tid in ids}
    half = degree_of(ctx) // 2
    span = (n - 1) // 2  # offsets 1..span give two distinct neighbours each (n/2 would give one)
    key = hashlib.sha256(b"fedsignal/secagg/v1/graph" + ctx.digest()).digest()
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(8 * (n + span)))
    words = np.frombuffer(stream, dtype="<u8")
    order = np.argsort(words[:n], kind="stable")  # position -> roster index
    offsets = 1 + np.argsort(words[n:], kind="stable")[:half]
    positions = np.arange(n)[:, None]
    around = np.concatenate([(positions + offsets) % n, (positions - offsets) % n], axis=1)
    adjacency = np.empty((n, 2 * half), dtype=np.int64)
    adjacency[order] = order[around]
    return {ids[i]: frozenset(ids[j] for j in adjacency[i].tolist()) for i in range(n)}


def share_holders(ctx: RoundContext, tenant_id: str) -> tuple[str, ...]:
    """Who holds a share of ``tenant_id``'s seed: the owner and its neighbours, in roster order."""
    group = neighbours(ctx)[tenant_id] | {tenant_id}
    return tuple(sorted(group))


def share_threshold(ctx: RoundContext, tenant_id: str) -> int:
    """Shares needed to rebuild ``tenant_id``'s seed: ``ctx.threshold`` (complete graph) or a majority of its holders."""
    if is_complete(ctx):
        return ctx.threshold
    return majority_threshold(len(neighbours(ctx)[tenant_id]) + 1)


def derived_holders(ctx: RoundContext, tenant_id: str) -> frozenset[str]:
    """The holders whose share of ``tenant_id``'s seed is derived, never sent: the owner and the
    next ``share_threshold - 2`` holders around the roster after it (``share_threshold - 1`` in
    all). Each derives its share from its pairwise secret with the owner; those points and the
    seed fix the owner's polynomial, and the owner sends only the other holders' shares
    (``sent_holders``)."""
    return _split_holders(ctx)[tenant_id][0]


def sent_holders(ctx: RoundContext, tenant_id: str) -> tuple[str, ...]:
    """The holders ``tenant_id`` sends an encrypted share of its seed to, in roster order."""
    return _split_holders(ctx)[tenant_id][1]


@lru_cache(maxsize=64)
def _split_holders(ctx: RoundContext) -> Mapping[str, tuple[frozenset[str], tuple[str, ...]]]:
    n = len(ctx.tenant_ids)
    out = {}
    for v in ctx.tenant_ids:
        holders = share_holders(ctx, v)
        me = ctx.index_of(v)
        ring = sorted(holders, key=lambda h: (ctx.index_of(h) - me) % n)  # v first, then onwards
        derived = frozenset(ring[: share_threshold(ctx, v) - 1])
        out[v] = (derived, tuple(h for h in holders if h not in derived))
    return out
