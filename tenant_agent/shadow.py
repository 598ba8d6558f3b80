"""Shadow pairing: each shadow turn meets its live turn, and only their paired outcome is released.

In a rollout's shadow stage the resolve API answers, for a sticky share of
sessions, ``serve: <stable>`` plus ``shadow: <candidate>``; the agent runs the
candidate on the same input beside the live path, discards its output and
emits its telemetry with ``fedsignal.mode = shadow`` and
``fedsignal.shadow.of = <the live turn's event id>`` (docs/event-schema.md).

:func:`divert` (called on the collector's record path) takes every shadow
turn out of the batch: a shadow turn never enters the live window table, so
it is never canary exposure nor live evidence. The live turns of shadowed
sessions pass on as usual (with their stable label) and are also noted here.
:class:`ShadowPairer` keeps, in ``<state_dir>/shadow.db``, only what pairing
needs (turn ids, the session/user the pair is charged to, the intent, the
taxonomy's measures; no text) and, for every complete pair, releases two
rows through :func:`tenant_agent.replay.release_slices`: under
``shadow-worse-<rollout>`` the measures on which the shadow turn is worse
than its live twin, under ``shadow-better-<rollout>`` those on which it is
better, each with one turn (the pair). Those are McNemar's discordant
counts; the server's paired test reads them.

Edge cases: a duplicate shadow turn (same ``shadow_of``) is dropped; a shadow
turn whose live turn has not arrived waits (a late live turn completes the
pair) until ``pending_seconds`` pass, then it is dropped as orphaned; a live
turn is paired at most once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregation.clock import to_unix
from aggregation.events import DecisionEvent
from aggregation.rollout_plan import session_in_shadow, shadow_label
from aggregation.schema import TURNS
from aggregation.taxonomy import Taxonomy
from tenant_agent.replay import SliceRow, missing_labels, release_slices

SHADOW_DB = "shadow.db"
#: Measures where more is better: the shadow is worse when it lacks one its live twin has.
POSITIVE_MEASURES = frozenset({"task_success"})


@dataclass(frozen=True)
class ShadowStage:
    rollout_id: str
    share: float


@dataclass
class PairingCounts:
    shadow_turns: int = 0
    live_turns: int = 0
    pairs: int = 0
    duplicates: int = 0
    orphaned: int = 0
    released: int = 0


def discordance(live: frozenset[str], shadow: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(measures where the shadow is worse, measures where it is better) for one pair."""
    worse: set[str] = set()
    better: set[str] = set()
    for m in (live | shadow) - {TURNS}:
        in_live, in_shadow = m in live, m in shadow
        if in_live == in_shadow:
            continue
        shadow_has_more = in_shadow and not in_live
        bad_for_shadow = not shadow_has_more if m in POSITIVE_MEASURES else shadow_has_more
        (worse if bad_for_shadow else better).add(m)
    return frozenset(worse), frozenset(better)


class ShadowPairer:
    """Pairs one tenant's shadow turns with their live turns (``shadow.db`` in the state dir)."""

    def __init__(self, collector: Any, stage: Callable[[], ShadowStage | None], *,
                 pending_seconds: float = 3600.0) -> None:
        self.collector = collector
        self._stage = stage
        self.pending_seconds = pending_seconds
        self.counts = PairingCounts()
        self._taxonomy: Taxonomy = collector.taxonomy
        self._lock = threading.Lock()
        path = Path(collector.config.state_dir) / SHADOW_DB
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS turns (role TEXT NOT NULL, turn_id TEXT NOT NULL, "
                         "rollout_id TEXT NOT NULL, session_id TEXT NOT NULL, user_id TEXT, intent TEXT, "
                         "measures TEXT NOT NULL, at REAL NOT NULL, paired INTEGER NOT NULL DEFAULT 0, "
                         "PRIMARY KEY (role, turn_id))")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def divert(self, events: Sequence[DecisionEvent]) -> list[DecisionEvent]:
        """The live events of ``events``; shadow turns are kept for pairing, never recorded as live."""
        stage = self._stage()
        live_out: list[DecisionEvent] = []
        notes: list[tuple[str, str, DecisionEvent]] = []
        for e in events:
            if e.mode == "shadow":
                notes.append(("shadow", e.shadow_of or "", e))
                continue
            live_out.append(e)
            if (stage is not None and e.event_id
                    and session_in_shadow(stage.rollout_id, e.session_id, stage.share)):
                notes.append(("live", e.event_id, e))
        if notes:
            self._note(notes, stage)
            self.pair()
        return live_out

    def _note(self, notes: Sequence[tuple[str, str, DecisionEvent]], stage: ShadowStage | None) -> None:
        """Keep the turns to pair, in one transaction (what pairing needs only: ids, unit, intent, measures)."""
        if stage is None:  # no shadow stage is running: a shadow turn has nothing to pair with
            self.counts.orphaned += sum(role == "shadow" for role, _, _ in notes)
            return
        rows = []
        for role, turn_id, e in notes:
            if not turn_id:
                self.counts.orphaned += role == "shadow"
                continue
            rows.append((role, turn_id, stage.rollout_id, e.session_id, e.user_id, e.intent,
                         json.dumps(sorted(self._taxonomy.classify(e))), float(e.timestamp)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cur = self._db.execute("INSERT OR IGNORE INTO turns VALUES (?,?,?,?,?,?,?,?,0)", row)
                    if not cur.rowcount:
                        self.counts.duplicates += 1
                    elif row[0] == "shadow":
                        self.counts.shadow_turns += 1
                    else:
                        self.counts.live_turns += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pair(self) -> PairingCounts:
        """Release every complete, unreleased pair; drop shadow turns left alone too long."""
        now = to_unix(self.collector.clock())
        rows: list[SliceRow] = []
        stage = self._stage()
        if stage is not None and missing_labels(self.collector, {shadow_label(stage.rollout_id, "worse"),
                                                                 shadow_label(stage.rollout_id, "better")}):
            return self.counts  # the schema does not list the labels yet: pairs wait for it
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute(
                    "SELECT s.turn_id, s.rollout_id, s.measures, l.measures, l.session_id, l.user_id, l.intent "
                    "FROM turns s JOIN turns l ON l.role = 'live' AND l.turn_id = s.turn_id "
                    "AND l.rollout_id = s.rollout_id WHERE s.role = 'shadow' AND s.paired = 0 AND l.paired = 0"
                ).fetchall()
                for turn_id, rid, shadow_m, live_m, session, user, intent in found:
                    worse, better = discordance(frozenset(json.loads(live_m)), frozenset(json.loads(shadow_m)))
                    for side, measures in (("worse", worse), ("better", better)):
                        rows.append(SliceRow(f"shadow:{rid}:{turn_id}:{side}", session, user, intent,
                                             shadow_label(rid, side), measures | {TURNS}, now))  # type: ignore[arg-type]
                    self._db.execute("UPDATE turns SET paired = 1 WHERE turn_id = ? AND rollout_id = ?", (turn_id, rid))
                self.counts.pairs += len(found)
                stale = self._db.execute("DELETE FROM turns WHERE paired = 0 AND at < ?",
                                         (now - self.pending_seconds,)).rowcount
                self.counts.orphaned += stale
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if rows:
            self.counts.released += release_slices(self.collector, rows).recorded
        return self.counts


def active_shadow_stage(collector: Any) -> ShadowStage | None:
    """The shadow stage of the collector's active bundle, when it has one and this tenant takes part."""
    resolver = collector.resolver
    bundle = resolver.active()
    if bundle is None or bundle.candidate is None or bundle.exposure is None:
        return None
    exposure = bundle.exposure
    if exposure.phase != "shadow" or not exposure.participates(collector.tenant_id) or resolver.expired(bundle):
        return None
    return ShadowStage(exposure.rollout_id, exposure.session_fraction)


def divert(collector: Any, events: list[DecisionEvent]) -> list[DecisionEvent]:
    """The collector's record-path hook: shadow turns go to pairing, never into the live table."""
    pairer = getattr(collector, "_shadow_pairer", None)
    if pairer is None:
        if not any(e.mode == "shadow" for e in events) and active_shadow_stage(collector) is None:
            return events
        pairer = ShadowPairer(collector, lambda: active_shadow_stage(collector))
        collector._shadow_pairer = pairer
    return pairer.divert(events)


def close(collector: Any) -> None:
    """Close the collector's pairing store, if pairing ever started (the collector's close hook)."""
    pairer = getattr(collector, "_shadow_pairer", None)
    if pairer is not None:
        pairer.close()
        collector._shadow_pairer = None
