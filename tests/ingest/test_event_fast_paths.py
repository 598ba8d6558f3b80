"""Fast paths of the ingest path give exactly what the general paths give.

Each fast path is compared with the code it shortcuts, on generated inputs
that include the awkward cases (wrong types, empty strings, labels with
personal data), including the exception raised and the redaction counts.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.ingest.records import _tool_call, _tool_calls
from tenant_agent.redact import RedactionConfig, Redactor

FIELDS = {f.name: f for f in dataclasses.fields(DecisionEvent)}

SAMPLE_VALUES: dict[str, list[Any]] = {
    "tenant_id": ["tenant-a"],
    "session_id": ["s-1", "s_abc"],
    "timestamp": [1.0, 1_764_000_000.5],
    "user_id": [None, "u_0123"],
    "event_id": [None, "ev-1"],
    "tool_calls": [(), (ToolCall("lookup", "timeout", 12.0, "refund"),)],
    "retrieval_ids": [(), ("kb-1", "kb-2")],
    "finish_reasons": [(), ("stop",)],
    "evaluations": [{}, {"groundedness": 0.3}],
    "latency_ms": [None, 5.5],
    "input_tokens": [None, 3],
    "output_tokens": [None, 4],
}


def sample(name: str, rng: random.Random) -> Any:
    if name in SAMPLE_VALUES:
        return rng.choice(SAMPLE_VALUES[name])
    if FIELDS[name].type in ("bool", bool):
        return rng.random() < 0.5
    return rng.choice([None, f"{name}-value"])


def test_from_fields_equals_the_constructor() -> None:
    rng = random.Random(1)
    required = ["tenant_id", "session_id", "timestamp"]
    optional = [n for n in FIELDS if n not in required]
    for _ in range(500):
        names = required + rng.sample(optional, rng.randrange(len(optional) + 1))
        fields = {n: sample(n, rng) for n in names}
        fast, slow = DecisionEvent.from_fields(dict(fields)), DecisionEvent(**fields)
        assert fast == slow
        assert type(fast) is DecisionEvent
        assert vars(fast) == vars(slow)


def test_from_fields_gives_each_event_its_own_default_evaluations() -> None:
    a = DecisionEvent.from_fields({"tenant_id": "t", "session_id": "s", "timestamp": 1.0})
    b = DecisionEvent.from_fields({"tenant_id": "t", "session_id": "s", "timestamp": 1.0})
    assert a.evaluations == {} and a.evaluations is not b.evaluations


def test_from_fields_event_is_frozen() -> None:
    event = DecisionEvent.from_fields({"tenant_id": "t", "session_id": "s", "timestamp": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.intent = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": "t", "session_id": "s"},
        {"tenant_id": "t", "session_id": "s", "timestamp": 1.0, "bogus": 1},
        {"session_id": "s", "timestamp": 1.0, "intent": "x"},
    ],
)
def test_from_fields_rejects_what_the_constructor_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(TypeError) as slow:
        DecisionEvent(**fields)
    with pytest.raises(TypeError) as fast:
        DecisionEvent.from_fields(fields)
    assert str(fast.value) == str(slow.value)


def test_decision_event_has_no_post_init() -> None:
    # from_fields skips the generated __init__: a __post_init__ would be skipped too.
    assert not hasattr(DecisionEvent, "__post_init__")


# -- tool calls ---------------------------------------------------------------------

LABELS: list[Any] = [
    None, "", "lookup_order", "timeout", "http_500", "refund_order", "x" * 256, "x" * 257,
    "user jane@example.org", "call +44 20 7946 0958", "order 12345678", "1.2.3.4", 7, 3.5, True, ["a"],
]  # fmt: skip
LATENCIES: list[Any] = [None, 0, 12, 1200.5, -1, float("nan"), True, "12"]


def outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return ("error", type(exc).__name__, str(exc))


def tool_call_items(rng: random.Random) -> list[Any]:
    items: list[Any] = [None, "lookup", ["name"], {}]
    for _ in range(3000):
        item: dict[str, Any] = {}
        for key in ("name", "error", "expected"):
            if rng.random() < 0.7:
                item[key] = rng.choice(LABELS)
        if rng.random() < 0.4:
            item["latency_ms"] = rng.choice(LATENCIES)
        if rng.random() < 0.05:
            item["extra"] = 1
        items.append(item)
    return items


@pytest.mark.parametrize("tenant_patterns", [False, True])
def test_tool_call_fast_path_equals_the_general_path(tenant_patterns: bool) -> None:
    config = RedactionConfig(patterns={"ticket": r"T-[0-9]+"}) if tenant_patterns else None
    for item in tool_call_items(random.Random(2)):
        fast_redactor, slow_redactor = Redactor(config), Redactor(config)
        fast = outcome(_tool_calls, [item], fast_redactor)
        slow = outcome(lambda *args: (_tool_call(*args),), item, "tool_calls[0]", slow_redactor)
        assert fast == slow, item
        assert fast_redactor.stats == slow_redactor.stats, item
