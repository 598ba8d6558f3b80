"""Pseudorandom secret sharing of the self-mask seeds: t - 1 holders derive their shares, the rest are sent.

The owner and the next t - 2 holders around the roster derive their share of the owner's seed
from their pairwise secret with it; the seed and those points fix the polynomial, so only the
other holders' shares travel (encrypted) through the server. These tests check the split of
the holders, that the derived shares are the same at both ends and never on the wire, that a
seed is rebuilt from any mix of derived and sent shares, and that a message breaking the split
is refused.
"""

from __future__ import annotations

import random

import pytest

from aggregation.secagg import (
    EncryptedShare,
    InvalidRoundParams,
    MalformedMessage,
    MaskedInput,
    UnknownParticipant,
    UnmaskRequest,
    derived_holders,
    neighbours,
    sent_holders,
    share_holders,
    share_threshold,
)
from aggregation.secagg.shamir import PRIME, complete, reconstruct

from .cohort import make_cohort


def test_complete_gives_a_sharing_any_threshold_of_which_rebuilds_the_secret() -> None:
    rnd = random.Random(3)
    for _ in range(50):
        t = rnd.randint(2, 8)
        xs = rnd.sample(range(1, 40), t - 1 + rnd.randint(1, 6))
        fixed = [(x, rnd.randrange(PRIME)) for x in xs[: t - 1]]
        secret = rnd.randrange(PRIME)
        ys = complete(secret, fixed, xs[t - 1 :])
        points = fixed + list(zip(xs[t - 1 :], ys, strict=True))
        for _ in range(5):
            assert reconstruct(rnd.sample(points, t), t) == secret
        # t - 1 of them fit another secret just as well: a different secret gives other sent shares.
        assert complete((secret + 1) % PRIME, fixed, xs[t - 1 :]) != ys


def test_complete_refuses_points_it_cannot_use() -> None:
    with pytest.raises(InvalidRoundParams):
        complete(5, [(1, 2), (1, 3)], [4])  # a known point twice
    with pytest.raises(InvalidRoundParams):
        complete(5, [(1, 2)], [1])  # a target that is a known point
    with pytest.raises(InvalidRoundParams):
        complete(5, [(1, 2)], [0])  # the secret's own point
    with pytest.raises(InvalidRoundParams):
        complete(PRIME, [(1, 2)], [3])  # out of the field


@pytest.mark.parametrize(("n", "degree"), [(2, None), (6, None), (40, 10)])
def test_holders_split_into_t_minus_one_derived_owner_first_and_the_rest_sent(n: int, degree: int | None) -> None:
    cohort = make_cohort(n, threshold=max(2, n // 2 + 1), degree=degree)
    ctx = cohort.ctx
    received = dict.fromkeys(ctx.tenant_ids, 0)
    for owner in ctx.tenant_ids:
        holders = set(share_holders(ctx, owner))
        derived, sent = derived_holders(ctx, owner), sent_holders(ctx, owner)
        assert owner in derived and len(derived) == share_threshold(ctx, owner) - 1
        assert derived | set(sent) == holders and not derived & set(sent) and list(sent) == sorted(sent)
        for h in sent:
            received[h] += 1
    if degree is not None:  # the sparse graph: every tenant still receives some sent shares
        assert min(received.values()) > 0


def test_masked_inputs_carry_only_sent_shares_and_the_seed_rebuilds_from_a_mix() -> None:
    cohort = make_cohort(6, threshold=4)
    ctx = cohort.ctx
    for tid in ctx.tenant_ids:
        msg = cohort.clients[tid].submit(cohort.tables[tid])
        assert sorted(s.recipient for s in msg.shares) == list(sent_holders(ctx, tid))
        assert len(msg.shares) == len(share_holders(ctx, tid)) - (share_threshold(ctx, tid) - 1)
        cohort.server.add_input(MaskedInput.from_bytes(msg.to_bytes(), ctx))
    survivors = cohort.server.close()
    cohort.attest()
    # Four of six answer: seed 0 comes back from its derived holders 0, 1, 2 and the sent share
    # of 3; seed 3 from its derived holder 3 and the sent shares of 0, 1, 2.
    responders = ctx.tenant_ids[:4]
    assert derived_holders(ctx, ctx.tenant_ids[0]) == set(ctx.tenant_ids[:3])
    assert derived_holders(ctx, ctx.tenant_ids[3]) == set(ctx.tenant_ids[3:6])
    cohort.unmask(responders)
    assert (cohort.server.result() == cohort.expected(survivors)).all()


def test_both_ends_derive_the_same_share_and_each_direction_its_own() -> None:
    cohort = make_cohort(5, threshold=3)
    u, v = cohort.ids[0], cohort.ids[1]
    assert v in derived_holders(cohort.ctx, u)
    held_by_v = cohort.clients[v]._derived_share(u, v)
    assert cohort.clients[u]._derived_share(u, v) == held_by_v
    assert cohort.clients[u]._derived_share(v, u) == cohort.clients[v]._derived_share(v, u) != held_by_v
    other_round = make_cohort(5, threshold=3, round_id="round-2")
    assert other_round.clients[v]._derived_share(u, v) != held_by_v  # bound to the round


def test_a_share_offered_for_a_seed_the_recipient_derives_is_refused() -> None:
    cohort = make_cohort(5, threshold=3)
    cohort.submit(cohort.ids)
    cohort.server.close()
    atts = cohort.attest()
    me = cohort.ids[1]
    owner = cohort.ids[0]  # me derives its share of owner's seed
    assert me in derived_holders(cohort.ctx, owner) and me in neighbours(cohort.ctx)[owner]
    req = cohort.server.unmask_request_for(me)
    assert owner not in {s.sender for s in req.shares}
    some = req.shares[0]
    extra = EncryptedShare(owner, me, some.ciphertext)
    with pytest.raises(UnknownParticipant, match="derives"):
        cohort.clients[me].unmask(UnmaskRequest(req.context_digest, me, req.survivors, (*req.shares, extra)), atts)


def test_the_server_refuses_an_input_that_sends_a_derived_share() -> None:
    cohort = make_cohort(5, threshold=3)
    me = cohort.ids[0]
    msg = cohort.clients[me].submit(cohort.tables[me])
    to_derived = sorted(derived_holders(cohort.ctx, me) - {me})[0]
    extra = EncryptedShare(me, to_derived, msg.shares[0].ciphertext)
    forged = MaskedInput(msg.context_digest, me, msg.modulus_bits, msg.masked, msg.seed_commitment,
                         tuple(sorted((*msg.shares, extra), key=lambda s: s.recipient)))
    with pytest.raises(MalformedMessage, match="do not derive"):
        cohort.server.add_input(forged)
    cohort.server.add_input(msg)  # the genuine input is still accepted
