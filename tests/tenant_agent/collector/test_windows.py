"""Window aggregation: schema cells, contribution bounds, keyed unit hashes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from aggregation.clock import from_unix
from aggregation.schema import default_schema
from tenant_agent.collector import Collector
from tenant_agent.store import Contribution
from tenant_agent.windows import WindowBook

from .fakes import HOUR, T0, make_config, turn


def table(collector: Collector, window_start: float, schema=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    with collector.store.engine.connect() as conn:
        return WindowBook.bounded_table(conn, int(window_start), schema or collector.schema)


def cell(collector: Collector, measure: str, intent: str = "billing", version: str = "baseline") -> int:
    return collector.schema.cell_index({"measure": measure, "intent": intent, "artifact_version": version})


def test_event_counts_turns_and_its_categories_in_its_slice(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn("s1", T0 + 10, tool_error=True), turn("s2", T0 + 20)])
        t = table(c, T0)
        assert t[cell(c, "turns")] == 2
        assert t[cell(c, "tool_error")] == 1
        assert t[cell(c, "task_success")] == 1
        assert t.sum() == 4
        assert t.dtype == np.int64 and t.shape == (c.schema.size,)


def test_values_outside_the_domain_count_as_other(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("s1", T0 + 1, intent="launch_rocket", artifact_version="cand-x"))
        c.record(turn("s2", T0 + 2, intent=None))
        t = table(c, T0)
        assert t[cell(c, "turns", "other", "other")] == 1
        assert t[cell(c, "turns", "other", "baseline")] == 1


def test_each_unit_contributes_at_most_linf_per_cell(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn("s1", T0 + i) for i in range(5)])
        assert c.schema.max_count_per_cell == 1
        assert table(c, T0)[cell(c, "turns")] == 1
        looser = replace(c.schema, max_count_per_cell=3)
        assert table(c, T0, looser)[looser.cell_index({"measure": "turns", "intent": "billing",
                                                       "artifact_version": "baseline"})] == 3


def test_each_unit_contributes_to_at_most_l0_cells_keeping_its_first(tmp_path: Path) -> None:
    intents = ["billing", "refund", "order_status", "tech_support", "account"]
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn("s1", T0 + i, intent=intent) for i, intent in enumerate(intents)])
        tight = replace(c.schema, max_cells_per_unit=3)
        t = table(c, T0, tight)
        assert t.sum() == 3
        # The unit's earliest cells survive, turns before its categories.
        assert t[cell(c, "turns", "billing")] == 1
        assert t[cell(c, "task_success", "billing")] == 1
        assert t[cell(c, "turns", "refund")] == 1
        assert t[cell(c, "turns", "account")] == 0


def test_user_privacy_unit_bounds_across_sessions(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path, privacy_unit="user")) as c:
        c.record_many([turn(f"s{i}", T0 + i, user="alice") for i in range(4)])
        assert table(c, T0)[cell(c, "turns")] == 1
    with Collector(make_config(tmp_path / "b", privacy_unit="session")) as c:
        c.record_many([turn(f"s{i}", T0 + i, user="alice") for i in range(4)])
        assert table(c, T0)[cell(c, "turns")] == 4


def test_store_keeps_keyed_unit_hashes_never_raw_ids(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("session-very-distinctive-42", T0 + 5))
        with c.store.engine.connect() as conn:
            units = {row.unit for row in conn.execute(Contribution.__table__.select())}
        assert len(units) == 1 and isinstance(next(iter(units)), int)
    for f in tmp_path.iterdir():
        if f.is_file():
            assert b"session-very-distinctive-42" not in f.read_bytes(), f


def test_unit_hash_depends_on_the_local_secret(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path / "a")) as a, Collector(make_config(tmp_path / "b")) as b:
        e = turn("s1", T0)
        assert a.book.unit_hash(e) != b.book.unit_hash(e)
        assert a.book.unit_hash(e) == a.book.unit_hash(turn("s1", T0 + 99))


def test_windows_follow_event_time_and_configured_length(tmp_path: Path) -> None:
    # The window length is the cohort schema's (a config may only repeat it).
    (tmp_path / "schema.json").write_text(default_schema("cohort-a", window_seconds=600).to_json())
    with Collector(make_config(tmp_path, window_seconds=600)) as c:
        c.record_many([turn("s1", T0 + 10), turn("s1", T0 + 610), turn("s1", T0 + 1210)])
        assert c.status().windows["open"] == 3
        assert table(c, T0 + 600)[cell(c, "turns")] == 1


def test_an_event_id_sent_twice_counts_once(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        events = [replace(turn(f"s{i}", T0 + i), event_id=f"evt-{i}") for i in range(10)]
        first = c.record_many(events[:6])
        again = c.record_many(events)  # a sender retrying after a lost ack
        assert (first.recorded, again.recorded, again.duplicates) == (6, 4, 6)
        assert table(c, T0)[cell(c, "turns")] == 10


def test_events_for_a_sealed_window_are_dropped_and_counted(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("s1", T0 + 1))
        assert [o.state for o in c.close_windows(now=from_unix(T0 + HOUR))] == ["sealed"]
        late = c.record(turn("s2", T0 + 2))
        assert (late.recorded, late.late_dropped) == (0, 1)
        assert c.status().counters["events_late_dropped"] == 1


def test_table_uses_the_schema_current_at_release(tmp_path: Path) -> None:
    v1 = default_schema("cohort-a").with_values("artifact_version", ["baseline", "cand-7"])
    with Collector(make_config(tmp_path)) as c:
        c.adopt_schema(v1)
        c.record(turn("s1", T0 + 1, artifact_version="cand-7"))
        assert table(c, T0, v1)[v1.cell_index({"measure": "turns", "intent": "billing",
                                                 "artifact_version": "cand-7"})] == 1
        # The label is withdrawn before the window closes: it releases as "other".
        v2 = replace(v1.with_values("artifact_version", ["baseline"]), version=v1.version + 1)
        t = table(c, T0, v2)
        assert t[v2.cell_index({"measure": "turns", "intent": "billing", "artifact_version": "other"})] == 1


def test_config_cannot_weaken_a_user_level_schema_to_sessions(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path, privacy_unit="session")) as c:
        c.adopt_schema(replace(c.schema, privacy_unit="user", version=c.schema.version + 1))
        assert c.book.privacy_unit == "user"
        c.record_many([turn(f"s{i}", T0 + i, user="alice") for i in range(3)])
        assert table(c, T0)[cell(c, "turns")] == 1
