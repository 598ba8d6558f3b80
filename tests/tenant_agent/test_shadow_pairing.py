"""Shadow pairing on the collector: shadow turns never go live, pairs release discordant outcomes only."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aggregation.clock import from_unix
from aggregation.events import DecisionEvent, ToolCall
from aggregation.rollout_plan import session_in_shadow, shadow_label
from aggregation.schema import default_schema
from tenant_agent.collector import Collector
from tenant_agent.ingest.records import EventFormatError, event_from_dict
from tenant_agent.redact import Redactor
from tenant_agent.shadow import ShadowPairer, ShadowStage, discordance
from tenant_agent.windows import WindowBook
from tests.tenant_agent.collector.fakes import HOUR, T0, make_config

RID = "ro-shadow"
STAGE = ShadowStage(RID, 1.0)  # every session is shadowed
SCHEMA = default_schema("cohort-a").with_values(
    "artifact_version", ["baseline", shadow_label(RID, "worse"), shadow_label(RID, "better")])


def live(i: int, *, wrong_tool: bool = False, at: float = T0 + 5) -> DecisionEvent:
    called = "lookup_order" if wrong_tool else "refund_lookup"
    return DecisionEvent(tenant_id="tenant-1", session_id=f"s{i}", timestamp=at, event_id=f"turn-{i}",
                         intent="refund", tool_calls=(ToolCall(called, expected="refund_lookup"),),
                         outcome="failure" if wrong_tool else "success", artifact_version="baseline")


def shadow(i: int, *, wrong_tool: bool = False, at: float = T0 + 6) -> DecisionEvent:
    e = live(i, wrong_tool=wrong_tool, at=at)
    return DecisionEvent.from_fields({**e.__dict__, "event_id": f"shadow-{i}", "mode": "shadow",
                                      "shadow_of": f"turn-{i}"})


def _collector(tmp_path: Path, now: list[float]) -> Collector:
    c = Collector(make_config(tmp_path / "state"), clock=lambda: from_unix(now[0]), rng=random.Random(1))
    c.adopt_schema(SCHEMA)  # the server publishes a rollout's labels at its start
    c._shadow_pairer = ShadowPairer(c, lambda: STAGE, pending_seconds=HOUR)  # type: ignore[attr-defined]
    return c


def _window_events(c: Collector) -> int:
    with c.store.engine.connect() as conn:
        from sqlalchemy import func, select

        from tenant_agent.store import ContributionBatch, Window

        # Sealed windows hold their count; an open window's events are in its contribution batches.
        sealed = conn.execute(select(func.coalesce(func.sum(Window.events), 0))).scalar_one()
        pending = conn.execute(select(func.coalesce(func.sum(ContributionBatch.events), 0))).scalar_one()
        return int(sealed) + int(pending)


def test_discordance_orients_success_and_failures() -> None:
    worse, better = discordance(frozenset({"task_success"}), frozenset({"wrong_tool"}))
    assert worse == {"task_success", "wrong_tool"} and better == set()
    worse, better = discordance(frozenset({"timeout"}), frozenset({"task_success"}))
    assert worse == set() and better == {"timeout", "task_success"}
    assert discordance(frozenset({"turns", "timeout"}), frozenset({"turns", "timeout"})) == (set(), set())


def test_a_pair_releases_one_turn_under_each_label_and_the_shadow_turn_never_goes_live(tmp_path: Path) -> None:
    now = [T0 + 10]
    schema = SCHEMA
    with _collector(tmp_path, now) as c:
        c.record_many([live(1), shadow(1, wrong_tool=True)])
        pairer = c._shadow_pairer  # type: ignore[attr-defined]
        assert (pairer.counts.pairs, pairer.counts.released) == (1, 2)
        # The window holds the live turn and the two evaluation rows (the pair), not the shadow turn.
        assert _window_events(c) == 1 + 2
        with c.store.engine.connect() as conn:
            table = WindowBook.bounded_table(conn, int(T0), schema)

        def cell(measure: str, label: str) -> int:
            return int(table[schema.cell_index({"measure": measure, "intent": "refund", "artifact_version": label})])

        worse, better = shadow_label(RID, "worse"), shadow_label(RID, "better")
        assert (cell("turns", worse), cell("turns", better)) == (1, 1)
        assert (cell("wrong_tool", worse), cell("task_success", worse)) == (1, 1)  # the shadow broke the turn
        assert (cell("wrong_tool", better), cell("task_success", better)) == (0, 0)
        assert cell("turns", "baseline") == 1  # the live turn, counted once


def test_a_shadow_turn_waits_for_a_late_live_turn_then_pairs(tmp_path: Path) -> None:
    now = [T0 + 10]
    with _collector(tmp_path, now) as c:
        c.record_many([shadow(2)])
        pairer = c._shadow_pairer  # type: ignore[attr-defined]
        assert (pairer.counts.shadow_turns, pairer.counts.pairs) == (1, 0)
        assert _window_events(c) == 0
        now[0] = T0 + 60
        c.record_many([live(2)])
        assert pairer.counts.pairs == 1


def test_a_shadow_turn_without_its_live_turn_is_dropped_after_the_pending_time(tmp_path: Path) -> None:
    now = [T0 + 10]
    with _collector(tmp_path, now) as c:
        c.record_many([shadow(3, at=T0 + 10)])
        now[0] = T0 + 10 + HOUR + 1
        c.record_many([live(99)])  # any later batch sweeps
        pairer = c._shadow_pairer  # type: ignore[attr-defined]
        assert pairer.counts.orphaned >= 1 and pairer.counts.pairs == 0
        now[0] = T0 + 2 * HOUR
        c.record_many([live(3, at=T0 + 2 * HOUR - 1)])  # the live turn comes too late: nothing to pair
        assert pairer.counts.pairs == 0


def test_duplicate_shadow_turns_and_repeated_live_turns_pair_once(tmp_path: Path) -> None:
    now = [T0 + 10]
    with _collector(tmp_path, now) as c:
        c.record_many([live(4), shadow(4), shadow(4)])
        c.record_many([shadow(4), live(4)])
        pairer = c._shadow_pairer  # type: ignore[attr-defined]
        assert pairer.counts.pairs == 1 and pairer.counts.released == 2
        assert pairer.counts.duplicates >= 3


def test_pairs_wait_until_the_schema_lists_the_rollouts_labels(tmp_path: Path) -> None:
    now = [T0 + 10]
    with Collector(make_config(tmp_path / "state"), clock=lambda: from_unix(now[0]), rng=random.Random(1)) as c:
        pairer = ShadowPairer(c, lambda: STAGE)
        c._shadow_pairer = pairer  # type: ignore[attr-defined]
        c.record_many([live(6), shadow(6)])
        assert pairer.counts.pairs == 0  # default schema: the labels would count under "other"
        c.adopt_schema(SCHEMA)
        c.record_many([live(7)])
        assert (pairer.counts.pairs, pairer.counts.released) == (1, 2)


def test_without_a_shadow_stage_shadow_turns_are_still_kept_out_of_the_live_table(tmp_path: Path) -> None:
    now = [T0 + 10]
    with Collector(make_config(tmp_path / "state"), clock=lambda: from_unix(now[0]), rng=random.Random(1)) as c:
        result = c.record_many([shadow(5), live(5)])
        assert result.recorded == 1 and _window_events(c) == 1


def test_jsonl_carries_the_mode_and_the_live_turn_a_shadow_turn_shadows() -> None:
    doc = {"schema_version": "1", "session_id": "s", "timestamp": T0, "event_id": "x-shadow", "mode": "shadow",
           "shadow_of": "x"}
    e = event_from_dict(doc, "t", Redactor())
    assert (e.mode, e.shadow_of) == ("shadow", "x")
    with pytest.raises(EventFormatError, match="shadow_of"):
        event_from_dict({**doc, "shadow_of": None}, "t", Redactor())
    with pytest.raises(EventFormatError, match="mode"):
        event_from_dict({**doc, "mode": "canary"}, "t", Redactor())
    assert event_from_dict({**doc, "mode": "live"}, "t", Redactor()).shadow_of is None


def test_otlp_spans_carry_the_mode_attribute() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    from tenant_agent.ingest.otlp import OtlpMapper

    attrs = [KeyValue(key="fedsignal.mode", value=AnyValue(string_value="shadow")),
             KeyValue(key="fedsignal.shadow.of", value=AnyValue(string_value="live-turn-7")),
             KeyValue(key="gen_ai.conversation.id", value=AnyValue(string_value="conv"))]
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat", start_time_unix_nano=int(T0 * 1e9),
                end_time_unix_nano=int((T0 + 1) * 1e9), attributes=attrs)
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    (event,) = OtlpMapper("t", Redactor()).map_traces(req)
    assert (event.mode, event.shadow_of) == ("shadow", "live-turn-7")


def test_the_shadow_share_is_sticky_and_labels_are_per_rollout() -> None:
    share = [session_in_shadow(RID, f"s{i}", 0.2) for i in range(2000)]
    assert 0.15 < sum(share) / len(share) < 0.25
    assert all(session_in_shadow(RID, f"s{i}", 0.5) for i in range(2000) if share[i])
    assert shadow_label(RID, "worse") != shadow_label(RID, "better")
