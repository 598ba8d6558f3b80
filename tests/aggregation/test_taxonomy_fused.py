"""The fused classifier (one generated function per taxonomy) decides exactly as the compiled closures."""

from __future__ import annotations

import random
from typing import Any

from aggregation.events import DecisionEvent, ToolCall
from aggregation.taxonomy import Category, Taxonomy


def closures(taxonomy: Taxonomy, event: DecisionEvent) -> frozenset[str]:
    """The reference: every category's compiled predicate, one by one."""
    return frozenset(name for name in taxonomy.categories if taxonomy.category(name).predicate(event))


EVALUATORS = ["context_relevance", "tool_selection", "groundedness", "faithfulness", "hallucination",
              "escalation", "style", "tone", "safety", "toxicity", "unrelated"]  # fmt: skip
LABELS = ["irrelevant", "Wrong_Tool", "unsupported", "HALLUCINATED", "missed", "off_tone", "unsafe", "toxic", "fine"]
ERRORS = ["timeout", "TimeoutError", "ReadTimeout", "http_500", "deadline_exceeded", "Timeout_config"]


FLAGS = ("retrieval_empty", "escalated", "escalation_requested", "policy_blocked", "guardrail_triggered",
         "human_edited", "user_reasked", "timed_out")  # fmt: skip


def random_value(rng: random.Random) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice([0.0, 0.49, 0.5, 0.51, 1.0, rng.random()])
    if kind == 1:
        return rng.choice(LABELS)
    if kind == 2:
        return {"score": rng.random()}
    if kind == 3:
        return {"label": rng.choice(LABELS)}
    if kind == 4:
        return {"score": rng.choice([0.2, 0.8]), "label": rng.choice(LABELS)}
    if kind == 5:
        return rng.choice([0, 1, True, False])  # ints and bools as they may come from the Python API
    return {"score": "0.1"}  # a score that is not a number never hits


def random_event(rng: random.Random) -> DecisionEvent:
    calls = tuple(
        ToolCall(
            rng.choice(["a", "b"]),
            error=rng.choice([None, None, *ERRORS]),
            expected=rng.choice([None, None, "a", "b"]),
        )
        for _ in range(rng.randrange(4))
    )
    fields: dict[str, Any] = {flag: rng.random() < 0.2 for flag in FLAGS}
    return DecisionEvent(
        tenant_id="t",
        session_id="s",
        timestamp=1.0,
        tool_calls=calls,
        evaluations={name: random_value(rng) for name in rng.sample(EVALUATORS, rng.randrange(4))},
        outcome=rng.choice([None, "success", "Resolved", "failure", "unsafe", "SAFETY_INCIDENT"]),
        error_type=rng.choice([None, *ERRORS]),
        finish_reasons=tuple(rng.sample(["stop", "length", "content_filter", "Content_Filter"], rng.randrange(3))),
        latency_ms=rng.choice([None, 10.0, 90_000.0]),
        **fields,
    )


def test_the_shipped_taxonomy_is_fused_and_agrees_with_its_closures() -> None:
    taxonomy = Taxonomy.load()
    assert taxonomy.classify is not Taxonomy.classify.__get__(taxonomy)  # the generated function is in use
    rng = random.Random(5)
    hits: set[str] = set()
    for _ in range(5000):
        event = random_event(rng)
        got = taxonomy.classify(event)
        assert got == closures(taxonomy, event), event
        hits |= got
    assert hits == set(taxonomy.categories)  # every category was exercised, positive at least once


def test_numeric_field_predicates_and_nested_rules_agree() -> None:
    doc = {
        "kind": "fedsignal.taxonomy",
        "version": "t-1",
        "categories": [
            {"name": "timeout", "reads": ["latency_ms", "output_tokens"],
             "when": {"any": [{"field": "latency_ms", "above": 1000}, {"field": "output_tokens", "below": 3}]}},
            {"name": "tool_error", "reads": ["escalated", "human_edited", "tool_calls.error"],
             "when": {"all": [{"not": {"flag": "escalated"}},
                              {"any": [{"flag": "human_edited"}, {"tool_call_error": ["HTTP_500"]}]}]}},
        ],
    }  # fmt: skip
    taxonomy = Taxonomy.from_dict(doc)
    rng = random.Random(9)
    for _ in range(2000):
        event = DecisionEvent(
            tenant_id="t", session_id="s", timestamp=1.0,
            latency_ms=rng.choice([None, 999.0, 1000.0, 1000.5]),
            output_tokens=rng.choice([None, 0, 3, 7]),
            escalated=rng.random() < 0.5, human_edited=rng.random() < 0.3,
            tool_calls=(ToolCall("x", error=rng.choice([None, "http_500", "http_404"])),),
        )  # fmt: skip
        assert taxonomy.classify(event) == closures(taxonomy, event)
    assert taxonomy.classify(DecisionEvent(tenant_id="t", session_id="s", timestamp=1.0, latency_ms=2000.0)) == {
        "timeout"
    }


def test_hand_made_categories_keep_their_predicates() -> None:
    """Categories built in code (no ``when`` document) are classified by their predicates as given."""
    category = Category("tool_error", "failure", "", ("outcome",), lambda e: e.outcome == "x")
    taxonomy = Taxonomy("t-1", [category])
    assert taxonomy.classify(DecisionEvent(tenant_id="t", session_id="s", timestamp=1.0, outcome="x")) == {
        "tool_error"
    }
    assert taxonomy.classify(DecisionEvent(tenant_id="t", session_id="s", timestamp=1.0)) == frozenset()
