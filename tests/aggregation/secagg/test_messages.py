"""Canonical encodings: round trips, and specific refusals of malformed bytes."""

from __future__ import annotations

from typing import Any

import pytest

from aggregation.secagg import (
    Attestation,
    ClientRound,
    MalformedMessage,
    MaskedInput,
    RosterEntry,
    RoundContext,
    UnmaskRequest,
    UnmaskResponse,
    WrongRound,
    roster_digest,
)
from aggregation.secagg._codec import MAX_MESSAGE_BYTES

from .cohort import Cohort, make_cohort

MESSAGE_TYPES = (MaskedInput, UnmaskRequest, UnmaskResponse, Attestation)


def _parse(kind: type, data: bytes, ctx: RoundContext) -> Any:
    """``kind.from_bytes``; an unmask request names roster positions and parses with the round's context."""
    if kind in (UnmaskRequest, MaskedInput):
        return kind.from_bytes(data, ctx)  # type: ignore[attr-defined]
    return kind.from_bytes(data)  # type: ignore[attr-defined]


def _messages() -> tuple[Cohort, list[object]]:
    cohort = make_cohort(5, length=10, threshold=3)
    masked = cohort.clients[cohort.ids[0]].submit(cohort.tables[cohort.ids[0]])
    cohort.server.add_input(masked)
    cohort.submit(cohort.ids[1:4])
    cohort.server.close()
    atts = cohort.attest()
    req = cohort.server.unmask_request_for(cohort.ids[0])
    resp = cohort.clients[cohort.ids[0]].unmask(req, atts)
    return cohort, [masked, req, resp, atts[0]]


def test_round_trips_are_exact_and_deterministic() -> None:
    cohort, msgs = _messages()
    for msg in msgs:
        data = msg.to_bytes()  # type: ignore[attr-defined]
        again = _parse(type(msg), data, cohort.ctx)
        assert again == msg
        assert again.to_bytes() == data
    assert RoundContext.from_bytes(cohort.ctx.to_bytes()) == cohort.ctx
    resp = msgs[2]
    assert isinstance(resp, UnmaskResponse) and resp.pair_keys and resp.seed_shares  # both kinds are encoded


def test_every_truncation_and_any_trailing_byte_is_refused() -> None:
    cohort, msgs = _messages()
    for msg in [*msgs, cohort.ctx]:
        data = msg.to_bytes()  # type: ignore[attr-defined]
        cut_points = sorted({*range(0, min(len(data), 80)), *range(len(data) - 80, len(data))} - {len(data)})
        for cut in cut_points:
            with pytest.raises(MalformedMessage):
                _parse(type(msg), data[:cut], cohort.ctx)
        with pytest.raises(MalformedMessage, match="trailing"):
            _parse(type(msg), data + b"\0", cohort.ctx)


def test_wrong_magic_oversize_and_non_bytes_are_refused() -> None:
    cohort, msgs = _messages()
    masked = msgs[0].to_bytes()  # type: ignore[attr-defined]
    with pytest.raises(MalformedMessage, match="magic"):
        UnmaskRequest.from_bytes(masked, cohort.ctx)
    with pytest.raises(MalformedMessage, match="exceeds"):
        MaskedInput.from_bytes(b"FSM4" + bytes(MAX_MESSAGE_BYTES), cohort.ctx)
    with pytest.raises(MalformedMessage, match="expected bytes"):
        MaskedInput.from_bytes("FSM4", cohort.ctx)  # type: ignore[arg-type]


def test_lengths_inside_messages_are_checked() -> None:
    cohort, msgs = _messages()
    masked = msgs[0]
    assert isinstance(masked, MaskedInput)
    data = bytearray(masked.to_bytes())
    # The masked vector's length prefix sits after magic, digest, roster size, sender and the bits byte.
    offset = 4 + 32 + 2 + 2 + 1
    assert int.from_bytes(data[offset : offset + 4], "big") == len(masked.masked)
    data[offset : offset + 4] = (len(masked.masked) - 1).to_bytes(4, "big")
    with pytest.raises(MalformedMessage):
        MaskedInput.from_bytes(bytes(data), cohort.ctx)
    data[offset : offset + 4] = (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(MalformedMessage, match="exceeds its limit"):
        MaskedInput.from_bytes(bytes(data), cohort.ctx)
    # A share count far beyond what the bytes can hold.
    req = msgs[1]
    assert isinstance(req, UnmaskRequest)
    raw = bytearray(req.to_bytes())
    count_at = 4 + 32 + 2 + 2 + 1  # magic, digest, roster size, recipient, the bitmap of 5
    assert int.from_bytes(raw[count_at : count_at + 2], "big") == len(req.shares)
    raw[count_at : count_at + 2] = (60_000).to_bytes(2, "big")
    with pytest.raises(MalformedMessage, match="truncated"):
        UnmaskRequest.from_bytes(bytes(raw), cohort.ctx)


def test_field_invariants_are_refused_on_parse() -> None:
    cohort, msgs = _messages()
    resp = msgs[2]
    assert isinstance(resp, UnmaskResponse)
    # Owners out of canonical order.
    swapped = UnmaskResponse.__new__(UnmaskResponse)
    object.__setattr__(swapped, "context_digest", resp.context_digest)
    object.__setattr__(swapped, "sender", resp.sender)
    object.__setattr__(swapped, "survivors_digest", resp.survivors_digest)
    object.__setattr__(swapped, "seed_shares", tuple(reversed(resp.seed_shares)))
    object.__setattr__(swapped, "pair_keys", resp.pair_keys)
    with pytest.raises(MalformedMessage, match="sorted"):
        UnmaskResponse.from_bytes(swapped.to_bytes())
    bad_bits = bytearray(msgs[0].to_bytes())  # type: ignore[attr-defined]
    bad_bits[4 + 32 + 2 + 2] = 65
    with pytest.raises(MalformedMessage, match="modulus_bits"):
        MaskedInput.from_bytes(bytes(bad_bits), cohort.ctx)
    bad_utf8 = bytearray(msgs[3].to_bytes())  # type: ignore[attr-defined]
    bad_utf8[8] = 0xFF
    with pytest.raises(MalformedMessage, match="UTF-8"):
        Attestation.from_bytes(bytes(bad_utf8))


def test_client_state_round_trips_and_refuses_garbage() -> None:
    cohort, _ = _messages()
    tid = cohort.ids[0]
    state = cohort.clients[tid].to_bytes()
    restored = ClientRound.from_bytes(state, cohort.keys[tid])
    assert restored.to_bytes() == state
    with pytest.raises(MalformedMessage):
        ClientRound.from_bytes(state[:-1], cohort.keys[tid])
    tampered = bytearray(state)
    tampered[-(4 + 32 + 1)] = 9  # the phase byte
    with pytest.raises(MalformedMessage, match="phase"):
        ClientRound.from_bytes(bytes(tampered), cohort.keys[tid])


def test_a_context_header_rebuilds_the_context_only_with_its_own_roster() -> None:
    cohort = make_cohort(5, length=10, threshold=3)
    ctx = cohort.ctx
    header = ctx.header_bytes()
    assert len(header) < len(ctx.to_bytes()) - 5 * 32  # no public key travels
    rebuilt = RoundContext.from_header(header, reversed(ctx.roster))  # any order: the roster is sorted
    assert rebuilt == ctx and rebuilt.to_bytes() == ctx.to_bytes() and rebuilt.digest() == ctx.digest()
    assert roster_digest(ctx.roster) == roster_digest(reversed(ctx.roster)) == ctx.roster_digest
    # Another roster (a key replaced, a tenant missing) is not the one the header names.
    other_key = (RosterEntry(ctx.roster[0].tenant_id, bytes(32)), *ctx.roster[1:])
    for held in (other_key, ctx.roster[1:], ()):
        with pytest.raises(WrongRound, match="another roster"):
            RoundContext.from_header(header, held)
    for bad in (header[:-1], header + b"\0", ctx.to_bytes()):
        with pytest.raises(MalformedMessage):
            RoundContext.from_header(bad, ctx.roster)


def test_shares_name_only_their_other_end_on_the_wire() -> None:
    cohort, msgs = _messages()
    masked, req = msgs[0], msgs[1]
    assert isinstance(masked, MaskedInput) and isinstance(req, UnmaskRequest)
    # The implied end is restored on parse: the sender from the input, the recipient from the request.
    assert MaskedInput.from_bytes(masked.to_bytes(), cohort.ctx).shares == masked.shares
    assert UnmaskRequest.from_bytes(req.to_bytes(), cohort.ctx).shares == req.shares
    assert all(s.recipient == req.recipient for s in req.shares)
    stray = req.shares[0]
    moved = type(stray)(stray.sender, cohort.ids[4], stray.ciphertext)
    with pytest.raises(MalformedMessage, match="another recipient"):
        UnmaskRequest(req.context_digest, req.recipient, req.survivors, (moved, *req.shares[1:])).to_bytes()


def test_unmask_request_names_tenants_by_roster_position() -> None:
    cohort, msgs = _messages()
    req = msgs[1]
    assert isinstance(req, UnmaskRequest)
    n = len(cohort.ids)
    data = req.to_bytes()
    # magic, digest, roster size, recipient, the survivor bitmap, the share count, then per share
    # a 2-byte sender and the 32-byte ciphertext (no nonce travels): no tenant id on the wire.
    assert len(data) == 4 + 32 + 2 + 2 + (n + 7) // 8 + 2 + len(req.shares) * (2 + 32)
    assert not any(tid.encode() in data for tid in cohort.ids)
    bitmap = data[40 : 40 + (n + 7) // 8]
    assert [cohort.ids[i] for i in range(n) if bitmap[i >> 3] >> (i & 7) & 1] == list(req.survivors)
    parsed = UnmaskRequest.from_bytes(data, cohort.ctx)
    assert (parsed.recipient, parsed.survivors, parsed.shares) == (req.recipient, req.survivors, req.shares)
    # A bit past the roster, a roster of another size, a position beyond the roster: malformed.
    stray = bytearray(data)
    stray[40] |= 1 << n  # n = 5 < 8: the byte's top bits lie beyond the roster
    with pytest.raises(MalformedMessage, match="beyond the roster"):
        UnmaskRequest.from_bytes(bytes(stray), cohort.ctx)
    resized = bytearray(data)
    resized[36:38] = (n + 1).to_bytes(2, "big")
    with pytest.raises(MalformedMessage, match="roster of 6"):
        UnmaskRequest.from_bytes(bytes(resized), cohort.ctx)
    for offset in (38, 40 + (n + 7) // 8 + 2):  # the recipient; the first share's sender
        beyond = bytearray(data)
        beyond[offset : offset + 2] = n.to_bytes(2, "big")
        with pytest.raises(MalformedMessage, match="beyond the roster"):
            UnmaskRequest.from_bytes(bytes(beyond), cohort.ctx)
    # Without the roster it cannot be encoded; a survivor outside the roster cannot be named.
    with pytest.raises(MalformedMessage, match="roster"):
        UnmaskRequest(req.context_digest, req.recipient, req.survivors, req.shares).to_bytes()
    with pytest.raises(MalformedMessage, match="not in the round's roster"):
        UnmaskRequest(req.context_digest, req.recipient, (*req.survivors, "zz-stranger"), req.shares,
                      roster=req.roster).to_bytes()


def test_masked_input_names_tenants_by_roster_position() -> None:
    cohort, msgs = _messages()
    masked = msgs[0]
    assert isinstance(masked, MaskedInput)
    data = masked.to_bytes()
    # magic, digest, roster size, sender, bits, the packed vector with its length, the commitment,
    # the share count, then per share a 2-byte recipient and the 32-byte ciphertext.
    assert len(data) == 4 + 32 + 2 + 2 + 1 + 4 + len(masked.masked) + 32 + 2 + len(masked.shares) * (2 + 32)
    assert not any(tid.encode() in data for tid in cohort.ids)
    assert MaskedInput.from_bytes(data, cohort.ctx) == masked
    resized = bytearray(data)
    resized[36:38] = (len(cohort.ids) - 1).to_bytes(2, "big")
    with pytest.raises(MalformedMessage, match="roster of 4"):
        MaskedInput.from_bytes(bytes(resized), cohort.ctx)
    share_at = 4 + 32 + 2 + 2 + 1 + 4 + len(masked.masked) + 32 + 2
    for offset in (38, share_at):  # the sender; the first share's recipient
        beyond = bytearray(data)
        beyond[offset : offset + 2] = len(cohort.ids).to_bytes(2, "big")
        with pytest.raises(MalformedMessage, match="beyond the roster"):
            MaskedInput.from_bytes(bytes(beyond), cohort.ctx)
    # Parsed against another round's context, its positions would name another roster: WrongRound.
    other = make_cohort(5, length=10, threshold=3, window_start=1_700_003_600)  # the next window's round
    with pytest.raises(WrongRound):
        MaskedInput.from_bytes(data, other.ctx)
    with pytest.raises(WrongRound):
        UnmaskRequest.from_bytes(msgs[1].to_bytes(), other.ctx)  # type: ignore[attr-defined]
    with pytest.raises(MalformedMessage, match="roster"):
        MaskedInput(masked.context_digest, masked.sender, masked.modulus_bits, masked.masked,
                    masked.seed_commitment, masked.shares).to_bytes()
