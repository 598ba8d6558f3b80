"""The remediation map loads through a typed model: a typo'd key or a bad value is refused with its location."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregation.risk import RiskClass
from server.review.remediation import RemediationMap, RemediationMapError

SHIPPED = Path(__file__).resolve().parents[3] / "server" / "review" / "data" / "remediation_v1.json"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "remediation.json"
    p.write_text(text)
    return p


def test_a_typo_in_a_category_key_is_refused_with_file_key_and_line(tmp_path: Path) -> None:
    text = SHIPPED.read_text().replace('"wrong_tool":        {"kind"', '"wrong_tool":        {"kidn"', 1)
    lines = text.splitlines()
    line = next(i for i, raw in enumerate(lines, start=1) if '"kidn"' in raw)
    with pytest.raises(RemediationMapError) as caught:
        RemediationMap.load(_write(tmp_path, text))
    message = str(caught.value)
    assert f"remediation.json:{line}: categories.wrong_tool.kidn: unknown key" in message
    assert "categories.wrong_tool.kind: required key is missing" in message


def test_an_unknown_risk_class_and_a_typod_rules_key_are_refused(tmp_path: Path) -> None:
    doc = json.loads(SHIPPED.read_text())
    doc["categories"]["timeout"]["risk_class"] = "medium"
    doc["rules"]["lookback_windwos"] = doc["rules"].pop("lookback_windows")
    with pytest.raises(RemediationMapError) as caught:
        RemediationMap.load(_write(tmp_path, json.dumps(doc, indent=1)))
    message = str(caught.value)
    assert "categories.timeout.risk_class" in message and "'medium'" in message
    assert "rules.lookback_windwos: unknown key (did you mean lookback_windows?)" in message


def test_the_shipped_map_types_its_risk_classes() -> None:
    m = RemediationMap.load()
    assert m.remedies["safety_incident"].risk_class is RiskClass.CRITICAL
    assert m.kind_risk_class("guardrail_template") is RiskClass.CRITICAL
    assert m.rules.min_turns_sigmas > 0 and 0 < m.rules.max_interval_width <= 1
