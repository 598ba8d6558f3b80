"""The shipped failure taxonomy: one positive and one near-miss per category."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregation.events import DecisionEvent, ToolCall
from aggregation.schema import default_schema
from aggregation.taxonomy import Taxonomy, TaxonomyError


def event(**fields: Any) -> DecisionEvent:
    return DecisionEvent(tenant_id="t", session_id="s", timestamp=1.0, **fields)


CASES: dict[str, tuple[DecisionEvent, DecisionEvent]] = {
    # category: (positive, near-miss negative)
    "missing_context": (
        event(evaluations={"context_relevance": 0.3}),
        event(evaluations={"context_relevance": 0.5}, retrieval_ids=("kb-1",)),
    ),
    "wrong_tool": (
        event(tool_calls=(ToolCall("lookup_order", expected="refund_order"),)),
        event(tool_calls=(ToolCall("refund_order", expected="refund_order"),)),
    ),
    "tool_error": (
        event(tool_calls=(ToolCall("a"), ToolCall("b", error="http_500"))),
        event(tool_calls=(ToolCall("a"), ToolCall("b")), error_type="model_error"),
    ),
    "timeout": (
        event(tool_calls=(ToolCall("a", error="TimeoutError"),)),
        event(tool_calls=(ToolCall("a", error="timeout_config_invalid"),), latency_ms=90_000.0),
    ),
    "unsupported_claim": (
        event(evaluations={"faithfulness": {"score": 0.9, "label": "Unsupported"}}),
        event(evaluations={"groundedness": 0.5, "hallucination": 0.5}),
    ),
    "poor_escalation": (
        event(escalation_requested=True),
        event(escalation_requested=True, escalated=True),
    ),
    "policy_violation": (
        event(finish_reasons=("stop", "content_filter")),
        event(finish_reasons=("stop",), policy_version="p-2"),
    ),
    "style_mismatch": (
        event(evaluations={"tone": "off_brand"}),
        event(evaluations={"tone": "on_brand", "style": 0.8}),
    ),
    "human_correction": (event(human_edited=True), event(human_edited=False, user_reasked=True)),
    "user_reask": (event(user_reasked=True), event(human_edited=True)),
    "task_success": (event(outcome="Resolved"), event(outcome="partial_success")),
    "escalated": (event(escalated=True), event(escalation_requested=True)),
    "safety_incident": (
        event(evaluations={"toxicity": 0.8}),
        event(evaluations={"toxicity": 0.2, "safety": "safe"}),
    ),
}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.load()


def test_shipped_taxonomy_names_every_category_of_the_schema(taxonomy: Taxonomy) -> None:
    measures = set(default_schema("c").measures) - {"turns", "other"}
    assert taxonomy.version == "1.0.0"
    assert set(taxonomy.categories) == measures == set(CASES)


@pytest.mark.parametrize("category", sorted(CASES))
def test_positive_case_is_classified(taxonomy: Taxonomy, category: str) -> None:
    assert category in taxonomy.classify(CASES[category][0])


@pytest.mark.parametrize("category", sorted(CASES))
def test_near_miss_is_not_classified(taxonomy: Taxonomy, category: str) -> None:
    assert category not in taxonomy.classify(CASES[category][1])


def test_clean_turn_has_no_failure(taxonomy: Taxonomy) -> None:
    assert taxonomy.classify(event(outcome="success", tool_calls=(ToolCall("a"),))) == {"task_success"}


def test_every_rule_declares_what_it_reads(taxonomy: Taxonomy) -> None:
    assert taxonomy.category("wrong_tool").reads == (
        "evaluations.tool_selection",
        "tool_calls.expected",
        "tool_calls.name",
    )


def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (Path(__file__).resolve().parents[2] / "aggregation" / "data" / "taxonomy_v1.json").read_text()
    )
    return doc


def test_tenant_override_file_replaces_the_rules(tmp_path: Path) -> None:
    doc = shipped()
    doc["version"] = "1.0.0+tenant-a"
    doc["categories"] = [
        {
            "name": "timeout",
            "kind": "failure",
            "reads": ["latency_ms"],
            "when": {"field": "latency_ms", "above": 30000},
        }
    ]
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(doc))
    taxonomy = Taxonomy.load(path)
    assert taxonomy.version == "1.0.0+tenant-a" and taxonomy.categories == ("timeout",)
    assert taxonomy.classify(event(latency_ms=45_000.0)) == {"timeout"}
    assert taxonomy.classify(event(latency_ms=30_000.0)) == frozenset()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "made_up"}, "not a measure of the signal schema"),
        ({"reads": ["user_reasked"]}, "'reads' declares"),
        ({"when": {"flag": "outcome"}}, "boolean event field"),
        ({"when": {"field": "no_such_field", "in": ["x"]}}, "not a DecisionEvent field"),
        ({"when": {"evaluation": ["tone"]}}, "needs 'below', 'above' or 'labels'"),
        ({"when": {"sometimes": True}}, "unknown predicate"),
    ],
)
def test_invalid_rules_are_refused_with_the_reason(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    doc = shipped()
    doc["categories"][0].update(change)
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.load(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="cannot read taxonomy file"):
        Taxonomy.load(tmp_path / "absent.json")
