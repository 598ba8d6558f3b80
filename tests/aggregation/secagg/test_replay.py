"""Messages and shares made for one round are refused in every other one."""

from __future__ import annotations

import pytest

from aggregation.secagg import (
    EncryptedShare,
    Phase,
    ReplayedMessage,
    UnmaskRequest,
    WrongRound,
)

from .cohort import Cohort, make_cohort

BASE = {"cohort": "cohort-a", "schema_version": 3, "window_start": 1_700_000_000, "round_id": "round-1"}
VARIANTS = [
    {"window_start": 1_700_003_600},
    {"schema_version": 4},
    {"round_id": "round-2"},
    {"cohort": "cohort-b"},
]


def _pair(change: dict[str, object]) -> tuple[Cohort, Cohort]:
    # Same tenants and long-term keys, one public field different.
    a = make_cohort(5, threshold=3, seed=7, **BASE)  # type: ignore[arg-type]
    b = make_cohort(5, threshold=3, seed=7, keys=a.keys, **{**BASE, **change})  # type: ignore[arg-type]
    for c in (a, b):
        c.submit(c.ids)
        c.server.close()
    return a, b


@pytest.mark.parametrize("change", VARIANTS, ids=lambda c: next(iter(c)))
def test_shares_replayed_into_another_round_do_not_decrypt(change: dict[str, object]) -> None:
    a, b = _pair(change)
    me = b.ids[0]
    genuine = b.server.unmask_request_for(me)
    replayed = UnmaskRequest(genuine.context_digest, me, genuine.survivors, a.server.unmask_request_for(me).shares)
    atts = b.attest()
    with pytest.raises(ReplayedMessage):
        b.clients[me].unmask(replayed, atts)
    assert b.clients[me].phase is Phase.SUBMITTED  # nothing was revealed
    b.clients[me].unmask(genuine, atts)  # the genuine request still works


@pytest.mark.parametrize("change", VARIANTS, ids=lambda c: next(iter(c)))
def test_masked_inputs_and_responses_replayed_into_another_round_are_refused(change: dict[str, object]) -> None:
    a = make_cohort(5, threshold=3, seed=7, **BASE)  # type: ignore[arg-type]
    b = make_cohort(5, threshold=3, seed=7, keys=a.keys, **{**BASE, **change})  # type: ignore[arg-type]
    tid = a.ids[0]
    with pytest.raises(WrongRound):
        b.server.add_input(a.clients[tid].submit(a.tables[tid]))
    a.submit(a.ids[1:])
    b.submit(b.ids)
    a.server.close()
    b.server.close()
    atts = a.attest()
    b.attest()
    resp = a.clients[a.ids[1]].unmask(a.server.unmask_request_for(a.ids[1]), atts)
    with pytest.raises(WrongRound):
        b.server.add_unmask(resp)
    with pytest.raises(WrongRound):
        b.clients[b.ids[1]].unmask(a.server.unmask_request_for(a.ids[1]), atts)


def test_share_redirected_to_another_recipient_does_not_decrypt() -> None:
    cohort = make_cohort(5, threshold=3)
    cohort.submit(cohort.ids)
    cohort.server.close()
    atts = cohort.attest()
    me, other = cohort.ids[0], cohort.ids[1]
    mine = cohort.server.unmask_request_for(me)
    theirs = {s.sender: s for s in cohort.server.unmask_request_for(other).shares}
    # The server relabels the shares meant for `other` (sender -> other) as addressed to `me`
    # (the senders that sent to both; the others' shares to `me` stay as they are).
    assert {s.sender for s in mine.shares} & theirs.keys()
    moved = tuple(
        EncryptedShare(s.sender, me, theirs[s.sender].ciphertext) if s.sender in theirs else s
        for s in mine.shares
    )
    with pytest.raises(ReplayedMessage):
        cohort.clients[me].unmask(UnmaskRequest(mine.context_digest, me, mine.survivors, moved), atts)


def test_tampered_share_ciphertext_does_not_decrypt() -> None:
    cohort = make_cohort(4, threshold=3)
    cohort.submit(cohort.ids)
    cohort.server.close()
    atts = cohort.attest()
    me = cohort.ids[0]
    req = cohort.server.unmask_request_for(me)
    first = req.shares[0]
    flipped = EncryptedShare(first.sender, me, bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:])
    with pytest.raises(ReplayedMessage):
        cohort.clients[me].unmask(UnmaskRequest(req.context_digest, me, req.survivors, (flipped, *req.shares[1:])), atts)


def test_pair_keys_are_rfc5869_hkdf_and_differ_per_round_pair_and_purpose() -> None:
    """The two-HMAC derivation is HKDF-SHA256 byte for byte (checked against cryptography's HKDF),
    and every round, pair (in either order) and purpose gets its own key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from aggregation.secagg import crypto

    cohort = make_cohort(4, threshold=3)
    ctx, (a, b, c) = cohort.ctx, cohort.ids[:3]
    other = make_cohort(4, threshold=3, window_start=ctx.window_start + 3600).ctx
    secret = bytes(range(32))
    for purpose in (crypto.PURPOSE_MASK, crypto.PURPOSE_SHARE):
        reference = HKDF(algorithm=hashes.SHA256(), length=32, salt=crypto._HKDF_SALT,
                         info=crypto._pair_info(ctx, a, b, purpose)).derive(secret)
        assert crypto.derive_pair_key(secret, ctx, a, b, purpose) == reference
        assert crypto.expand_pair_key(crypto.pair_prk(secret), ctx, b, a, purpose) == reference
    keys = {crypto.derive_pair_key(secret, x, p, q, purpose)
            for x in (ctx, other) for p, q in ((a, b), (a, c)) for purpose in (crypto.PURPOSE_MASK, crypto.PURPOSE_SHARE)}
    assert len(keys) == 8


def test_a_share_is_aes_gcm_siv_under_the_pair_key_with_the_fixed_nonce() -> None:
    """What EncryptedShare documents, byte for byte: AES-256-GCM-SIV under the per-round pair key,
    SHARE_NONCE, the share's associated data; only the recipient's pair key opens it, and two
    masked inputs of one tenant for one round (two seeds) seal different bytes for one holder."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

    from aggregation.secagg import crypto, share_associated_data
    from aggregation.secagg.messages import SHARE_NONCE

    cohort = make_cohort(5, threshold=3)
    me = cohort.ids[0]
    msg = cohort.clients[me].submit(cohort.tables[me])
    share = msg.shares[0]
    holder = cohort.clients[share.recipient]
    key = holder._pair_key(me, crypto.PURPOSE_SHARE)
    ad = share_associated_data(cohort.ctx, me, share.recipient)
    plain = AESGCMSIV(key).decrypt(SHARE_NONCE, share.ciphertext, ad)
    assert len(plain) == 16 and int.from_bytes(plain, "big") < crypto.PRIME
    stranger = cohort.clients[next(t for t in cohort.ids if t not in (me, share.recipient))]
    with pytest.raises(InvalidTag):
        AESGCMSIV(stranger._pair_key(me, crypto.PURPOSE_SHARE)).decrypt(SHARE_NONCE, share.ciphertext, ad)
    again = make_cohort(5, threshold=3, seed=1, keys=cohort.keys)  # same keys and round, another seed
    second = again.clients[me].submit(again.tables[me])
    assert {s.recipient: s.ciphertext for s in second.shares}[share.recipient] != share.ciphertext
