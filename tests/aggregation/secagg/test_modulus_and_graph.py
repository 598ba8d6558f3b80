"""The modulus never wraps within its documented bound; the neighbour graph is what every party computes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregation.secagg import (
    COMPLETE_GRAPH_MAX,
    EncryptedShare,
    InvalidRoundParams,
    MalformedMessage,
    MaskedInput,
    decode,
    default_degree,
    degree_failure_bounds,
    encode,
    modulus_bits,
    neighbours,
    share_holders,
    share_threshold,
    word_dtype,
)
from aggregation.secagg.arithmetic import pack, packed_size, unpack
from aggregation.secagg.graph import CORRECTNESS_BITS, SECURITY_BITS

from .cohort import make_cohort


@pytest.mark.parametrize("max_abs", [0, 1, 7, 255, 1000, 2**20 - 3, 2**31, 2**40 + 5])
@pytest.mark.parametrize("sigma", [0.0, 1.5, 40.0])
def test_modulus_leaves_room_for_the_bound_and_the_noise_headroom(max_abs: int, sigma: float) -> None:
    bits = modulus_bits(max_abs, sigma)
    bound = max_abs + math.ceil(12 * sigma)
    assert bound <= 2 ** (bits - 1) - 1
    assert bits == 2 or bound > 2 ** (bits - 2) - 1  # and it is the smallest such b
    # Both extremes of the bound survive encode -> wrap -> decode.
    values = np.array([bound, -bound, 0], dtype=np.int64)
    np.testing.assert_array_equal(decode(encode(values, bits), bits), values)


def test_modulus_refuses_what_cannot_fit() -> None:
    with pytest.raises(InvalidRoundParams):
        modulus_bits(2**63)
    with pytest.raises(InvalidRoundParams):
        modulus_bits(-1)
    with pytest.raises(InvalidRoundParams):
        encode(np.array([128], dtype=np.int64), 8)


def test_round_at_the_documented_bound_never_overflows() -> None:
    # Every tenant at the per-cell extreme, the modulus from the documented bound: the sum decodes exactly.
    n, cell_max = 6, 500
    probe = make_cohort(n, length=32, threshold=4)
    bits = modulus_bits(n * probe.plan.scale_factor * cell_max, probe.plan.sigma_sum(n))
    for sign in (1, -1):
        cohort = make_cohort(n, length=32, threshold=4, bits=bits)
        for tid in cohort.ids:
            cohort.tables[tid] = np.full(32, sign * cell_max * cohort.plan.scale_factor, dtype=np.int64)
        result = cohort.run(cohort.ids)
        np.testing.assert_array_equal(result, cohort.expected(cohort.ids))
        assert (np.sign(result) == sign).all()


def test_complete_graph_up_to_the_limit_and_thresholds() -> None:
    ctx = make_cohort(COMPLETE_GRAPH_MAX, length=2).ctx
    graph = neighbours(ctx)
    assert all(len(v) == COMPLETE_GRAPH_MAX - 1 for v in graph.values())
    assert share_threshold(ctx, ctx.tenant_ids[0]) == ctx.threshold
    assert len(share_holders(ctx, ctx.tenant_ids[0])) == COMPLETE_GRAPH_MAX


def test_sparse_graph_is_symmetric_deterministic_and_per_round() -> None:
    a = make_cohort(200, length=2, seed=1).ctx
    again = make_cohort(200, length=2, seed=1).ctx
    other = make_cohort(200, length=2, seed=1, round_id="round-2").ctx
    g = neighbours(a)
    k = default_degree(200)
    assert g == neighbours(again)
    assert g != neighbours(other)
    for u, peers in g.items():
        assert u not in peers
        assert len(peers) == k  # exactly k-regular
        assert all(u in g[v] for v in peers)
        assert share_threshold(a, u) == (len(peers) + 1) // 2 + 1


@pytest.mark.parametrize("n", [33, 100, 1000, 10_000])
def test_default_degree_is_the_smallest_meeting_its_computed_bounds(n: int) -> None:
    k = default_degree(n)
    targets = (2.0**-SECURITY_BITS, 2.0**-CORRECTNESS_BITS)

    def meets(degree: int) -> bool:
        security, correctness = degree_failure_bounds(n, degree)
        return security <= targets[0] and correctness <= targets[1]

    if k == n - 1:
        # No sparse degree meets the bounds: the complete graph (Bonawitz's t-of-n sharing) is used.
        assert not any(meets(d) for d in range(2, n - 1, 2))
        return
    assert k % 2 == 0
    assert meets(k)
    assert not meets(k - 2)
    assert k <= 10 * math.log2(n)


# -- b-bit packing of the masked vector ------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 5, 8, 12, 16, 21, 28, 31, 32, 33, 47, 63, 64])
def test_packing_round_trips_at_b_bits_a_word(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for length in (1, 3, 7, 8, 9, 1000):
        words = rng.integers(0, 1 << bits, size=length, dtype=np.uint64).astype(word_dtype(bits))
        data = pack(words, bits)
        assert len(data) == packed_size(length, bits) == math.ceil(length * max(8, bits) / 8)
        back = unpack(data, bits)
        assert back.dtype == word_dtype(bits) and np.array_equal(back, words)
    # Words are reduced modulo 2^b before packing (a sum that wrapped past b bits packs its residue).
    wide = np.array([(1 << bits) + 3], dtype=np.uint64).astype(word_dtype(bits)) if bits < 64 else None
    if wide is not None:
        assert unpack(pack(wide, bits), bits)[0] == 3


def test_unpacking_refuses_what_pack_never_makes() -> None:
    data = pack(np.array([1, 2, 3], dtype=np.uint32), 28)  # 84 bits: 11 bytes, 4 padding bits
    assert len(data) == 11
    with pytest.raises(ValueError, match="padding"):
        unpack(data[:-1] + bytes([data[-1] | 0x80]), 28)
    with pytest.raises(ValueError, match="whole number"):
        unpack(data + b"\0", 28)  # 96 bits: 3 words would take 11 bytes, not 12
    with pytest.raises(ValueError, match="exceeds 5 bits"):
        unpack(bytes([0xFF]), 5)  # below 8 bits a word takes a byte; its high bits must be zero


def test_a_masked_input_takes_b_bits_a_value_on_the_wire() -> None:
    cohort = make_cohort(5, length=1000, threshold=3)
    me = cohort.ids[0]
    msg = cohort.clients[me].submit(cohort.tables[me])
    bits = cohort.ctx.modulus_bits
    assert len(msg.masked) == math.ceil(1000 * max(8, bits) / 8)
    assert MaskedInput.from_bytes(msg.to_bytes(), cohort.ctx) == msg
    # A stray padding bit makes bytes no client makes: refused as malformed.
    if (1000 * bits) % 8:
        data = bytearray(msg.to_bytes())
        start = data.index(msg.masked)
        data[start + len(msg.masked) - 1] |= 0x80
        with pytest.raises(MalformedMessage, match="padding"):
            MaskedInput.from_bytes(bytes(data), cohort.ctx)
    # Each share names only its recipient on the wire: a share of another sender cannot be encoded.
    foreign = EncryptedShare(cohort.ids[1], msg.shares[0].recipient, msg.shares[0].ciphertext)
    forged = MaskedInput(msg.context_digest, me, bits, msg.masked, msg.seed_commitment, (foreign, *msg.shares[1:]))
    with pytest.raises(MalformedMessage, match="another sender"):
        forged.to_bytes()
