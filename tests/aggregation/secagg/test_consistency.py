"""Unmasking only for an attested survivor set, and never both secrets of one peer."""

from __future__ import annotations

import pytest

from aggregation.secagg import (
    Attestation,
    ClientRound,
    DuplicateInput,
    InconsistentSurvivors,
    MalformedMessage,
    RelayedAttestations,
    RoundAborted,
    SecAggError,
    UnknownParticipant,
    UnmaskRequest,
    UnmaskResponse,
    WrongPhase,
    WrongRound,
    neighbours,
    sent_holders,
    survivor_set_digest,
)

from .cohort import Cohort, fake_sign, fake_verify, make_cohort


def _closed(n: int = 7, threshold: int = 4, senders: int | None = None, **kw: object) -> Cohort:
    cohort = make_cohort(n, threshold=threshold, **kw)  # type: ignore[arg-type]
    cohort.submit(cohort.ids[: senders or n])
    cohort.server.close()
    return cohort


def _attest(cohort: Cohort, survivors: tuple[str, ...], who: tuple[str, ...]) -> list[Attestation]:
    digest = survivor_set_digest(cohort.ctx, survivors)
    return [Attestation(t, digest, fake_sign(t, digest)) for t in who]


def test_honest_response_never_reveals_both_secrets_of_a_peer() -> None:
    cohort = _closed(9, threshold=5, senders=6)
    atts = cohort.attest()
    survivors = cohort.server.survivors
    for tid in sorted(survivors):
        resp = cohort.clients[tid].unmask(cohort.server.unmask_request_for(tid), atts)
        ids = cohort.ctx.tenant_ids  # owners and peers travel as roster positions
        owners = {ids[o] for o, _ in resp.seed_shares}
        peers = {ids[p] for p, _ in resp.pair_keys}
        assert not owners & peers
        assert owners == (neighbours(cohort.ctx)[tid] | {tid}) & survivors
        assert peers == neighbours(cohort.ctx)[tid] - survivors
        assert peers  # three tenants dropped: every survivor reveals keys for them


def test_client_refuses_a_second_different_survivor_set() -> None:
    # The server shows tenant 0 the set without tenant 5, later a set without 5 and 6: answering both
    # would hand out 6's seed share and 6's pairwise key. The second request is refused.
    cohort = _closed(8, threshold=5)
    me = cohort.ids[0]
    first = tuple(t for t in cohort.ids if t != cohort.ids[5])
    second = tuple(t for t in first if t != cohort.ids[6])
    inbox = cohort.server.unmask_request_for(me).shares
    req1 = UnmaskRequest(cohort.ctx.digest(), me, first, tuple(s for s in inbox if s.sender in first))
    req2 = UnmaskRequest(cohort.ctx.digest(), me, second, tuple(s for s in inbox if s.sender in second))
    cohort.clients[me].unmask(req1, _attest(cohort, first, first))
    with pytest.raises(InconsistentSurvivors, match="different survivor set"):
        cohort.clients[me].unmask(req2, _attest(cohort, second, second))


def test_client_refuses_a_peer_in_both_roles() -> None:
    cohort = _closed(6, threshold=4)
    me, ghost = cohort.ids[0], cohort.ids[3]  # me holds a sent (not derived) share of ghost's seed
    assert me in sent_holders(cohort.ctx, ghost)
    shown = tuple(t for t in cohort.ids if t != ghost)
    inbox = cohort.server.unmask_request_for(me).shares  # includes ghost's share: ghost did submit
    req = UnmaskRequest(cohort.ctx.digest(), me, shown, inbox)
    with pytest.raises(InconsistentSurvivors, match="both roles"):
        cohort.clients[me].unmask(req, _attest(cohort, shown, shown))
    assert cohort.clients[me].committed_digest is None


def test_client_refuses_when_a_listed_survivor_share_is_missing() -> None:
    cohort = _closed(6, threshold=4)
    me = cohort.ids[0]
    req = cohort.server.unmask_request_for(me)
    cut = UnmaskRequest(req.context_digest, me, req.survivors, req.shares[1:])
    with pytest.raises(InconsistentSurvivors, match="missing"):
        cohort.clients[me].unmask(cut, _attest(cohort, req.survivors, req.survivors))


def test_client_refuses_without_threshold_attestations_of_the_same_set() -> None:
    cohort = _closed(7, threshold=4)
    me = cohort.ids[0]
    req = cohort.server.unmask_request_for(me)
    s = req.survivors
    with pytest.raises(InconsistentSurvivors, match="only 3"):
        cohort.clients[me].unmask(req, _attest(cohort, s, s[:3]))
    other = _attest(cohort, s[:-1], s[3:4])  # one survivor saw a different set: equivocation
    with pytest.raises(InconsistentSurvivors, match="different survivor set"):
        cohort.clients[me].unmask(req, _attest(cohort, s, s[:3]) + other)
    bad = Attestation(s[3], survivor_set_digest(cohort.ctx, s), b"forged")
    with pytest.raises(InconsistentSurvivors, match="does not verify"):
        cohort.clients[me].unmask(req, [*_attest(cohort, s, s[:3]), bad])
    with pytest.raises(InconsistentSurvivors, match="two attestations"):
        cohort.clients[me].unmask(req, _attest(cohort, s, s[:3]) + _attest(cohort, s, s[:1]))
    assert cohort.clients[me].committed_digest is None
    cohort.clients[me].unmask(req, _attest(cohort, s, s[:4]))  # and the honest case goes through


def test_client_refuses_attestations_from_non_survivors() -> None:
    cohort = _closed(7, threshold=4, senders=6)
    me = cohort.ids[0]
    req = cohort.server.unmask_request_for(me)
    outsider = cohort.ids[6]
    atts = _attest(cohort, req.survivors, req.survivors[:3]) + _attest(cohort, req.survivors, (outsider,))
    with pytest.raises(InconsistentSurvivors, match="not a survivor"):
        cohort.clients[me].unmask(req, atts)


def test_client_refuses_small_sets_sets_without_itself_and_foreign_requests() -> None:
    cohort = _closed(6, threshold=4)
    me = cohort.ids[0]
    inbox = cohort.server.unmask_request_for(me).shares
    small = cohort.ids[:3]
    req = UnmaskRequest(cohort.ctx.digest(), me, small, tuple(s for s in inbox if s.sender in small))
    with pytest.raises(RoundAborted):
        cohort.clients[me].unmask(req, _attest(cohort, small, small))
    without_me = cohort.ids[1:]
    req = UnmaskRequest(cohort.ctx.digest(), me, without_me, tuple(s for s in inbox if s.sender in without_me))
    with pytest.raises(InconsistentSurvivors, match="not in the survivor set"):
        cohort.clients[me].unmask(req, _attest(cohort, without_me, without_me))
    to_other = cohort.server.unmask_request_for(cohort.ids[1])
    with pytest.raises(WrongRound, match="addressed"):
        cohort.clients[me].unmask(to_other, cohort.attest())
    stranger = UnmaskRequest(cohort.ctx.digest(), me, (*cohort.ids, "zz-stranger"), inbox)
    with pytest.raises(UnknownParticipant):
        cohort.clients[me].unmask(stranger, [])


def test_client_without_verifier_refuses_and_unsubmitted_client_refuses() -> None:
    cohort = _closed(4, threshold=3, senders=3)
    me = cohort.ids[0]
    req = cohort.server.unmask_request_for(me)
    cohort.clients[me]._verify = None
    with pytest.raises(SecAggError, match="verifier"):
        cohort.clients[me].unmask(req, [])
    idle = cohort.clients[cohort.ids[3]]
    with pytest.raises(WrongPhase):
        idle.unmask(req, [])


def test_server_refuses_attestations_and_responses_for_another_set() -> None:
    cohort = _closed(6, threshold=4, senders=5)
    s = tuple(sorted(cohort.server.survivors))
    with pytest.raises(InconsistentSurvivors):
        cohort.server.add_attestation(_attest(cohort, s[:-1], s[:1])[0])
    with pytest.raises(UnknownParticipant):
        cohort.server.add_attestation(_attest(cohort, s, (cohort.ids[5],))[0])
    me = s[0]
    uncommitted = ClientRound.from_bytes(cohort.clients[me].to_bytes(), cohort.keys[me], verify=fake_verify)
    atts = cohort.attest()
    with pytest.raises(Exception, match="already attested"):
        cohort.server.add_attestation(atts[0])
    inbox = cohort.server.unmask_request_for(me).shares
    other_set = s[:-1]
    req = UnmaskRequest(cohort.ctx.digest(), me, other_set, tuple(x for x in inbox if x.sender in other_set))
    # A tenant the server fooled (shown another set before it attested S) answers for that set.
    resp = uncommitted.unmask(req, _attest(cohort, other_set, other_set))
    with pytest.raises(InconsistentSurvivors, match="different survivor set"):
        cohort.server.add_unmask(resp)


def test_client_attests_one_survivor_set_only_even_after_a_restart() -> None:
    cohort = _closed(6, threshold=4)
    me = cohort.ids[0]
    full = cohort.server.unmask_request_for(me)
    smaller = tuple(full.survivors[:-1])
    other = UnmaskRequest(full.context_digest, me, smaller, tuple(s for s in full.shares if s.sender in smaller))
    digest = cohort.clients[me].attest(full)
    assert digest == survivor_set_digest(cohort.ctx, full.survivors) == cohort.server.survivors_digest
    assert cohort.clients[me].attest(full) == digest  # the same set again is fine
    with pytest.raises(InconsistentSurvivors, match="already attested"):
        cohort.clients[me].attest(other)
    restored = ClientRound.from_bytes(cohort.clients[me].to_bytes(), cohort.keys[me], verify=fake_verify)
    assert restored.committed_digest == digest
    with pytest.raises(InconsistentSurvivors, match="already attested"):
        restored.attest(other)
    with pytest.raises(InconsistentSurvivors, match="different survivor set"):
        restored.unmask(other, _attest(cohort, smaller, smaller))


def test_server_refuses_a_response_that_reveals_both_secrets_of_a_peer() -> None:
    cohort = _closed(6, threshold=4, senders=5)
    atts = cohort.attest()
    me = sorted(cohort.server.survivors)[0]
    honest = cohort.clients[me].unmask(cohort.server.unmask_request_for(me), atts)
    mine = cohort.ctx.index_of(me)
    peer = honest.seed_shares[-1][0] if honest.seed_shares[-1][0] != mine else honest.seed_shares[0][0]
    both = UnmaskResponse(
        honest.context_digest, me, honest.survivors_digest, honest.seed_shares,
        tuple(sorted([*honest.pair_keys, (peer, bytes(32))])),
    )
    with pytest.raises(MalformedMessage, match="exactly"):
        cohort.server.add_unmask(both)
    cohort.server.add_unmask(honest)
    with pytest.raises(DuplicateInput):
        cohort.server.add_unmask(honest)


def test_relaying_threshold_attestations_is_enough() -> None:
    cohort = _closed(7, threshold=5)
    cohort.attest()
    relayed = cohort.server.attestations(limit=cohort.ctx.threshold)
    assert len(relayed) == 5 and len(cohort.server.attestations()) == 7
    me = cohort.ids[6]  # not among the relayed attesters: it still unmasks
    cohort.clients[me].unmask(cohort.server.unmask_request_for(me), relayed)
    with pytest.raises(InconsistentSurvivors, match="only 4"):
        cohort.clients[cohort.ids[0]].unmask(cohort.server.unmask_request_for(cohort.ids[0]), relayed[:4])


# -- the compact relay (RelayedAttestations) ------------------------------------------------------


def test_the_compact_relay_round_trips_and_is_enough_to_unmask() -> None:
    cohort = _closed(7, threshold=5)
    cohort.attest()
    relayed = RelayedAttestations.of(cohort.ctx, cohort.server.attestations(limit=5))
    data = relayed.to_bytes()
    assert RelayedAttestations.from_bytes(data) == relayed and RelayedAttestations.from_bytes(data).to_bytes() == data
    # The digest once and a 2-byte roster index per signer: smaller than the attestations themselves.
    assert len(data) < sum(len(a.to_bytes()) for a in cohort.server.attestations(limit=5)) - 4 * 32
    rebuilt = relayed.attestations(cohort.ctx)
    assert list(rebuilt) == list(cohort.server.attestations(limit=5))
    me = cohort.ids[6]
    cohort.clients[me].unmask(cohort.server.unmask_request_for(me), rebuilt)


def test_a_tampered_relay_is_refused_by_the_client() -> None:
    cohort = _closed(7, threshold=5)
    cohort.attest()
    relayed = RelayedAttestations.of(cohort.ctx, cohort.server.attestations(limit=5))
    me = cohort.ids[6]
    request = cohort.server.unmask_request_for(me)
    # The server renames a signer (index shifted): that signature is not the named tenant's.
    shifted = RelayedAttestations(relayed.digest, (*relayed.signers[:-1], 6), relayed.signatures)
    with pytest.raises(InconsistentSurvivors, match="signature does not verify"):
        cohort.clients[me].unmask(request, shifted.attestations(cohort.ctx))
    # ... or relays another survivor set's digest: the attestations are of a different set.
    other = RelayedAttestations(bytes(32), relayed.signers, relayed.signatures)
    with pytest.raises(InconsistentSurvivors, match="different survivor set"):
        cohort.clients[me].unmask(request, other.attestations(cohort.ctx))
    # ... or a signer beyond the roster.
    beyond = RelayedAttestations(relayed.digest, (*relayed.signers[:-1], 7), relayed.signatures)
    with pytest.raises(MalformedMessage, match="beyond the roster"):
        beyond.attestations(cohort.ctx)


def test_malformed_relays_are_refused() -> None:
    cohort = _closed(7, threshold=5)
    atts = cohort.attest()
    good = RelayedAttestations.of(cohort.ctx, atts[:5]).to_bytes()
    for bad in (good[:-1], good + b"\0", b"FSX1" + good[4:], good[:36]):
        with pytest.raises(MalformedMessage):
            RelayedAttestations.from_bytes(bad)
    with pytest.raises(MalformedMessage, match="distinct, increasing"):
        RelayedAttestations(bytes(32), (2, 1), (b"a", b"b"))
    with pytest.raises(MalformedMessage, match="one signature per signer"):
        RelayedAttestations(bytes(32), (1, 2), (b"a",))
    with pytest.raises(MalformedMessage, match="1..1024 bytes"):
        RelayedAttestations(bytes(32), (1,), (b"",))
    mixed = [atts[0], Attestation(atts[1].tenant_id, bytes(32), atts[1].signature)]
    with pytest.raises(MalformedMessage, match="different survivor sets"):
        RelayedAttestations.of(cohort.ctx, mixed)
    with pytest.raises(UnknownParticipant):
        RelayedAttestations.of(cohort.ctx, [Attestation("stranger", atts[0].digest, b"x")])


def test_ecdsa_signatures_are_relayed_as_r_and_s_and_come_back_byte_for_byte() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    cohort = _closed(7, threshold=5)
    digest = cohort.server.survivors_digest
    keys = {t: ec.generate_private_key(ec.SECP256R1()) for t in cohort.ids}
    signed = [Attestation(t, digest, keys[t].sign(digest, ec.ECDSA(hashes.SHA256()))) for t in cohort.ids[:5]]
    relayed = RelayedAttestations.of(cohort.ctx, signed)
    data = relayed.to_bytes()
    # Per signer: a 2-byte index, a form byte and 64 bytes r || s (DER takes 70-72 and a length).
    assert len(data) == 4 + 32 + 4 + 5 * (2 + 1 + 64)
    back = RelayedAttestations.from_bytes(data)
    assert back.signatures == relayed.signatures and back.to_bytes() == data
    for att in back.attestations(cohort.ctx):
        keys[att.tenant_id].public_key().verify(att.signature, digest, ec.ECDSA(hashes.SHA256()))
    # Other signatures travel as they are; a DER signature sent in full is not the canonical form.
    opaque = RelayedAttestations.of(cohort.ctx, [Attestation(cohort.ids[0], digest, b"sig:x")])
    assert RelayedAttestations.from_bytes(opaque.to_bytes()).signatures == (b"sig:x",)
    der = signed[0].signature
    full = (RelayedAttestations.MAGIC + digest + (1).to_bytes(4, "big") + (0).to_bytes(2, "big") + b"\x01"
            + len(der).to_bytes(2, "big") + der)
    with pytest.raises(MalformedMessage, match="sent in full"):
        RelayedAttestations.from_bytes(full)
    with pytest.raises(MalformedMessage, match="unknown signature form"):
        RelayedAttestations.from_bytes(full[:42] + b"\x07" + full[43:])


def test_a_response_naming_a_position_beyond_the_roster_is_refused() -> None:
    cohort = _closed(6, threshold=4, senders=5)
    atts = cohort.attest()
    me = sorted(cohort.server.survivors)[0]
    honest = cohort.clients[me].unmask(cohort.server.unmask_request_for(me), atts)
    beyond = UnmaskResponse(honest.context_digest, me, honest.survivors_digest,
                            (*honest.seed_shares[:-1], (6, honest.seed_shares[-1][1])), honest.pair_keys)
    with pytest.raises(UnknownParticipant, match="beyond the roster"):
        cohort.server.add_unmask(UnmaskResponse.from_bytes(beyond.to_bytes()))
    with pytest.raises(MalformedMessage, match="roster positions"):
        UnmaskResponse(honest.context_digest, me, honest.survivors_digest, (("t0", 1),), ())  # type: ignore[arg-type]
    cohort.server.add_unmask(honest)  # the honest answer still goes through
