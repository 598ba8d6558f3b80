"""The server parses each masked input once per process, and keeps no more than its byte budget."""

from __future__ import annotations

import pytest

from aggregation.secagg import (
    MalformedMessage,
    MaskedInput,
    RosterEntry,
    RoundContext,
    UnmaskResponse,
    generate_keypair,
)
from server.secagg.rounds import ReplayedRoundMessage, _ParsedInputs, _ParsedMessages, parsed_response

_IDS = ("a", "big", *(f"t{i:02d}" for i in range(20)))
CTX = RoundContext("c", 1, 0, "r", 100, 32, len(_IDS) // 2 + 1,
                   tuple(RosterEntry(t, generate_keypair()[1]) for t in _IDS))


def _input(sender: str, words: int, ctx: RoundContext = CTX) -> bytes:
    return MaskedInput(context_digest=ctx.digest(), sender=sender, modulus_bits=32, masked=bytes(4 * words),
                       seed_commitment=bytes([7]) * 32, shares=(), roster=ctx.tenant_ids).to_bytes()


def test_an_input_is_parsed_once_and_equal_to_a_fresh_parse() -> None:
    parse = _ParsedInputs(max_bytes=1 << 20)
    data = _input("a", 10)
    first = parse(data, CTX)
    assert parse(bytes(data), CTX) is first  # new bytes object, same content: the kept parse
    assert first == MaskedInput.from_bytes(data, CTX)


def test_an_input_of_another_round_is_a_replay_even_once_kept() -> None:
    parse = _ParsedInputs(max_bytes=1 << 20)
    data = _input("a", 10)
    parse(data, CTX)
    other = RoundContext("c", 1, 3600, "r2", 100, 32, CTX.threshold, CTX.roster)
    for _ in range(2):
        with pytest.raises(ReplayedRoundMessage):
            parse(data, other)


def test_malformed_bytes_are_refused_every_time_and_never_kept() -> None:
    parse = _ParsedInputs(max_bytes=1 << 20)
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            parse(b"FSM4 not an input", CTX)
    assert parse._size == 0


def test_the_byte_budget_evicts_the_oldest_and_large_inputs_are_not_kept() -> None:
    one = _input("t00", 100)
    parse = _ParsedInputs(max_bytes=16 * len(one) + 10)
    kept = [parse(_input(f"t{i:02d}", 100), CTX) for i in range(20)]
    assert parse._size <= 16 * len(one) + 10
    assert parse(_input("t19", 100), CTX) is kept[19] and parse(_input("t00", 100), CTX) is not kept[0]
    big = _input("big", 2000)  # larger than a sixteenth of the budget: parsed, not kept
    assert parse(big, CTX) is not parse(big, CTX)


def test_unmask_responses_are_kept_parsed_for_the_release_and_malformed_ones_never() -> None:
    parse = _ParsedMessages(lambda data, _rctx: UnmaskResponse.from_bytes(data), max_bytes=1 << 20)
    data = UnmaskResponse(context_digest=CTX.digest(), sender="a", survivors_digest=bytes([1]) * 32,
                          seed_shares=((0, 5),), pair_keys=()).to_bytes()
    assert parse(bytes(data), CTX) is parse(data, CTX) and parse(data, CTX) == UnmaskResponse.from_bytes(data)
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            parse(data + b"trailing", CTX)
    assert parse._size == len(data)
    assert isinstance(parsed_response(data, CTX), UnmaskResponse)
