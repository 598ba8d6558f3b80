"""Hash-chained audit log: the pure kernel both sides use.

Each entry's hash is SHA-256 over the previous hash and the canonical JSON
of the entry's fields, so editing, removing or reordering any entry breaks
every hash after it. Storage lives with the caller (server database,
collector store); this module only computes and verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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
