"""Shamir secret sharing of a 127-bit seed over GF(p), p = 2^127 - 1.

The secret is the self-mask seed itself, drawn uniformly from [0, p) (see
``crypto.draw_seed``): one 16-byte field element per share. Security does not
depend on the field's size beyond holding the secret: Shamir's scheme is
information-theoretically hiding over any field with more elements than
holders (fewer than t shares are independent of the secret), so the only
computational assumption left is that a 127-bit uniformly random seed cannot
be guessed (2^127 work against the SHA-256-derived ChaCha20 key of the
self-mask; the pairwise masks use 256-bit X25519/HKDF keys). The earlier
p = 2^521 - 1 carried a 256-bit seed in 66-byte elements: four times the
bytes per share and slower arithmetic for no security that matters against
the PRG's own 2^128 bound. Evaluation points are
small positive integers (the holders' 1-based roster positions), so the
Lagrange coefficients are ratios of small integers: one modular inversion per
reconstruction (batched), the rest products of machine-size integers.

Sharing is pseudorandom (``complete``): t - 1 holders derive their shares from
their pairwise secrets with the owner, and the seed with those points fixes
the polynomial; the other holders' shares are computed and sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from aggregation.secagg.errors import InsufficientShares, InvalidRoundParams

PRIME = (1 << 127) - 1  # a Mersenne prime
ELEMENT_BYTES = 16  # ceil(127 / 8)


def reconstruct(points: Sequence[tuple[int, int]], threshold: int) -> int:
    """f(0) from the first ``threshold`` of ``points`` (x, y), by Lagrange interpolation."""
    if len(points) < threshold:
        raise InsufficientShares(f"{len(points)} shares, {threshold} needed")
    pts = list(points[:threshold])
    xs = tuple(x for x, _ in pts)
    if len(set(xs)) != len(xs):
        raise InvalidRoundParams("duplicate evaluation points")
    total = 0
    for (_, y), lam in zip(pts, lagrange_at_zero(xs), strict=True):
        total += y * lam
    return total % PRIME


def complete(secret: int, fixed: Sequence[tuple[int, int]], xs: Sequence[int]) -> list[int]:
    """f(x) for each x of ``xs``, f the polynomial of degree ``len(fixed)`` with f(0) = ``secret``
    through the ``fixed`` points (x, y): a sharing with threshold ``len(fixed) + 1``.

    Pseudorandom secret sharing: when the fixed points are uniform and independent of the
    secret (shares each of those holders derives on its own), the shares have exactly the
    distribution of a random polynomial's (the map from f's coefficients to f(0) and f at ``len(fixed)``
    points is a bijection), so fewer than threshold of them still say nothing of the secret;
    only the shares at ``xs`` have to be sent. Lagrange over the known points, with their
    denominators inverted together; f(x) = sum_i w_i * prod_{j != i} (x - x_j), the products
    exact small-integer products.
    """
    if not 0 <= secret < PRIME or any(not 0 <= y < PRIME for _, y in fixed):
        raise InvalidRoundParams("share value out of the field")
    known = [(0, secret), *fixed]
    kx = [x for x, _ in known]
    if len(set(kx)) != len(kx) or len(set(xs)) != len(xs) or set(xs) & set(kx) or any(not 0 < x < PRIME for x in xs):
        raise InvalidRoundParams("evaluation points must be distinct and non-zero")
    inv = _inverses([math.prod(xi - xj for xj in kx if xj != xi) % PRIME for xi in kx])
    weights = [y * d % PRIME for (_, y), d in zip(known, inv, strict=True)]
    out = []
    for x in xs:
        full = math.prod(x - xj for xj in kx)  # nonzero: x is none of the known points
        out.append(sum(w * (full // (x - xi)) for w, xi in zip(weights, kx, strict=True)) % PRIME)
    return out


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p, for interpolation at 0.

    Numerators and denominators are exact small-integer products, inverted
    together (Montgomery's trick: one modular inversion). Cached: in the
    complete graph every survivor's seed is rebuilt from the same holders.
    """
    dens = [math.prod(xj - xi for xj in xs if xj != xi) % PRIME for xi in xs]
    full = math.prod(xs)
    nums = [(full // x) % PRIME for x in xs]
    return tuple(n * d % PRIME for n, d in zip(nums, _inverses(dens), strict=True))


def _inverses(values: Sequence[int]) -> list[int]:
    """The inverses mod p of nonzero ``values``, with one modular inversion (Montgomery's trick)."""
    prefix = [1] * (len(values) + 1)
    for i, d in enumerate(values):
        prefix[i + 1] = prefix[i] * d % PRIME
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out
