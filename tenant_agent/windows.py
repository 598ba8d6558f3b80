"""Window aggregation: decision events → keyed, per-unit cell contributions.

Each event lands in the window its timestamp falls in. It contributes one
count to the ``turns`` cell and one to each taxonomy category/counter it
hits, sliced by the schema's other dimensions (values outside the published
domain become ``other``). Contributions are stored per (window, privacy-unit
hash, cell key); the contribution bounds (at most L0 cells per unit, at most
L∞ per cell) are applied when the window's dense table is built, with the
schema current at release time, so a schema change mid-window cannot break
the bound. Free text never reaches this module's storage.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update

from aggregation.events import DecisionEvent
from aggregation.schema import MEASURE, TURNS, SignalSchema
from aggregation.taxonomy import Taxonomy
from tenant_agent.store import (
    WINDOW_OPEN,
    CellKey,
    CollectorStore,
    Contribution,
    ContributionBatch,
    SeenEvent,
    Window,
)
from tenant_agent.store_models import upsert

_UNIT_CACHE_LIMIT = 200_000

#: One packed contribution row of ``contribution_batches.data`` (little-endian).
BATCH_DTYPE = np.dtype([("unit", "<i8"), ("cell", "<i4"), ("count", "<i4"), ("first", "<f8")])


class WindowLengthMismatch(ValueError):
    """A configured window length that is not the cohort schema's (the server would refuse every report)."""


@dataclass(frozen=True)
class RecordResult:
    recorded: int
    # Events whose window was already sealed or withheld when they arrived.
    late_dropped: int
    # Events whose id was already recorded (a sender's retry): counted once.
    duplicates: int = 0


class WindowBook:
    """Records events into per-window contributions and builds bounded tables."""

    def __init__(
        self,
        store: CollectorStore,
        taxonomy: Taxonomy,
        schema: Callable[[], SignalSchema],
        *,
        window_seconds: int | None = None,
        privacy_unit: str | None = None,
    ) -> None:
        self._store = store
        self._taxonomy = taxonomy
        self._schema = schema
        if window_seconds is not None and window_seconds != schema().window_seconds:
            raise WindowLengthMismatch(
                f"window_seconds = {window_seconds} disagrees with the cohort schema's "
                f"{schema().window_seconds} s windows: the server refuses reports of any other length; "
                "remove window_seconds from the collector config"
            )
        self._unit_override = privacy_unit
        self._unit_cache: dict[str, int] = {}
        self._mac_state: tuple[bytes, hashlib.blake2b] | None = None
        # Interned cell keys; only ids committed to the store are cached.
        self._cell_ids: dict[str, int] = {}
        self._cell_cache: dict[tuple[int, frozenset[str], tuple[object, ...]], tuple[str, ...]] = {}
        # (schema version, raw slice values) -> measure -> cell key: the same slice comes back with
        # many combinations of measures (each a miss of _cell_cache), its keys are made once.
        self._measure_keys: dict[tuple[int, tuple[object, ...]], dict[str, str]] = {}
        self._slice_getter: tuple[SignalSchema, Callable[[DecisionEvent], tuple[object, ...]]] | None = None

    # -- layout --------------------------------------------------------------
    @property
    def window_seconds(self) -> int:
        """The cohort schema's window length (the only one the server accepts)."""
        return self._schema().window_seconds

    @property
    def privacy_unit(self) -> str:
        """The unit whose contribution is bounded: the config may strengthen the
        schema's choice (session → user), never weaken it."""
        declared = self._schema().privacy_unit
        if declared == "user":
            return "user"
        return self._unit_override or declared

    def window_of(self, timestamp: float) -> tuple[int, int]:
        w = self.window_seconds
        start = int(timestamp // w) * w
        return start, start + w

    def unit_hash(self, event: DecisionEvent) -> int:
        """Keyed 64-bit hash (MAC) of the privacy unit's id under the local secret (never the raw id)."""
        return self._unit_hash(event, self.privacy_unit == "user")

    def _unit_hash(self, event: DecisionEvent, by_user: bool) -> int:
        # record() decides the unit once per batch (privacy_unit reads the schema).
        # Without a user id the session is its own unit; it cannot collide
        # with a user because of the prefix.
        raw = "user:" + event.user_id if by_user and event.user_id else "session:" + event.session_id
        cached = self._unit_cache.get(raw)
        if cached is None:
            if len(self._unit_cache) >= _UNIT_CACHE_LIMIT:
                self._unit_cache.clear()
            cached = self._mac(raw)
            self._unit_cache[raw] = cached
        return cached

    def event_hash(self, event: DecisionEvent) -> int | None:
        if not event.event_id:
            return None
        return self._event_hash(event.event_id)

    def _event_hash(self, event_id: str) -> int:
        return self._mac("event:" + event_id)

    def _mac(self, value: str) -> int:
        """``_keyed_hash(store.unit_key, value)`` from a copy of the keyed BLAKE2b state: keying
        compresses a whole block first, which was most of the cost for a short id."""
        key = self._store.unit_key
        state = self._mac_state
        if state is None or state[0] is not key:  # the store may load its (shared) key later
            state = self._mac_state = (key, hashlib.blake2b(key=key, digest_size=8))
        mac = state[1].copy()
        mac.update(value.encode("utf-8"))
        return int.from_bytes(mac.digest(), "big", signed=True)

    def cells(self, event: DecisionEvent, schema: SignalSchema | None = None) -> tuple[str, ...]:
        """The cell keys (canonical JSON of dimension → domain value) one event counts in."""
        schema = schema or self._schema()
        measures = self._taxonomy.classify(event)
        read = self._slice_reader(schema)
        # Keyed on the raw field values: the domain mapping runs once per distinct combination.
        try:
            raw = read(event)
        except AttributeError:  # a dimension that is not an event field: always "other"
            raw = tuple([getattr(event, d.name, None) for d in schema.slice_dimensions])
        cache_key = (schema.version, measures, raw)
        try:
            cached = self._cell_cache.get(cache_key)
        except TypeError:  # a slice field holding an unhashable value
            return self._cells_of(schema, measures, raw)
        if cached is None:
            cached = self._cells_of(schema, measures, raw)
            if len(self._cell_cache) > 50_000:
                self._cell_cache.clear()
            self._cell_cache[cache_key] = cached
        return cached

    def _slice_reader(self, schema: SignalSchema) -> Callable[[DecisionEvent], tuple[object, ...]]:
        """Reads an event's slice-dimension fields as a tuple (in one C call), made once per schema."""
        getter = self._slice_getter
        if getter is None or getter[0] is not schema:
            names = [d.name for d in schema.slice_dimensions]
            # attrgetter reads every slice field in one C call; one name gives a bare value.
            read = operator.attrgetter(*names) if len(names) > 1 else _single_getter(names)
            getter = self._slice_getter = (schema, read)
        return getter[1]

    def _cells_of(self, schema: SignalSchema, measures: frozenset[str], raw: tuple[object, ...]) -> tuple[str, ...]:
        measure_names = [TURNS, *sorted(measures - {TURNS})]
        try:
            keys = self._measure_keys.get((schema.version, raw))
        except TypeError:  # an unhashable slice value: nothing to remember it by
            return _cell_keys(schema, raw, measure_names, {})
        if keys is None:
            if len(self._measure_keys) > 50_000:
                self._measure_keys.clear()
            keys = self._measure_keys[(schema.version, raw)] = {}
        return _cell_keys(schema, raw, measure_names, keys)

    # -- record path ---------------------------------------------------------
    def record(
        self,
        events: Iterable[DecisionEvent],
        counters: dict[str, int] | Callable[[], dict[str, int]] | None = None,
    ) -> RecordResult:
        """Store the contributions of ``events`` in one transaction; durable on return.

        ``events`` may be a generator (each event is summed and dropped as it
        comes, so a batch never holds thousands of live event objects: the
        cyclic GC had to walk them all); ``counters`` may be a callable, called
        once every event is read (e.g. redaction counts of this very batch).
        Nothing is written when reading ``events`` raises.

        The batch is summed in memory per (window, unit, cells of an event)
        and appended as one packed row per window (``contribution_batches``);
        sealing folds the rows of a window into its bounded table. Events
        with an id are claimed in ``seen_events`` first, so a resent event
        counts once.
        """
        schema = self._schema()
        w = schema.window_seconds
        by_user = self.privacy_unit == "user"
        unit_hash, cells_of = self._unit_hash, self.cells
        # The caches of _unit_hash and cells() read inline (a hit is the usual case); a miss goes
        # through the methods, which fill them.
        unit_cache, cell_cache, classify = self._unit_cache, self._cell_cache, self._taxonomy.classify
        read = self._slice_reader(schema)
        version = schema.version
        # window start -> (unit, cells) -> [count, first seen]; and the events with ids.
        sums: dict[int, dict[tuple[int, tuple[str, ...]], list[float]]] = {}
        with_ids: dict[int, list[tuple[int, tuple[str, ...], float, int]]] = {}
        total = 0
        for event in events:
            total += 1
            ts = float(event.timestamp)
            start = int(ts // w) * w
            user = event.user_id
            unit = unit_cache.get("user:" + user if by_user and user else "session:" + event.session_id)
            if unit is None:
                unit = unit_hash(event, by_user)
            try:
                cells = cell_cache.get((version, classify(event), read(event)))
            except (AttributeError, TypeError):  # a dimension that is no event field, an unhashable value
                cells = None
            key = (unit, cells if cells is not None else cells_of(event, schema))
            if event.event_id:
                with_ids.setdefault(start, []).append((*key, ts, self._event_hash(event.event_id)))
                continue
            per = sums.get(start)
            if per is None:
                per = sums[start] = {}
            slot = per.get(key)
            if slot is None:
                per[key] = [1, ts]
            else:
                slot[0] += 1
                if ts < slot[1]:
                    slot[1] = ts
        if total == 0:
            return RecordResult(0, 0)
        if callable(counters):
            counters = counters()
        new_ids: dict[str, int] = {}
        with self._store.transaction() as conn:
            starts = sorted(sums.keys() | with_ids.keys())
            # Create the batch's missing windows (open), then read every one's state under a
            # shared row lock: a replica sealing one of them holds the row exclusively, so a
            # batch lands either before its seal or after it, as late. Recorders share the lock.
            ins = upsert(conn)(Window).values(
                [{"window_start": start, "window_end": start + w, "events": 0, "state": WINDOW_OPEN} for start in starts]
            )
            conn.execute(ins.on_conflict_do_nothing(index_elements=[Window.window_start]))
            states = conn.execute(
                select(Window.window_start, Window.state)
                .where(Window.window_start.in_(starts))
                .order_by(Window.window_start)
                .with_for_update(read=True)
            ).all()
            closed = {int(start) for start, state in states if state != WINDOW_OPEN}
            late = duplicates = 0
            for start, items in with_ids.items():
                if start in closed:
                    continue
                fresh = _claim_event_ids(conn, start, [item[3] for item in items])
                per = sums.setdefault(start, {})
                for unit, cells, ts, ehash in items:
                    if ehash not in fresh:
                        duplicates += 1
                        continue
                    fresh.discard(ehash)
                    slot = per.get((unit, cells))
                    if slot is None:
                        per[(unit, cells)] = [1, ts]
                    else:
                        slot[0] += 1
                        if ts < slot[1]:
                            slot[1] = ts
            counted: list[dict[str, int]] = []
            keys_needed: set[str] = set()
            for start in starts:
                if start in closed:
                    late += sum(int(v[0]) for v in sums.get(start, {}).values()) + len(with_ids.get(start, ()))
                    continue
                per = sums.get(start)
                if per:
                    counted.append({"start": start, "n": int(sum(v[0] for v in per.values()))})
                    for _unit, cells in per:
                        keys_needed.update(cells)
            if counted:
                ids = self._cell_ids_for(conn, keys_needed, new_ids)
                batches = []
                for row in counted:
                    packed = _pack(sums[row["start"]], ids)
                    batches.append(
                        {"window_start": row["start"], "rows": len(packed), "events": row["n"], "data": packed.tobytes()}
                    )
                conn.execute(insert(ContributionBatch), batches)
            recorded = total - late - duplicates
            deltas = dict(counters or {})
            deltas["events_recorded"] = deltas.get("events_recorded", 0) + recorded
            deltas["events_late_dropped"] = deltas.get("events_late_dropped", 0) + late
            deltas["events_duplicate_dropped"] = deltas.get("events_duplicate_dropped", 0) + duplicates
            CollectorStore.add_counters(conn, deltas)
        # Only now are the new ids committed (a rolled-back id could be reused).
        self._cell_ids.update(new_ids)
        return RecordResult(recorded, late, duplicates)

    def _cell_ids_for(self, conn: Connection, keys: set[str], new_ids: dict[str, int]) -> dict[str, int]:
        """Ids of ``keys`` in ``cell_keys``, interning missing ones in the caller's transaction."""
        ids = {k: self._cell_ids[k] for k in keys if k in self._cell_ids}
        missing = sorted(k for k in keys if k not in ids)
        if missing:
            stmt = upsert(conn)(CellKey).on_conflict_do_nothing(index_elements=[CellKey.key])
            conn.execute(stmt, [{"key": k} for k in missing])
            for key, cell_id in conn.execute(select(CellKey.key, CellKey.id).where(CellKey.key.in_(missing))):
                ids[key] = new_ids[key] = int(cell_id)
        return ids

    # -- release side --------------------------------------------------------
    @staticmethod
    def due_windows(conn: Connection, now: float, grace: float, states: Sequence[str]) -> list[int]:
        """Starts of the windows in ``states`` that ended at least ``grace`` before ``now``."""
        rows = conn.execute(
            select(Window.window_start)
            .where(Window.state.in_(list(states)), Window.window_end + grace <= now)
            .order_by(Window.window_start)
        ).scalars()
        return list(rows)

    @staticmethod
    def started_windows(conn: Connection, now: float, states: Sequence[str]) -> list[int]:
        """Starts of the windows in ``states`` that began at or before ``now`` (the current one included)."""
        rows = conn.execute(
            select(Window.window_start)
            .where(Window.state.in_(list(states)), Window.window_start <= now)
            .order_by(Window.window_start)
        ).scalars()
        return list(rows)

    @staticmethod
    def contributions(conn: Connection, window_start: int) -> np.ndarray:
        """Every stored contribution row of a window (``BATCH_DTYPE``): batches and pre-v1 rows."""
        parts = [
            np.frombuffer(data, dtype=BATCH_DTYPE)
            for (data,) in conn.execute(
                select(ContributionBatch.data).where(ContributionBatch.window_start == window_start)
            )
        ]
        legacy = conn.execute(
            select(Contribution.unit, Contribution.cell_id, Contribution.count, Contribution.first_seen).where(
                Contribution.window_start == window_start
            )
        ).all()
        if legacy:
            parts.append(np.array([tuple(r) for r in legacy], dtype=BATCH_DTYPE))
        if not parts:
            return np.zeros(0, dtype=BATCH_DTYPE)
        return np.concatenate(parts)

    @staticmethod
    def bounded_table(conn: Connection, window_start: int, schema: SignalSchema) -> np.ndarray:
        """The window's dense int64 table with every unit's contribution bounded.

        Per unit: cell keys are mapped with ``schema`` (several keys may fall in
        one cell), each cell is clamped to L∞, and only the unit's first L0
        cells (by first contribution, ``turns`` first on ties, then by cell
        index) are kept.
        """
        l0, linf = schema.max_cells_per_unit, schema.max_count_per_cell
        table = np.zeros(schema.size, dtype=np.int64)
        rows = WindowBook.contributions(conn, window_start)
        if rows.size == 0:
            return table
        cell_ids, inverse = np.unique(rows["cell"], return_inverse=True)
        keys = dict(
            conn.execute(select(CellKey.id, CellKey.key).where(CellKey.id.in_([int(i) for i in cell_ids]))).all()
        )
        index_of = np.empty(len(cell_ids), dtype=np.int64)
        not_turns_of = np.empty(len(cell_ids), dtype=np.int8)
        for i, cell_id in enumerate(cell_ids):
            key = json.loads(keys[int(cell_id)])
            index_of[i] = schema.cell_index(key)
            not_turns_of[i] = key.get(MEASURE) != TURNS
        unit = rows["unit"]
        index = index_of[inverse]
        # One group per (unit, dense cell): counts add, first seen and "not turns" take the minimum.
        order = np.lexsort((index, unit))
        unit, index = unit[order], index[order]
        count = rows["count"][order].astype(np.int64)
        first = rows["first"][order]
        not_turns = not_turns_of[inverse][order]
        starts = np.flatnonzero(np.r_[True, (unit[1:] != unit[:-1]) | (index[1:] != index[:-1])])
        g_unit, g_index = unit[starts], index[starts]
        g_count = np.add.reduceat(count, starts)
        g_first = np.minimum.reduceat(first, starts)
        g_not_turns = np.minimum.reduceat(not_turns, starts)
        # Rank each unit's cells by (first seen, not turns, index); keep the first L0.
        rank_order = np.lexsort((g_index, g_not_turns, g_first, g_unit))
        r_unit = g_unit[rank_order]
        unit_start = np.flatnonzero(np.r_[True, r_unit[1:] != r_unit[:-1]])
        run_start = np.repeat(unit_start, np.diff(np.r_[unit_start, len(r_unit)]))
        keep = rank_order[(np.arange(len(r_unit)) - run_start) < l0]
        np.add.at(table, g_index[keep], np.minimum(g_count[keep], linf))
        return table

    @staticmethod
    def forget_contributions(conn: Connection, window_start: int) -> None:
        """Drop a sealed window's per-unit rows: the sealed report is all that remains.

        The window keeps its event count (the batches' counts added to it).
        """
        counted = conn.execute(
            select(func.coalesce(func.sum(ContributionBatch.events), 0)).where(
                ContributionBatch.window_start == window_start
            )
        ).scalar_one()
        conn.execute(
            update(Window).where(Window.window_start == window_start).values(events=Window.events + int(counted))
        )
        conn.execute(delete(ContributionBatch).where(ContributionBatch.window_start == window_start))
        conn.execute(delete(Contribution).where(Contribution.window_start == window_start))
        conn.execute(delete(SeenEvent).where(SeenEvent.window_start == window_start))

    @staticmethod
    def set_state(conn: Connection, window_start: int, state: str, **values: object) -> None:
        conn.execute(update(Window).where(Window.window_start == window_start).values(state=state, **values))


def _keyed_hash(key: bytes, value: str) -> int:
    # Keyed BLAKE2b is a MAC (RFC 7693) and ~4x cheaper than HMAC-SHA256 here:
    # this runs once per event on the record path. 64 bits fit SQLite's
    # integer key (five times cheaper to upsert than a hex string); a
    # collision needs ~4e9 units in one window.
    digest = hashlib.blake2b(value.encode("utf-8"), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _pack(per: dict[tuple[int, tuple[str, ...]], list[float]], ids: dict[str, int]) -> np.ndarray:
    """One batch's sums for one window as packed rows (unit, cell id, count, first seen).

    Column by column: each (unit, cells) sum gives one row per cell (np.repeat), the cell ids
    in the same order; setting a structured array element by element cost ~1 us a field.
    """
    keys = list(per)
    sums = list(per.values())
    lengths = [len(cells) for _unit, cells in keys]
    out = np.empty(sum(lengths), dtype=BATCH_DTYPE)
    out["unit"] = np.repeat(np.array([unit for unit, _cells in keys], dtype=np.int64), lengths)
    out["cell"] = [ids[cell] for _unit, cells in keys for cell in cells]
    out["count"] = np.repeat(np.array([s[0] for s in sums], dtype=np.int64), lengths)
    out["first"] = np.repeat(np.array([s[1] for s in sums], dtype=np.float64), lengths)
    return out


def _claim_event_ids(conn: Connection, window_start: int, hashes: list[int]) -> set[int]:
    """Record event-id hashes; return those that were new (each counts once).

    One INSERT ... ON CONFLICT DO NOTHING RETURNING, executed over the ids as
    parameter sets: SQLAlchemy batches them into multi-row VALUES
    ("insertmanyvalues") with one cached statement, where building a VALUES
    clause per chunk compiled a new statement every time (~10x slower on
    SQLite). The rows it returns are the ones this transaction inserted. On a
    shared store a replica inserting the same id concurrently makes this wait
    for its commit, then skip the row, so the event counts in exactly one of them.
    """
    unique = list(dict.fromkeys(hashes))
    if not unique:
        return set()
    stmt = (
        upsert(conn)(SeenEvent)
        .on_conflict_do_nothing(index_elements=[SeenEvent.window_start, SeenEvent.event])
        .returning(SeenEvent.event)
    )
    rows = conn.execute(stmt, [{"window_start": window_start, "event": h} for h in unique])
    fresh = {int(h) for h in rows.scalars()}
    return fresh


def _cell_keys(schema: SignalSchema, raw: tuple[object, ...], measures: list[str], known: dict[str, str]) -> tuple[str, ...]:
    """The cell keys (canonical JSON) of one slice for ``measures``; ``known`` holds (and gets) the keys made."""
    keys = []
    doc: dict[str, str] | None = None
    for m in measures:
        key = known.get(m)
        if key is None:
            if doc is None:
                dims = schema.slice_dimensions
                doc = {d.name: d.values[d.index(_str_or_none(v))] for d, v in zip(dims, raw, strict=True)}
            measure_dim = schema.dimensions[0]
            key = known[m] = json.dumps(
                {**doc, MEASURE: measure_dim.values[measure_dim.index(m)]}, sort_keys=True, separators=(",", ":")
            )
        keys.append(key)
    return tuple(dict.fromkeys(keys))


def _single_getter(names: list[str]) -> Callable[[DecisionEvent], tuple[object, ...]]:
    """A reader of the slice fields as a tuple when the schema has zero or one slice dimension."""
    if not names:
        return lambda _event: ()
    name = names[0]
    return lambda event: (getattr(event, name, None),)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
