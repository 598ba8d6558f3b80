"""Hash-chained audit log: the pure kernel both sides use.

Each entry's hash is SHA-256 over the previous hash and the canonical JSON
of the entry's fields, so editing, removing or reordering any entry breaks
every hash after it. Storage lives with the caller (server database,
collector store); this module only computes and verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ChainedEntry:
    seq: int
    at: str
    actor: str
    kind: str
    payload_json: str
    prev_hash: str
    hash: str


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, kind: str, payload_json: str) -> str:
    body = canonical_json([seq, at, actor, kind, payload_json])
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode("utf-8")).hexdigest()


def chain_next(prev: ChainedEntry | None, at: str, actor: str, kind: str, payload: Any) -> ChainedEntry:
    """The entry that follows ``prev`` (``None``: the first entry)."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    payload_json = canonical_json(payload)
    return ChainedEntry(seq, at, actor, kind, payload_json, prev_hash, entry_hash(prev_hash, seq, at, actor, kind, payload_json))


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


def verify_chain(entries: Iterable[ChainedEntry], start_hash: str = GENESIS, start_seq: int = 1) -> ChainVerdict:
    """Verify entries in order; name the first entry that does not chain."""
    prev_hash = start_hash
    expected_seq = start_seq
    checked = 0
    for e in entries:
        if e.seq != expected_seq:
            return ChainVerdict(False, checked, e.seq, f"sequence gap: expected {expected_seq}, found {e.seq}")
        if e.prev_hash != prev_hash:
            return ChainVerdict(False, checked, e.seq, "prev_hash does not match the previous entry")
        if entry_hash(prev_hash, e.seq, e.at, e.actor, e.kind, e.payload_json) != e.hash:
            return ChainVerdict(False, checked, e.seq, "hash does not match the entry's contents")
        prev_hash = e.hash
        expected_seq += 1
        checked += 1
    return ChainVerdict(True, checked)


# -- signed heads ---------------------------------------------------------------
#
# A hash chain shows that no entry was changed, removed or reordered *before* its
# last entry, but a chain cut short (or cut and re-grown) still verifies. A signed
# head closes that gap: the holder of the signing key states "the chain had entry
# ``seq`` with hash ``hash`` at ``at``". A chain that ends before a signed head's
# sequence was truncated; one whose entry at that sequence has another hash was
# rewritten. Heads are checkpointed periodically and on every verification.

HEAD_TYPE = "fedsignal.audit-head/1"


def head_payload(seq: int, hash: str, at: str) -> bytes:
    """The exact bytes a head's signature covers."""
    return canonical_json({"type": HEAD_TYPE, "seq": seq, "hash": hash, "at": at}).encode("utf-8")


@dataclass(frozen=True)
class SignedHead:
    """The chain's tail at one moment, signed: Ed25519 over :func:`head_payload`."""

    seq: int
    hash: str
    at: str
    keyid: str
    signature: str  # hex

    def payload(self) -> bytes:
        return head_payload(self.seq, self.hash, self.at)


def head_signature_ok(head: SignedHead, public_key: Ed25519PublicKey) -> bool:
    """Whether ``head`` carries a valid signature of ``public_key``."""
    try:
        public_key.verify(bytes.fromhex(head.signature), head.payload())
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_chain_against_heads(
    entries: Iterable[ChainedEntry], heads: Sequence[SignedHead], public_key: Ed25519PublicKey
) -> ChainVerdict:
    """Verify the whole chain (from its first entry) and that it contains every signed head.

    Refused: a head whose signature does not verify (a forged or altered checkpoint), a
    chain that breaks (see :func:`verify_chain`), a chain that ends before a head's
    sequence (truncated tail) or whose entry at a head's sequence has another hash
    (rewritten tail). Entries after the newest head are accepted when they chain.
    """
    for head in heads:
        if not head_signature_ok(head, public_key):
            return ChainVerdict(False, 0, head.seq, f"the signed head at seq {head.seq} has an invalid signature")
    wanted = {h.seq: h for h in heads}
    hashes: dict[int, str] = {}
    last_seq = 0

    def watched(items: Iterable[ChainedEntry]) -> Iterator[ChainedEntry]:
        nonlocal last_seq
        for e in items:
            if e.seq in wanted:
                hashes[e.seq] = e.hash
            last_seq = e.seq
            yield e

    verdict = verify_chain(watched(entries))
    if not verdict.ok:
        return verdict
    for seq in sorted(wanted):
        head = wanted[seq]
        if seq > last_seq:
            return ChainVerdict(
                False, verdict.checked, last_seq + 1,
                f"truncated: the log ends at seq {last_seq} but a head signed at {head.at} has seq {seq}",
            )
        if hashes.get(seq) != head.hash:
            return ChainVerdict(
                False, verdict.checked, seq,
                f"rewritten: entry {seq} differs from the head signed at {head.at}",
            )
    return verdict
