"""The round end to end: masks cancel exactly, dropouts are recovered, too few survivors release nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aggregation.secagg import (
    ClientRound,
    DuplicateInput,
    InsufficientShares,
    InvalidRoundParams,
    MalformedMessage,
    MaskedInput,
    RosterEntry,
    RoundAborted,
    RoundContext,
    UnknownParticipant,
    WrongPhase,
    degree_of,
    neighbours,
    share_holders,
    share_threshold,
)
from aggregation.secagg.messages import EncryptedShare

from .cohort import fake_verify, make_cohort

# (n, degree): complete graphs (default below 33 tenants, and forced), and sparse graphs.
SHAPES = [(3, None), (8, None), (20, None), (40, None), (60, 10), (90, 16), (45, 44)]


@pytest.mark.parametrize(("n", "degree"), SHAPES)
def test_masks_cancel_for_random_dropout_patterns(n: int, degree: int | None) -> None:
    rnd = random.Random(n * 1000 + (degree or 0))
    recovered = 0
    for trial in range(3):
        cohort = make_cohort(n, length=24, degree=degree, seed=trial + 10 * n)
        complete = degree_of(cohort.ctx) == n - 1
        # Complete graph: any pattern down to the threshold. Sparse: up to 1/8 dropped, the
        # regime the degree is sized for; a pattern that leaves some seed without a majority
        # of its holders must be refused, never mis-summed.
        max_drop = n - cohort.ctx.threshold if complete else n // 8
        senders = sorted(rnd.sample(cohort.ids, n - rnd.randint(0, max_drop)))
        recoverable = all(
            len(set(share_holders(cohort.ctx, v)) & set(senders)) >= share_threshold(cohort.ctx, v)
            for v in senders
        )
        if not recoverable:
            with pytest.raises(InsufficientShares):
                cohort.run(senders)
            continue
        result = cohort.run(senders)
        assert result.dtype == np.int64
        np.testing.assert_array_equal(result, cohort.expected(senders))
        recovered += 1
    assert recovered >= 1


def test_graph_shapes_are_what_the_tests_claim() -> None:
    assert degree_of(make_cohort(20).ctx) == 19
    sparse = make_cohort(60, degree=10).ctx
    assert degree_of(sparse) == 10
    assert max(len(v) for v in neighbours(sparse).values()) <= 10
    assert degree_of(make_cohort(45, degree=44).ctx) == 44


def test_sum_is_signed_and_wraps_back_in_a_small_modulus() -> None:
    cohort = make_cohort(5, length=8, bits=16, threshold=3)
    for tid in cohort.ids:
        cohort.tables[tid] = np.full(8, -1000, dtype=np.int64)
    result = cohort.run(cohort.ids)
    np.testing.assert_array_equal(result, cohort.expected(cohort.ids))
    assert (result < 0).all()


def test_survivor_that_misses_unmask_is_fine_without_dropped_neighbours() -> None:
    cohort = make_cohort(10, threshold=6)
    cohort.submit(cohort.ids)
    cohort.server.close()
    cohort.attest()
    cohort.unmask(cohort.ids[:7])  # three survivors never answer; 7 >= threshold shares remain
    np.testing.assert_array_equal(cohort.server.result(), cohort.expected(cohort.ids))


def test_fewer_than_threshold_inputs_abort_and_release_nothing() -> None:
    cohort = make_cohort(6, threshold=4)
    cohort.submit(cohort.ids[:3])
    with pytest.raises(RoundAborted):
        cohort.server.close()
    with pytest.raises(RoundAborted):
        cohort.server.close()
    with pytest.raises(WrongPhase):
        cohort.server.unmask_request_for(cohort.ids[0])
    with pytest.raises(WrongPhase):
        cohort.server.result()
    with pytest.raises(WrongPhase):
        cohort.server.add_input(cohort.clients[cohort.ids[3]].submit(cohort.tables[cohort.ids[3]]))


def test_result_waits_for_enough_shares_then_succeeds() -> None:
    cohort = make_cohort(9, threshold=5)
    senders = cohort.ids[:8]
    cohort.submit(senders)
    cohort.server.close()
    cohort.attest()
    # Every survivor neighbours the dropped tenant: all must answer with its mask key.
    cohort.unmask(senders[:4])
    with pytest.raises(InsufficientShares):
        cohort.server.result()
    cohort.unmask(senders[4:])
    np.testing.assert_array_equal(cohort.server.result(), cohort.expected(senders))


def test_missing_key_for_a_dropped_neighbour_blocks_the_result() -> None:
    cohort = make_cohort(8, threshold=5)
    senders = cohort.ids[:7]
    cohort.submit(senders)
    cohort.server.close()
    cohort.attest()
    cohort.unmask(senders[:6])  # enough seed shares, but senders[6] still owes the dropped tenant's key
    with pytest.raises(InsufficientShares, match="mask keys"):
        cohort.server.result()


def test_server_refuses_duplicates_unknown_senders_and_wrong_shapes() -> None:
    cohort = make_cohort(4, length=8, threshold=3)
    a, b = cohort.ids[:2]
    msg = cohort.clients[a].submit(cohort.tables[a])
    cohort.server.add_input(msg)
    with pytest.raises(DuplicateInput):
        cohort.server.add_input(msg)
    with pytest.raises(UnknownParticipant):
        cohort.server.add_input(
            MaskedInput(msg.context_digest, "intruder", msg.modulus_bits, msg.masked, msg.seed_commitment, msg.shares)
        )
    good = cohort.clients[b].submit(cohort.tables[b])
    with pytest.raises(MalformedMessage, match="values"):
        cohort.server.add_input(
            MaskedInput(good.context_digest, b, good.modulus_bits, good.masked[:-4], good.seed_commitment, good.shares)
        )
    with pytest.raises(MalformedMessage, match="bit"):
        cohort.server.add_input(
            MaskedInput(good.context_digest, b, 16, good.masked, good.seed_commitment, good.shares)
        )
    with pytest.raises(MalformedMessage, match="holders"):
        cohort.server.add_input(
            MaskedInput(good.context_digest, b, good.modulus_bits, good.masked, good.seed_commitment, good.shares[1:])
        )
    forged = EncryptedShare(a, good.shares[0].recipient, good.shares[0].ciphertext)
    with pytest.raises(MalformedMessage, match="holders"):
        cohort.server.add_input(
            MaskedInput(
                good.context_digest, b, good.modulus_bits, good.masked, good.seed_commitment,
                (forged, *good.shares[1:]),
            )
        )
    cohort.server.add_input(good)  # the intact message still goes through after the refusals
    c = cohort.ids[2]
    cohort.submit([c])
    assert cohort.server.close() == frozenset({a, b, c})


def test_client_submits_once_and_checks_its_table() -> None:
    cohort = make_cohort(3, length=8)
    client = cohort.clients[cohort.ids[0]]
    with pytest.raises(Exception, match="length 8"):
        client.submit(np.zeros(7, dtype=np.int64))
    with pytest.raises(Exception, match="integers"):
        client.submit(np.zeros(8, dtype=np.float64))
    client.submit(np.zeros(8, dtype=np.int64))
    with pytest.raises(WrongPhase):
        client.submit(np.zeros(8, dtype=np.int64))


def test_client_restarted_after_submit_still_unmasks() -> None:
    cohort = make_cohort(6, threshold=4)
    cohort.submit(cohort.ids)
    # Every collector restarts between submit and unmask: only the persisted state and the key survive.
    for tid in cohort.ids:
        state = cohort.clients[tid].to_bytes()
        restored = ClientRound.from_bytes(state, cohort.keys[tid], verify=fake_verify)
        restored.noise_share = cohort.clients[tid].noise_share  # kept by the test only, to check the sum
        cohort.clients[tid] = restored
    cohort.server.close()
    cohort.attest()
    cohort.unmask(cohort.ids)
    np.testing.assert_array_equal(cohort.server.result(), cohort.expected(cohort.ids))


def test_restored_client_keeps_its_answer_and_cannot_submit() -> None:
    cohort = make_cohort(5, threshold=3)
    cohort.submit(cohort.ids)
    cohort.server.close()
    atts = cohort.attest()
    tid = cohort.ids[0]
    req = cohort.server.unmask_request_for(tid)
    first = cohort.clients[tid].unmask(req, atts)
    restored = ClientRound.from_bytes(cohort.clients[tid].to_bytes(), cohort.keys[tid], verify=fake_verify)
    assert restored.committed_digest == first.survivors_digest
    assert restored.unmask(req, atts) == first  # the same set again: the same answer
    with pytest.raises(WrongPhase):
        restored.submit(cohort.tables[tid])


def test_state_refuses_a_never_submitted_round_and_a_wrong_key() -> None:
    cohort = make_cohort(3)
    tid = cohort.ids[0]
    with pytest.raises(MalformedMessage, match="not submitted"):
        ClientRound.from_bytes(cohort.clients[tid].to_bytes(), cohort.keys[tid])
    cohort.clients[tid].submit(cohort.tables[tid])
    with pytest.raises(Exception, match="does not match"):
        ClientRound.from_bytes(cohort.clients[tid].to_bytes(), cohort.keys[cohort.ids[1]])


@pytest.mark.parametrize(("n", "threshold"), [(6, 3), (4, 2), (5, 6), (5, 1)])
def test_context_refuses_a_threshold_without_a_majority_or_beyond_the_roster(n: int, threshold: int) -> None:
    with pytest.raises(InvalidRoundParams, match="more than half"):
        make_cohort(n, threshold=threshold)


def test_a_low_order_roster_key_is_refused_not_used() -> None:
    cohort = make_cohort(3, length=4, threshold=2)
    victim, other = cohort.ids[0], cohort.ids[1]
    entries = tuple(
        RosterEntry(e.tenant_id, bytes(32) if e.tenant_id == other else e.public_key) for e in cohort.ctx.roster
    )
    ctx = RoundContext(
        cohort.ctx.cohort, cohort.ctx.schema_version, cohort.ctx.window_start, cohort.ctx.round_id,
        cohort.ctx.length, cohort.ctx.modulus_bits, cohort.ctx.threshold, entries,
    )
    plan = cohort.plan
    client = ClientRound(ctx, victim, cohort.keys[victim], plan)
    with pytest.raises(InvalidRoundParams, match="X25519"):
        client.submit(np.zeros(4, dtype=np.int64))


def test_pre_drawn_noise_and_cached_agreements_give_the_same_exact_sum() -> None:
    """submit(noise_share=) masks the given share; an agreement cache kept across rounds changes no mask."""
    from aggregation.secagg import ClientRound

    caches: dict[str, dict[bytes, bytes]] = {}
    for window, dropped in ((1_700_000_000, None), (1_700_003_600, "tenant-0002")):
        c = make_cohort(6, window_start=window, round_id=f"r{window}", seed=4)
        keys = c.keys
        for tid in c.ids:
            caches.setdefault(tid, {})
            c.clients[tid] = ClientRound(c.ctx, tid, keys[tid], c.plan, verify=c.clients[tid]._verify,
                                         pair_secrets=caches[tid])
        noises = {tid: c.plan.sample_share(c.ctx.length) for tid in c.ids}
        senders = [t for t in c.ids if t != dropped]
        for tid in senders:
            c.server.add_input(c.clients[tid].submit(c.tables[tid], noise_share=noises[tid]))
            assert c.clients[tid].noise_share is not None
        survivors = c.server.close()
        c.attest()
        c.unmask(sorted(survivors))
        expected = sum(c.tables[t] + noises[t] for t in senders)
        assert np.array_equal(c.server.result(), expected)
    # One X25519 per roster key (the 5 peers, and its own for the share it holds itself) over both rounds.
    assert all(len(cache) == 6 for cache in caches.values())


def test_a_noise_share_of_the_wrong_shape_or_type_is_refused() -> None:
    c = make_cohort(3)
    tid = c.ids[0]
    with pytest.raises(InvalidRoundParams):
        c.clients[tid].submit(c.tables[tid], noise_share=np.zeros(c.ctx.length + 1, dtype=np.int64))
    with pytest.raises(InvalidRoundParams):
        c.clients[tid].submit(c.tables[tid], noise_share=np.zeros(c.ctx.length, dtype=np.float64))
