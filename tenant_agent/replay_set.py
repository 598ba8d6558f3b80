"""The local replay set: replayable cases of past failures, kept only inside the tenant's boundary.

Opt-in (``ReplaySetPolicy.enabled``). A case is what a harness needs to run
the turn again and what scoring needs to judge it: the redacted normalized
input *only when the tenant enables it* (``store_redacted_text``; raw text
never reaches this module: the collector redacts at ingest), the retrieval
ids, the versions that produced the turn (prompt, model, policy, bundle,
artifact), the failure categories it was classified into, the intent, and a
gold label where the telemetry had one (an explicit outcome, an evaluator's
verdict, the tool the turn needed, a human correction).

Bounds: ``retention_seconds`` (older cases are pruned), ``max_cases`` (the
oldest case goes first) and ``per_category_cap`` (one incident storm cannot
fill the set: a category at its cap keeps its cases, except that those older
than ``refresh_seconds`` give way to new ones, so a replay stage that is
still waiting gets fresh cases every window, at the cost of at most one
refill of the category per refresh). The set lives in its own SQLite file, ``replay.db`` in the
collector's state dir; nothing in it is ever part of a report: the only
thing that leaves is the DP release of replay *results*
(:func:`tenant_agent.replay.release_slices`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregation.clock import Clock, system_clock, to_unix
from aggregation.events import DecisionEvent
from aggregation.taxonomy import Taxonomy

REPLAY_DB = "replay.db"
#: Outcome counters of the taxonomy that are not failures (a case needs a failure category).
NOT_FAILURES = frozenset({"task_success", "escalated", "turns", "other"})


@dataclass(frozen=True)
class ReplaySetPolicy:
    enabled: bool = False
    retention_seconds: float = 30 * 86400.0
    max_cases: int = 1000
    per_category_cap: int = 200
    store_redacted_text: bool = False
    #: At its cap, a category's cases older than this give way to new ones (default one hourly window:
    #: a replay stage still waiting gets fresh cases every window; a storm costs one refill per refresh).
    refresh_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if (self.retention_seconds <= 0 or self.max_cases <= 0 or self.per_category_cap <= 0
                or self.refresh_seconds <= 0):
            raise ValueError("replay set: retention, max_cases, per_category_cap and refresh must be positive")


@dataclass(frozen=True)
class ReplayCase:
    case_id: str
    created_at: float
    session_id: str
    user_id: str | None
    intent: str | None
    category: str
    categories: tuple[str, ...]
    versions: Mapping[str, str]
    retrieval_ids: tuple[str, ...]
    tools: tuple[str, ...]
    gold: Mapping[str, Any]
    #: Redacted input text; None unless the tenant enabled ``store_redacted_text``.
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The case as the harness receives it (see docs/harness.md)."""
        return {
            "case_id": self.case_id, "intent": self.intent, "category": self.category,
            "categories": list(self.categories), "versions": dict(self.versions),
            "retrieval_ids": list(self.retrieval_ids), "tools": list(self.tools), "gold": dict(self.gold),
            "text": self.text,
        }


@dataclass
class CaptureResult:
    kept: int = 0
    #: Failing turns not stored: their category was at its cap with no stale case to give way (or more
    #: of them came in one batch than it had room for: the newest stay).
    capped: int = 0
    #: Stale cases (older than ``refresh_seconds``) that gave way to new ones of their category at its cap.
    displaced: int = 0
    not_failures: int = 0
    disabled: int = 0
    evicted: int = 0
    per_category: dict[str, int] = field(default_factory=dict)


def gold_label(event: DecisionEvent) -> dict[str, Any]:
    """What the turn should have done, where the telemetry says so (empty: no gold label)."""
    gold: dict[str, Any] = {}
    expected = sorted({c.expected for c in event.tool_calls if c.expected})
    if expected:
        gold["expected_tools"] = expected
    if event.human_edited:
        gold["human_corrected"] = True
    verdicts = {k: v for k, v in event.evaluations.items() if isinstance(v, str | int | float)}
    if verdicts:
        gold["evaluations"] = verdicts
    return gold


def _versions(event: DecisionEvent) -> dict[str, str]:
    pairs = {"prompt": event.prompt_version, "model": event.model, "policy": event.policy_version,
             "bundle": event.bundle_version, "artifact": event.artifact_version}
    return {k: v for k, v in pairs.items() if v}


class ReplaySet:
    """The tenant's replay cases in ``<state_dir>/replay.db`` (thread-safe)."""

    def __init__(self, state_dir: Path | str, policy: ReplaySetPolicy, taxonomy: Taxonomy | None = None,
                 clock: Clock = system_clock) -> None:
        self.policy = policy
        self.path = Path(state_dir) / REPLAY_DB
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._taxonomy = taxonomy or Taxonomy.load()
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cases (case_id TEXT PRIMARY KEY, created_at REAL NOT NULL, "
            "session_id TEXT NOT NULL, user_id TEXT, intent TEXT, category TEXT NOT NULL, categories TEXT NOT NULL, "
            "versions TEXT NOT NULL, retrieval_ids TEXT NOT NULL, tools TEXT NOT NULL, gold TEXT NOT NULL, text TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS ix_cases_category ON cases (category, created_at)")
        # Which cases a rollout's replay already released (a case is replayed once per rollout; new cases
        # captured while the replay stage runs are replayed later, so the evidence grows).
        self._db.execute("CREATE TABLE IF NOT EXISTS replayed (rollout_id TEXT NOT NULL, case_id TEXT NOT NULL, "
                         "PRIMARY KEY (rollout_id, case_id))")

    @property
    def taxonomy(self) -> Taxonomy:
        """The taxonomy that classifies captured turns (what the collector asks whether it reads ``text``)."""
        return self._taxonomy

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the connection autocommits otherwise); the caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- capture ------------------------------------------------------------------
    def capture(self, events: Iterable[DecisionEvent],
                text_of: Callable[[DecisionEvent], str | None] | None = None) -> CaptureResult:
        """Keep the failing turns of ``events`` as cases (nothing when the set is not enabled).

        With ``store_redacted_text`` a case keeps ``text_of(event)`` (default: ``event.text``),
        asked only for a case about to be stored (not for a turn that is no failure or over its
        category's cap): the collector's deferred texts are redacted there, and only there."""
        out = CaptureResult()
        now = to_unix(self._clock())
        rows = []
        for event in events:
            if not self.policy.enabled:
                out.disabled += 1
                continue
            failures = sorted(self._taxonomy.classify(event) - NOT_FAILURES)
            if not failures:
                out.not_failures += 1
                continue
            rows.append((event, failures))
        if not rows:
            return out
        cap = self.policy.per_category_cap
        with self._lock:
            self._prune(now)
            with self._transaction():
                per_category = self._db.execute(
                    "SELECT category, COUNT(*), SUM(created_at <= ?) FROM cases GROUP BY category",
                    (now - self.policy.refresh_seconds,)).fetchall()
                counts = {category: n for category, n, _stale in per_category}
                stale = {category: old for category, _n, old in per_category}
                # Room per category: below the cap, plus its cases older than ``refresh_seconds`` (they give way).
                # Of the batch, each category's newest turns fill it; the others are not stored, nor their
                # text redacted (so the work at the cap is at most one refill per category per refresh).
                room = {c: cap - counts.get(c, 0) + stale.get(c, 0) for c in {f[0] for _e, f in rows}}
                newest = []
                for event, failures in reversed(rows):
                    room[failures[0]] -= 1
                    if room[failures[0]] >= 0:
                        newest.append((event, failures))
                out.capped = len(rows) - len(newest)
                newest.reverse()
                for event, failures in newest:
                    category = failures[0]
                    case_id = "case-" + hashlib.sha256(
                        f"{event.session_id}\0{event.event_id or ''}\0{event.timestamp!r}".encode()).hexdigest()[:16]
                    text = None
                    if self.policy.store_redacted_text:
                        text = event.text if text_of is None else text_of(event)
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (case_id, now, event.session_id, event.user_id, event.intent, category, json.dumps(failures),
                         json.dumps(_versions(event), sort_keys=True), json.dumps(list(event.retrieval_ids)),
                         json.dumps([c.name for c in event.tool_calls]), json.dumps(gold_label(event), sort_keys=True),
                         text),
                    )
                    if cur.rowcount:
                        counts[category] = counts.get(category, 0) + 1
                        out.kept += 1
                        out.per_category[category] = out.per_category.get(category, 0) + 1
                        if counts[category] > cap:  # its oldest case (a stale one) makes room
                            self._db.execute("DELETE FROM cases WHERE rowid = (SELECT rowid FROM cases WHERE "
                                             "category = ? ORDER BY created_at, rowid LIMIT 1)", (category,))
                            counts[category] -= 1
                            out.displaced += 1
                total = self._db.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
                if total > self.policy.max_cases:
                    excess = total - self.policy.max_cases
                    self._db.execute("DELETE FROM cases WHERE rowid IN (SELECT rowid FROM cases "
                                     "ORDER BY created_at, rowid LIMIT ?)", (excess,))
                    out.evicted = excess
        return out

    def _prune(self, now: float) -> int:
        cur = self._db.execute("DELETE FROM cases WHERE created_at < ?", (now - self.policy.retention_seconds,))
        return cur.rowcount

    def prune(self) -> int:
        """Delete the cases older than the retention period; how many went."""
        with self._lock:
            return self._prune(to_unix(self._clock()))

    # -- read / purge ---------------------------------------------------------------
    def cases(self, category: str | None = None, intents: Sequence[str] = ()) -> list[ReplayCase]:
        with self._lock:
            self._prune(to_unix(self._clock()))
            sql, args = "SELECT * FROM cases", []
            if category:
                sql += " WHERE category = ?"
                args.append(category)
            rows = self._db.execute(sql + " ORDER BY created_at, case_id", args).fetchall()
        out = [_case(r) for r in rows]
        if intents:
            out = [c for c in out if c.intent in set(intents)]
        return out

    def unreplayed(self, rollout_id: str, category: str, intents: Sequence[str] = ()) -> list[ReplayCase]:
        """``category``'s cases (in ``intents``) that ``rollout_id``'s replay has not released yet, oldest first."""
        done = self.replayed(rollout_id)
        return [c for c in self.cases(category, intents) if c.case_id not in done]

    def replayed(self, rollout_id: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT case_id FROM replayed WHERE rollout_id = ?", (rollout_id,)).fetchall()
        return {r[0] for r in rows}

    def mark_replayed(self, rollout_id: str, case_ids: Iterable[str]) -> None:
        rows = [(rollout_id, c) for c in case_ids]
        with self._lock, self._transaction():  # one commit, not one per row
            self._db.executemany("INSERT OR IGNORE INTO replayed VALUES (?, ?)", rows)

    def show(self, case_id: str) -> ReplayCase | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return _case(row) if row else None

    def purge(self, category: str | None = None) -> int:
        """Delete every case (or one category's); how many went."""
        with self._lock:
            if category:
                return self._db.execute("DELETE FROM cases WHERE category = ?", (category,)).rowcount
            self._db.execute("DELETE FROM replayed")
            return self._db.execute("DELETE FROM cases").rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._prune(to_unix(self._clock()))
            return dict(self._db.execute("SELECT category, COUNT(*) FROM cases GROUP BY category").fetchall())


def _case(row: Sequence[Any]) -> ReplayCase:
    return ReplayCase(
        case_id=row[0], created_at=row[1], session_id=row[2], user_id=row[3], intent=row[4], category=row[5],
        categories=tuple(json.loads(row[6])), versions=json.loads(row[7]), retrieval_ids=tuple(json.loads(row[8])),
        tools=tuple(json.loads(row[9])), gold=json.loads(row[10]), text=row[11],
    )
