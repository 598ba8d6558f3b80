"""The record path's fast paths give exactly what the straightforward code gives.

- ``WindowBook.bounded_table`` (numpy fold of packed batches) equals a plain
  per-unit implementation of the same bound (the code before the batch log) on
  random contributions, with ties, several keys mapping to one cell, and
  bounds that bind;
- recording in many small batches or one big batch gives one table;
- the tool-call constructor shortcut builds an equal, frozen ``ToolCall``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from aggregation.events import ToolCall
from aggregation.schema import MEASURE, TURNS, SignalSchema, default_schema
from tenant_agent.collector import Collector
from tenant_agent.ingest.records import tool_call
from tenant_agent.store import CellKey, ContributionBatch, Window
from tenant_agent.windows import BATCH_DTYPE, WindowBook

from .collector.fakes import HOUR, T0, make_config, turn

MEASURES = ["turns", "tool_error", "timeout", "task_success", "human_correction", "not-a-measure"]
INTENTS = ["billing", "refund", None, "off-domain"]


def reference_table(rows: list[tuple[int, str, int, float]], schema: SignalSchema) -> np.ndarray:
    """Per unit: map keys to cells (summing counts, keeping the earliest first seen, turns first
    on ties), clamp each cell to L∞, keep the unit's first L0 cells."""
    table = np.zeros(schema.size, dtype=np.int64)
    per_unit: dict[int, dict[int, list[float]]] = defaultdict(dict)  # index -> [count, first, not turns]
    for unit, key, count, first in rows:
        doc = json.loads(key)
        index, not_turns = schema.cell_index(doc), float(doc.get(MEASURE) != TURNS)
        slot = per_unit[unit].get(index)
        if slot is None:
            per_unit[unit][index] = [count, first, not_turns]
        else:
            slot[0] += count
            slot[1] = min(slot[1], first)
            slot[2] = min(slot[2], not_turns)
    for cells in per_unit.values():
        ranked = sorted(cells.items(), key=lambda kv: (kv[1][1], kv[1][2], kv[0]))
        for index, (total, _first, _nt) in ranked[: schema.max_cells_per_unit]:
            table[index] += min(int(total), schema.max_count_per_cell)
    return table


def key(measure: str, intent: str | None) -> str:
    return json.dumps({"artifact_version": "baseline", "intent": intent, MEASURE: measure}, sort_keys=True,
                      separators=(",", ":"))  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_the_numpy_fold_equals_the_per_unit_reference(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    schema = replace_bounds(default_schema("cohort-a"), l0=rng.choice([1, 2, 3, 16]), linf=rng.choice([1, 2, 5]))
    keys = [key(m, i) for m in MEASURES for i in INTENTS]
    rows = [
        (rng.randrange(-40, 40), rng.choice(keys), rng.randrange(1, 4), float(rng.choice([1, 2, 3, rng.random()])))
        for _ in range(rng.randrange(1, 600))
    ]
    with Collector(make_config(tmp_path)) as c, c.store.transaction() as conn:
        conn.execute(insert(Window), [{"window_start": int(T0), "window_end": int(T0 + HOUR), "events": 1}])
        conn.execute(insert(CellKey), [{"id": i + 1, "key": k} for i, k in enumerate(keys)])
        ids = {k: i + 1 for i, k in enumerate(keys)}
        # Split into several batches, as several record_many calls would leave them.
        for part in range(0, len(rows), 97):
            chunk = rows[part : part + 97]
            packed = np.array([(u, ids[k], n, f) for u, k, n, f in chunk], dtype=BATCH_DTYPE)
            conn.execute(insert(ContributionBatch), {"window_start": int(T0), "rows": len(packed),
                                                     "data": packed.tobytes()})  # fmt: skip
        got = WindowBook.bounded_table(conn, int(T0), schema)
    np.testing.assert_array_equal(got, reference_table(rows, schema))
    assert got.sum() > 0


def replace_bounds(schema: SignalSchema, *, l0: int, linf: int) -> SignalSchema:
    return dataclasses.replace(schema, max_cells_per_unit=l0, max_count_per_cell=linf)


def test_many_small_batches_and_one_big_batch_give_one_table(tmp_path: Path) -> None:
    events = [
        turn(f"s{i % 23}", T0 + (i * 13) % 3600, tool_error=i % 4 == 0, intent=INTENTS[i % 4]) for i in range(700)
    ]
    with Collector(make_config(tmp_path / "a")) as a, Collector(make_config(tmp_path / "b")) as b:
        for i in range(0, len(events), 7):
            a.record_many(events[i : i + 7])
        b.record_many(events)
        with a.store.engine.connect() as ca, b.store.engine.connect() as cb:
            np.testing.assert_array_equal(
                WindowBook.bounded_table(ca, int(T0), a.schema), WindowBook.bounded_table(cb, int(T0), b.schema)
            )
        assert a.status().counters["events_recorded"] == b.status().counters["events_recorded"] == 700


def test_the_tool_call_shortcut_builds_an_equal_frozen_tool_call() -> None:
    fast = tool_call("lookup", "timeout", 12.5, None)
    slow = ToolCall("lookup", "timeout", 12.5, None)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "other"  # type: ignore[misc]


def doc(i: int, **extra: object) -> dict[str, object]:
    return {"schema_version": "1", "session_id": f"s{i}", "timestamp": T0 + i, "intent": "billing", **extra}


def test_a_bad_document_mid_batch_records_nothing_of_the_batch(tmp_path: Path) -> None:
    from tenant_agent.ingest.records import EventFormatError

    with Collector(make_config(tmp_path)) as c:
        with pytest.raises(EventFormatError):
            c.record_many([doc(1), doc(2), doc(3, escalated="yes"), doc(4)])
        assert c.status().counters.get("events_recorded", 0) == 0
        with c.store.engine.connect() as conn:
            assert WindowBook.contributions(conn, int(T0)).size == 0


def test_redaction_counts_of_a_batch_land_with_that_batch(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        # A label (the free text is discarded unread while no consumer reads it: test_text_minimization.py).
        c.record_many([doc(1, error_type="mail jane.roe@example.org now"), doc(2)])
        assert c.status().redaction.get("EMAIL") == 1


def test_record_many_pauses_the_cyclic_gc_and_always_switches_it_back_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    import tenant_agent.collector as collector_module
    from tenant_agent.ingest.records import EventFormatError

    seen: list[bool] = []
    with Collector(make_config(tmp_path)) as c:
        real = collector_module.event_from_dict

        def spy(document: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(gc.isenabled())
            return real(document, *args, **kwargs)

        monkeypatch.setattr(collector_module, "event_from_dict", spy)
        assert gc.isenabled()
        c.record_many([doc(1), doc(2)])
        assert seen == [False, False] and gc.isenabled()
        with pytest.raises(EventFormatError):
            c.record_many([doc(3, escalated="yes")])
        assert gc.isenabled()  # back on after a failed batch too
        gc.disable()
        try:
            c.record_many([doc(4)])
            assert not gc.isenabled()  # a caller who runs without the cyclic GC keeps it off
        finally:
            gc.enable()
        assert c.status().counters["events_recorded"] == 3


def test_remembered_tool_calls_never_skip_a_redaction_nor_cross_redactors() -> None:
    from tenant_agent.ingest.records import event_from_dict
    from tenant_agent.redact import RedactionConfig, Redactor

    plain = Redactor()
    strict = Redactor(RedactionConfig(patterns={"TOOL_SECRET": r"lookup_order"}))
    call = {"name": "lookup_order", "error": "timeout"}
    pii = {"name": "lookup_order", "error": "failed for jane.roe@example.org"}
    for _ in range(3):
        first = event_from_dict(doc(1, tool_calls=[call, pii]), "t", plain)
        assert first.tool_calls[0].name == "lookup_order" and "<EMAIL>" in str(first.tool_calls[1].error)
        # Another redactor (another tenant configuration) decides for itself.
        assert event_from_dict(doc(2, tool_calls=[call]), "t", strict).tool_calls[0].name == "<TOOL_SECRET>"
    assert plain.stats.get("EMAIL") == 3  # the call with PII was redacted (and counted) every time
    assert strict.stats.get("TOOL_SECRET") == 3


def test_cell_keys_are_the_canonical_json_of_each_measure_whatever_came_before(tmp_path: Path) -> None:
    """cells() remembers the key of each (slice, measure): events of one slice with other sets of
    measures, seen in any order, still get exactly their own keys (turns first, then sorted)."""
    rng = random.Random(9)
    with Collector(make_config(tmp_path)) as c:
        book, schema = c.book, c.schema
        events = [
            dataclasses.replace(
                turn(f"s{i}", T0 + i, intent=rng.choice(INTENTS), tool_error=rng.random() < 0.5,
                     artifact_version=rng.choice(["baseline", "cand-7", None])),
                timed_out=rng.random() < 0.5, escalated=rng.random() < 0.5,
                outcome=rng.choice(["success", "failure", None]),
            )
            for i in range(400)
        ]  # fmt: skip
        seen = set()
        for event in events:
            measures = c.taxonomy.classify(event)
            intent = event.intent if event.intent in ("billing", "refund") else "other"
            version = "baseline" if event.artifact_version == "baseline" else "other"
            expected = tuple(
                json.dumps({"artifact_version": version, "intent": intent, MEASURE: m}, sort_keys=True,
                           separators=(",", ":"))  # fmt: skip
                for m in [TURNS, *sorted(measures - {TURNS})]
            )
            assert book.cells(event, schema) == expected
            seen.add(expected)
        assert len(seen) > 8


def test_packed_rows_are_one_row_per_cell_of_each_sum() -> None:
    from tenant_agent.windows import _pack

    ids = {"a": 1, "b": 2, "c": 3}
    per = {(-5, ("a", "b")): [2, 10.5], (7, ("c",)): [1, 3.0], (2**62, ("a", "c", "b")): [4, 1.25]}
    rows = _pack(per, ids)  # type: ignore[arg-type]
    assert rows.dtype == BATCH_DTYPE
    assert [tuple(r) for r in rows.tolist()] == [
        (-5, 1, 2, 10.5), (-5, 2, 2, 10.5), (7, 3, 1, 3.0), (2**62, 1, 4, 1.25), (2**62, 3, 4, 1.25), (2**62, 2, 4, 1.25),
    ]  # fmt: skip
    assert _pack({}, ids).size == 0


def test_the_unit_and_event_macs_are_the_keyed_blake2b_of_the_store_key(tmp_path: Path) -> None:
    from tenant_agent.windows import _keyed_hash

    with Collector(make_config(tmp_path)) as c:
        book, store = c.book, c.store
        for value in ["session:s1", "user:u_0123", "event:ev-1", "session:" + "x" * 300, "session:é"]:
            assert book._mac(value) == _keyed_hash(store.unit_key, value)
        assert book.unit_hash(turn("s1", T0)) == _keyed_hash(store.unit_key, "session:s1")
        old_key = store.unit_key
        store.unit_key = bytes(reversed(old_key))  # as a shared store's key loaded after start
        assert book._mac("session:s1") == _keyed_hash(store.unit_key, "session:s1")
        assert book._mac("session:s1") != _keyed_hash(old_key, "session:s1")
