"""What a round never changes once it is opened or closed, kept in memory by each server process.

A round's context, threshold, deadlines and noise are fixed when it opens; attestations
only accumulate. The handlers take those from here and ask the database only for what
moves: the phase and survivor set (two small columns), the caller's unmask request, and
attestations until the cache holds a threshold of them. Only committed rounds are cached
(read by a read-only session, or by a write transaction that did not open them). Every
write path still locks the round's row and re-reads its phase and survivor set under that
lock, by id and round id, so several replicas stay correct: a replica whose cache lacks
something loads it from the database, and nothing cached here can be contradicted later
(round ids are random, 128 bits, and never reused; an attestation, once stored, is never
replaced).

One cache per engine (tests run many servers, on many databases, in one process).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Engine

from aggregation.secagg import Attestation, RelayedAttestations, RoundContext
from server.secagg.models import RoundRecord

#: Rounds kept per engine (a round is looked up for a few minutes; a cohort opens one per window).
MAX_ROUNDS = 512


@dataclass(frozen=True)
class RoundFacts:
    """A round's fields that never change after it opened."""

    pk: int
    round_id: str
    cohort: str
    window_start: int
    window_end: int
    schema_version: int
    context: bytes
    rctx: RoundContext
    threshold: int
    roster_size: int
    sigma_central: float
    delta: float
    submit_deadline: datetime

    @cached_property
    def header(self) -> bytes:
        """The context without its roster (``RoundContext.header_bytes``), for callers that hold it."""
        return self.rctx.header_bytes()


class RoundFactsCache:
    """Immutable round facts by round id and by (cohort, window, schema version); thread-safe."""

    def __init__(self, limit: int = MAX_ROUNDS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._facts: OrderedDict[str, RoundFacts] = OrderedDict()
        self._by_window: dict[tuple[str, int, int], str] = {}
        self._attestations: dict[str, dict[str, bytes]] = {}
        self._relays: dict[str, bytes] = {}

    def get(self, round_id: str) -> RoundFacts | None:
        with self._lock:
            found = self._facts.get(round_id)
            if found is not None:
                self._facts.move_to_end(round_id)
            return found

    def for_window(self, cohort: str, window_start: int, schema_version: int) -> RoundFacts | None:
        with self._lock:
            rid = self._by_window.get((cohort, window_start, schema_version))
            return None if rid is None else self._facts.get(rid)

    def remember(self, row: RoundRecord | Any) -> RoundFacts:
        """The facts of ``row`` (a fully loaded round, or a Core row of the same columns), kept. Only
        a committed round may be remembered; a round is never remembered from the transaction that
        opened it."""
        with self._lock:
            found = self._facts.get(row.round_id)
            if found is not None:
                return found
        data = bytes(row.context)
        facts = RoundFacts(
            pk=row.id, round_id=row.round_id, cohort=row.cohort, window_start=row.window_start,
            window_end=row.window_end, schema_version=row.schema_version, context=data,
            rctx=RoundContext.from_bytes(data), threshold=row.threshold, roster_size=row.roster_size,
            sigma_central=row.sigma_central, delta=row.delta, submit_deadline=row.submit_deadline,
        )
        with self._lock:
            self._facts[facts.round_id] = facts
            self._by_window[(facts.cohort, facts.window_start, facts.schema_version)] = facts.round_id
            while len(self._facts) > self._limit:
                old, gone = self._facts.popitem(last=False)
                self._by_window.pop((gone.cohort, gone.window_start, gone.schema_version), None)
                self._attestations.pop(old, None)
                self._relays.pop(old, None)
        return facts

    def attestations(self, round_id: str) -> dict[str, bytes]:
        """Stored attestations of the round seen so far, by tenant (a copy)."""
        with self._lock:
            return dict(self._attestations.get(round_id, {}))

    def add_attestations(self, round_id: str, found: dict[str, bytes]) -> None:
        with self._lock:
            if round_id in self._facts:
                self._attestations.setdefault(round_id, {}).update(found)

    def relayed(self, round_id: str) -> bytes | None:
        """The relay of ``threshold`` attestations already built for the round (None: not yet)."""
        with self._lock:
            return self._relays.get(round_id)

    def relay(self, round_id: str, rctx: RoundContext, threshold: int, known: dict[str, bytes]) -> bytes:
        """Canonical :class:`RelayedAttestations` of ``threshold`` attestations of the round, or b""
        while ``known`` (stored attestations by tenant) holds fewer. Any ``threshold`` of them will
        do, so the first set built is kept and relayed to every later caller (built once per round
        and process, not parsed again at every call)."""
        with self._lock:
            found = self._relays.get(round_id)
        if found is not None:
            return found
        if len(known) < threshold:
            return b""
        chosen = sorted(known)[:threshold]
        data = RelayedAttestations.of(rctx, (Attestation.from_bytes(known[t]) for t in chosen)).to_bytes()
        with self._lock:
            if round_id in self._facts:
                data = self._relays.setdefault(round_id, data)
        return data


_CACHES: weakref.WeakKeyDictionary[Engine, RoundFactsCache] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def cache_for(engine: Engine) -> RoundFactsCache:
    with _GUARD:
        found = _CACHES.get(engine)
        if found is None:
            found = _CACHES[engine] = RoundFactsCache()
        return found
