"""The audit chain's signed-head check, pure: truncation and rewritten tails are refused."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregation.audit import (
    ChainedEntry,
    SignedHead,
    chain_next,
    head_payload,
    verify_chain,
    verify_chain_against_heads,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _chain(n: int, tag: str = "ok") -> list[ChainedEntry]:
    entries: list[ChainedEntry] = []
    for i in range(n):
        entries.append(chain_next(entries[-1] if entries else None, f"2026-03-02T12:00:{i:02d}", "a", "k", {tag: i}))
    return entries


def _head(e: ChainedEntry, key: Ed25519PrivateKey = KEY) -> SignedHead:
    at = "2026-03-02T13:00:00"
    return SignedHead(e.seq, e.hash, at, "k1", key.sign(head_payload(e.seq, e.hash, at)).hex())


def test_an_intact_chain_with_entries_after_its_head_verifies() -> None:
    chain = _chain(8)
    verdict = verify_chain_against_heads(chain, [_head(chain[4])], KEY.public_key())
    assert verdict.ok and verdict.checked == 8


def test_a_truncated_chain_is_refused_though_it_still_chains() -> None:
    chain = _chain(8)
    head = _head(chain[7])
    assert verify_chain(chain[:5]).ok
    verdict = verify_chain_against_heads(chain[:5], [head], KEY.public_key())
    assert not verdict.ok and "truncated" in (verdict.reason or "") and verdict.first_broken_seq == 6


def test_a_rewritten_tail_is_refused_though_it_still_chains() -> None:
    chain = _chain(8)
    head = _head(chain[6])
    forged = chain[:4]
    for i in range(5):
        forged.append(chain_next(forged[-1], "2026-03-02T12:30:00", "m", "k", {"forged": i}))
    assert verify_chain(forged).ok
    verdict = verify_chain_against_heads(forged, [head], KEY.public_key())
    assert not verdict.ok and "rewritten" in (verdict.reason or "") and verdict.first_broken_seq == 7


def test_a_head_signed_by_another_key_or_altered_is_refused() -> None:
    chain = _chain(3)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    assert not verify_chain_against_heads(chain, [_head(chain[2], other)], KEY.public_key()).ok
    good = _head(chain[2])
    altered = SignedHead(good.seq, good.hash, "2030-01-01T00:00:00", good.keyid, good.signature)
    assert not verify_chain_against_heads(chain, [altered], KEY.public_key()).ok


def test_a_broken_link_is_still_named_first() -> None:
    chain = _chain(5)
    edited = [*chain[:2], ChainedEntry(3, chain[2].at, "x", chain[2].kind, chain[2].payload_json,
                                        chain[2].prev_hash, chain[2].hash), *chain[3:]]
    verdict = verify_chain_against_heads(edited, [_head(chain[4])], KEY.public_key())
    assert not verdict.ok and verdict.first_broken_seq == 3
