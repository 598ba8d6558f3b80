"""Hotspot rules and candidate detection from merged cells (never tenant-level data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import server.review.candidates as candidates
from server.db import transaction
from server.review import remediation
from server.review.candidates import (
    AboveThreshold,
    CellHistory,
    RiseOverOtherVersions,
    RiseOverPreviousWindows,
    detect,
)
from server.review.remediation import RemediationMap
from server.review.workflow import get_candidate
from server.signals.views import MergedCellView
from tests.server.review.world import ServerWorld


def cell(measure: str, rate: float, low: float, high: float, *, window: int = 7200, intent: str = "billing",
         version: str = "baseline", turns: float = 1000.0, cohort: str = "c1", suppressed: bool = False) -> MergedCellView:
    return MergedCellView(
        cohort=cohort, window_start=window, window_end=window + 3600, measure=measure,
        slice={"intent": intent, "artifact_version": version}, estimate=rate * turns, variance=4.0, rate=rate,
        rate_low=low, rate_high=high, tenants=6, turns_estimate=turns, turns_variance=4.0, suppressed=suppressed,
    )


def test_above_threshold_needs_the_whole_interval_above() -> None:
    rule = AboveThreshold({"wrong_tool": 0.10})
    history = CellHistory([])
    assert rule.find(cell("wrong_tool", 0.3, 0.25, 0.35), history) is not None
    assert rule.find(cell("wrong_tool", 0.12, 0.08, 0.16), history) is None
    assert rule.find(cell("task_success", 0.9, 0.85, 0.95), history) is None


def test_rise_over_previous_windows() -> None:
    prev = [cell("timeout", 0.02, 0.01, 0.03, window=w) for w in (0, 3600)]
    rising = cell("timeout", 0.06, 0.05, 0.07, window=7200)
    flat = cell("timeout", 0.025, 0.015, 0.035, window=7200)
    rule = RiseOverPreviousWindows(lookback=3, min_windows=2, confidence=0.95)
    assert rule.find(rising, CellHistory([*prev, rising])) is not None
    assert rule.find(flat, CellHistory([*prev, flat])) is None
    assert rule.find(rising, CellHistory([prev[0], rising])) is None  # too little history


def test_rise_over_other_artifact_versions() -> None:
    control = cell("safety_incident", 0.002, 0.0, 0.004, version="baseline")
    canary = cell("safety_incident", 0.05, 0.04, 0.06, version="cand-x")
    rule = RiseOverOtherVersions(confidence=0.95)
    assert rule.find(canary, CellHistory([control, canary])) is not None
    assert rule.find(control, CellHistory([control, canary])) is None


def test_remediation_map_is_data_and_renders_a_routing_rule() -> None:
    m = RemediationMap.load()
    assert m.version == "1.0.0"
    name, content = m.render(m.remedies["wrong_tool"], "billing")
    doc = json.loads(content)
    assert name == "routing_rule.billing" and doc["kind"] == "routing_rule" and doc["tool"] == "invoice_lookup"
    assert m.remedies["safety_incident"].risk_class == "critical"


def test_broken_remediation_map_is_refused(tmp_path: Path) -> None:
    doc = json.loads(Path(remediation.__file__).with_name("data").joinpath("remediation_v1.json").read_text())
    doc["categories"]["wrong_tool"]["template"] = "nope"
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(remediation.RemediationMapError, match="nope"):
        RemediationMap.load(p)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


def test_detection_creates_one_candidate_with_evidence_and_is_idempotent(
    world: ServerWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [
        cell("wrong_tool", 0.35, 0.30, 0.40, intent="order_status"),
        cell("wrong_tool", 0.03, 0.02, 0.04, intent="billing"),
        cell("wrong_tool", 0.50, 0.45, 0.55, intent="refund", suppressed=True),
        cell("wrong_tool", 0.40, 0.35, 0.45, intent="order_status", window=3600),  # older window: history only
    ]
    monkeypatch.setattr(candidates, "merged_cells", lambda session, cohort, settings, **kw: cells)
    with transaction(world.ctx.sessions) as s:
        created = detect(s, world.ctx)
        assert len(created) == 1
        cid = created[0].id
    with transaction(world.ctx.sessions) as s:
        assert detect(s, world.ctx) == []
        rec = get_candidate(s, cid)
        evidence = json.loads(rec.evidence_json)
        assert rec.state == "proposed" and rec.risk_class == "low" and rec.kind == "routing_rule"
        assert evidence["rule"] == "above_threshold" and evidence["cells"][0]["slice"]["intent"] == "order_status"
        assert "tenant" not in json.dumps(evidence).replace("tenants", "")
        assert json.loads(rec.rollout_plan_json)["stages"]
    # A later window with the same hotspot does not add a second open candidate.
    cells.append(cell("wrong_tool", 0.33, 0.28, 0.38, intent="order_status", window=10800))
    with transaction(world.ctx.sessions) as s:
        assert detect(s, world.ctx) == []


def test_concurrent_detection_on_two_replicas_creates_one_candidate(
    world: ServerWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [cell("wrong_tool", 0.35, 0.30, 0.40, intent="order_status")]
    monkeypatch.setattr(candidates, "merged_cells", lambda session, cohort, settings, **kw: cells)
    world.on_replicas(candidates.run_detection)
    from sqlalchemy import func, select

    from server.review.models import CandidateRecord

    with transaction(world.ctx.sessions) as s:
        assert s.scalar(select(func.count()).select_from(CandidateRecord)) == 1
