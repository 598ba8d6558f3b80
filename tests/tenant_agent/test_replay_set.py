"""The local replay set: opt-in, retention, size and per-category caps, purge, redacted text only when enabled."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aggregation.clock import from_unix
from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.replay_set import ReplaySet, ReplaySetPolicy

T0 = 1_767_225_600.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return from_unix(self.now)


def wrong_tool(i: int, text: str | None = "my order <EMAIL> is late") -> DecisionEvent:
    return DecisionEvent(tenant_id="t", session_id=f"s{i}", timestamp=T0 + i, event_id=f"e{i}", intent="refund",
                         tool_calls=(ToolCall("lookup_order", expected="issue_refund"),), outcome="failure",
                         text=text)


def timeout(i: int) -> DecisionEvent:
    return DecisionEvent(tenant_id="t", session_id=f"x{i}", timestamp=T0 + i, event_id=f"x{i}", intent="billing",
                         timed_out=True, outcome="failure")


def ok(i: int) -> DecisionEvent:
    return DecisionEvent(tenant_id="t", session_id=f"ok{i}", timestamp=T0 + i, event_id=f"ok{i}", outcome="success")


def test_nothing_is_kept_unless_the_tenant_opts_in(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy())
    result = rs.capture([wrong_tool(1)])
    assert (result.kept, result.disabled) == (0, 1)
    assert rs.cases() == []


def test_failing_turns_become_cases_with_gold_labels_and_no_text_by_default(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True))
    result = rs.capture([wrong_tool(1), ok(2)])
    assert (result.kept, result.not_failures) == (1, 1)
    (case,) = rs.cases()
    assert case.category == "wrong_tool" and case.intent == "refund"
    assert case.gold == {"expected_tools": ["issue_refund"]}
    assert case.text is None
    assert b"<EMAIL>" not in (tmp_path / "replay.db").read_bytes()


def test_redacted_text_is_kept_only_where_enabled(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, store_redacted_text=True))
    rs.capture([wrong_tool(1)])
    assert rs.cases()[0].text == "my order <EMAIL> is late"


def test_the_per_category_cap_keeps_an_incident_storm_from_filling_the_set(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, per_category_cap=3, max_cases=100))
    result = rs.capture([wrong_tool(i) for i in range(10)] + [timeout(1)])
    assert (result.kept, result.capped, result.displaced) == (4, 7, 0)
    assert rs.counts() == {"wrong_tool": 3, "timeout": 1}
    # Of the storm, the newest turns stay.
    assert sorted(c.session_id for c in rs.cases("wrong_tool")) == ["s7", "s8", "s9"]


def test_at_its_cap_a_category_takes_new_cases_only_in_place_of_stale_ones(tmp_path: Path) -> None:
    clock = Clock()
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, per_category_cap=3, max_cases=100), clock=clock)
    clock.now = T0
    rs.capture([wrong_tool(i) for i in range(3)] + [timeout(1)])
    rs.mark_replayed("ro-1", [c.case_id for c in rs.cases("wrong_tool")])
    assert rs.unreplayed("ro-1", "wrong_tool") == []
    clock.now = T0 + 3599  # within the refresh period: the cap holds, nothing is displaced
    result = rs.capture([wrong_tool(i) for i in range(20, 22)])
    assert (result.kept, result.capped, result.displaced) == (0, 2, 0)
    clock.now = T0 + 3600  # one window on: the stale cases give way, so a waiting replay gets new ones
    result = rs.capture([wrong_tool(i) for i in range(10, 12)])
    assert (result.kept, result.capped, result.displaced) == (2, 0, 2)
    assert [c.session_id for c in rs.cases("wrong_tool")] == ["s2", "s10", "s11"]  # oldest first
    assert rs.counts() == {"wrong_tool": 3, "timeout": 1}  # another category is never displaced
    assert [c.session_id for c in rs.unreplayed("ro-1", "wrong_tool")] == ["s10", "s11"]


def test_over_the_cap_only_stored_cases_have_their_text_asked_for(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, per_category_cap=2, store_redacted_text=True))
    asked: list[str] = []

    def text_of(event: Any) -> str:
        asked.append(event.session_id)
        return "redacted"

    rs.capture([wrong_tool(i) for i in range(6)], text_of=text_of)
    assert asked == ["s4", "s5"]


def test_max_size_evicts_the_oldest_cases(tmp_path: Path) -> None:
    clock = Clock()
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, max_cases=3, per_category_cap=100), clock=clock)
    for i in range(5):
        clock.now = T0 + i
        rs.capture([wrong_tool(i)])
    assert [c.session_id for c in rs.cases()] == ["s2", "s3", "s4"]


def test_retention_prunes_old_cases(tmp_path: Path) -> None:
    clock = Clock()
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True, retention_seconds=3600), clock=clock)
    rs.capture([wrong_tool(1)])
    clock.now = T0 + 1800
    rs.capture([wrong_tool(2)])
    clock.now = T0 + 3601
    assert [c.session_id for c in rs.cases()] == ["s2"]
    clock.now = T0 + 1800 + 3601
    assert rs.cases() == []


def test_purge_removes_one_category_or_everything(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True))
    rs.capture([wrong_tool(1), wrong_tool(2), timeout(1)])
    assert rs.purge("timeout") == 1
    assert rs.counts() == {"wrong_tool": 2}
    assert rs.purge() == 2
    assert rs.cases() == [] and rs.show("anything") is None


def test_the_same_turn_is_kept_once(tmp_path: Path) -> None:
    rs = ReplaySet(tmp_path, ReplaySetPolicy(enabled=True))
    rs.capture([wrong_tool(1)])
    assert rs.capture([wrong_tool(1)]).kept == 0
    assert len(rs.cases()) == 1
