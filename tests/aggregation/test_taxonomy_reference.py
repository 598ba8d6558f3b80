"""The compiled taxonomy predicates (loops and inline score checks written for
speed) classify exactly as a plain interpreter of the predicate grammar."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest

from aggregation.events import DecisionEvent, ToolCall
from aggregation.taxonomy import Taxonomy


def reference(spec: Mapping[str, Any], e: DecisionEvent) -> bool:
    """The grammar of aggregation/taxonomy.py, read literally."""
    if "all" in spec:
        return all(reference(p, e) for p in spec["all"])
    if "any" in spec:
        return any(reference(p, e) for p in spec["any"])
    if "not" in spec:
        return not reference(spec["not"], e)
    if "flag" in spec:
        return getattr(e, spec["flag"]) is True
    if "field" in spec:
        value = getattr(e, spec["field"])
        if "in" in spec:
            wanted = {v.casefold() for v in spec["in"]}
            if isinstance(value, tuple):
                return any(v.casefold() in wanted for v in value)
            return value is not None and value.casefold() in wanted
        if "above" in spec:
            return value is not None and value > spec["above"]
        return value is not None and value < spec["below"]
    if "tool_call_error" in spec:
        arg = spec["tool_call_error"]
        if arg == "any":
            return any(c.error is not None for c in e.tool_calls)
        errors = {v.casefold() for v in arg}
        return any(c.error is not None and c.error.casefold() in errors for c in e.tool_calls)
    if "tool_call_mismatch" in spec:
        return any(c.expected is not None and c.expected != c.name for c in e.tool_calls)
    below, above = spec.get("below"), spec.get("above")
    labels = {v.casefold() for v in spec.get("labels", [])}

    def score_hits(score: Any) -> bool:
        if isinstance(score, bool) or not isinstance(score, int | float):
            return False
        return (below is not None and score < below) or (above is not None and score > above)

    for name in spec["evaluation"]:
        value = e.evaluations.get(name)
        if isinstance(value, str):
            if value.casefold() in labels:
                return True
        elif isinstance(value, Mapping):
            label = value.get("label")
            if score_hits(value.get("score")) or (isinstance(label, str) and label.casefold() in labels):
                return True
        elif value is not None and score_hits(value):
            return True
    return False


class Score(float):
    """A float subclass: must take the general path, with the same answer."""


EVALUATORS = [
    "groundedness", "faithfulness", "hallucination", "context_relevance", "tool_selection", "escalation",
    "style", "tone", "safety", "toxicity", "other",
]  # fmt: skip
EVAL_VALUES: list[Any] = [
    0.0, 0.3, 0.5, 0.7, 1.0, 0, 1, True, False, math.nan, math.inf, -math.inf, Score(0.2), Score(0.9),
    "unsupported", "UNSUPPORTED", "Hallucinated", "irrelevant", "wrong_tool", "missed", "off_brand",
    "unsafe", "toxic", "fine", "", {"score": 0.2}, {"score": 0.9, "label": "Unsupported"},
    {"label": "toxic"}, {"score": True}, {"score": "0.2"}, {"label": 3}, None,
]  # fmt: skip
ERRORS = [None, None, "timeout", "TimeoutError", "TIMEOUT", "http_500", "deadline_exceeded", "x"]
TOOLS = ["lookup", "refund", "search"]


def random_event(rng: random.Random) -> DecisionEvent:
    calls = tuple(
        ToolCall(rng.choice(TOOLS), rng.choice(ERRORS), None, rng.choice([None, None, *TOOLS]))
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3]))
    )
    evaluations = {
        rng.choice(EVALUATORS): rng.choice(EVAL_VALUES) for _ in range(rng.choice([0, 1, 1, 2, 4]))
    }
    flags: dict[str, Any] = {
        name: rng.random() < 0.2
        for name in (
            "retrieval_empty", "fallback", "escalated", "escalation_requested", "policy_blocked",
            "guardrail_triggered", "human_edited", "user_reasked", "timed_out",
        )
    }  # fmt: skip
    return DecisionEvent(
        tenant_id="t",
        session_id="s",
        timestamp=1.0,
        tool_calls=calls,
        evaluations=evaluations,
        outcome=rng.choice([None, "success", "Resolved", "failure", "unsafe", "safety_incident"]),
        error_type=rng.choice([None, "timeout", "ReadTimeout", "model_error"]),
        finish_reasons=tuple(
            rng.sample(["stop", "length", "content_filter", "CONTENT_FILTER"], rng.randrange(3))
        ),
        latency_ms=rng.choice([None, 10.0, 5_000.0, 90_000.0]),
        input_tokens=rng.choice([None, 0, 5_000]),
        **flags,
    )


CUSTOM = {
    "kind": "fedsignal.taxonomy",
    "version": "9.0.0",
    "categories": [
        {
            "name": "timeout",
            "reads": ["latency_ms", "input_tokens", "finish_reasons"],
            "when": {
                "any": [
                    {"field": "latency_ms", "above": 30_000},
                    {
                        "all": [
                            {"field": "input_tokens", "below": 1},
                            {"field": "finish_reasons", "in": ["length"]},
                        ]
                    },
                ]
            },
        },
        {
            "name": "unsupported_claim",
            "reads": ["evaluations.groundedness", "evaluations.other", "tool_calls.error"],
            "when": {
                "any": [
                    {"evaluation": ["groundedness", "other"], "above": 0.6},
                    {"not": {"tool_call_error": "any"}},
                ]
            },
        },
    ],
}


@pytest.mark.parametrize("source", ["shipped", "custom"])
def test_compiled_taxonomy_matches_the_reference_interpreter(source: str) -> None:
    if source == "shipped":
        taxonomy = Taxonomy.load()
        doc = json.loads(resources.files("aggregation").joinpath("data/taxonomy_v1.json").read_text())
    else:
        taxonomy, doc = Taxonomy.from_dict(CUSTOM), CUSTOM
    rules = [(c["name"], c["when"]) for c in doc["categories"]]
    rng = random.Random(5)
    hits: dict[str, int] = {}
    for _ in range(20_000):
        e = random_event(rng)
        expected = frozenset(name for name, when in rules if reference(when, e))
        assert taxonomy.classify(e) == expected, e
        for name in expected:
            hits[name] = hits.get(name, 0) + 1
    # Every rule fires often enough for the comparison to mean something.
    assert set(hits) == {name for name, _ in rules}
    assert min(hits.values()) > 200
