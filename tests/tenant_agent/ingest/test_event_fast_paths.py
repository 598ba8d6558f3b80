"""Fast paths of the ingest path give exactly what the general paths give.

Each fast path is compared with the code it shortcuts, on generated inputs
that include the awkward cases (wrong types, empty strings, labels with
personal data), including the exception raised and the redaction counts.
"""

from __future__ import annotations

import dataclasses
import random
from types import MappingProxyType
from typing import Any

import pytest

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.ingest.records import (
    EventFormatError,
    _evaluations,
    _tool_call,
    _tool_calls,
    evaluation_value,
    event_from_dict,
)
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


# -- label redaction --------------------------------------------------------------

# Pieces that make numeric entities or come close: digit runs, the separators
# the numeric passes use, capitals (IBAN heads), keywords (MRN, written dates),
# and whitespace the phone check counts as digits.
LABEL_PIECES = [
    *"0123456789", "12", "345", "4711", "0958", "2020", "19", "255",
    ".", "-", " ", "  ", "\t", "\n", "\r", "\v", "\f", "(", ")", "+", "_", "#", ",",
    "sess", "s", "c", "GB", "DE", "X", "AB", "gb", "T", "Z",
    "mrn", "MRN", "patient id", "Patient", "medical record", "may", "Mar", "DEC", "June", "st", "of",
    "ssn", "SSN", "id", "order",
]  # fmt: skip


def random_labels(rng: random.Random, count: int) -> list[str]:
    labels = []
    for _ in range(count):
        label = "".join(rng.choice(LABEL_PIECES) for _ in range(rng.randrange(1, 16)))
        labels.append(label[: rng.randrange(1, 41)])
    return labels


ADVERSARIAL_LABELS = [
    "sess-4711", "sess-123456", "c-81", "(12)\n34\n56", "(1)\n23\n4\n5", "(12) 34\n56", "+1 23 45", "+12\n34\n56",
    "mrn 12345", "MRN12345", "patient id 123456", "1 may 2020", "May 1 2020", "GB82WEST1234",
    "GB82 WEST 12", "10.1.2.7", "1.2.3.4", "12-34-56", "2020-1-2", "1-2-2020", "1234567", "123 4567",
    "(123) 4567", "020 7946 09", "4111 1111", "123-45-6789", "ssn 1234", "order 4711", "4711",
    "123456", "12 34 56", "12\t34\t56", "T-1234", "v1234", "build 123456",
    "GB29WESTABCDEFGHIJKL12",  # a (made-up) IBAN with a valid checksum and four digits
]  # fmt: skip


def test_label_fast_path_equals_full_redaction() -> None:
    labels = ADVERSARIAL_LABELS + random_labels(random.Random(3), 60_000)
    skipped = 0
    for label in labels:
        fast_redactor, slow_redactor = Redactor(), Redactor()
        assert fast_redactor.redact_label(label) == slow_redactor.redact(label), repr(label)
        assert fast_redactor.stats == slow_redactor.stats, repr(label)
        digits = sum(ch in "0123456789" for ch in label)
        if digits >= 4 and label in fast_redactor._plain_labels:
            skipped += 1
    # The generator reaches the four-to-six-digit fast path often, not by luck.
    assert skipped > 2_000


def test_label_fast_path_still_redacts_ids_with_personal_data() -> None:
    redactor = Redactor()
    # Six and five digits, but the phone pass counts the newlines as digits.
    assert redactor.redact_label("(12)\n34\n56") == "<PHONE>"
    assert redactor.redact_label("(1)\n23\n4\n5") == "<PHONE>"
    assert redactor.redact_label("mrn 12345") == "mrn <MRN>"
    assert redactor.redact_label("1 may 2020") == "<DATE>"
    assert redactor.redact_label("10.1.2.7") == "<IP_ADDRESS>"
    assert redactor.redact_label("GB29WESTABCDEFGHIJKL12") == "<IBAN>"
    assert redactor.redact_label("sess-4711") == "sess-4711"


# -- evaluations and documents ----------------------------------------------------

EVALUATION_VALUES: list[Any] = [
    0.3, 0.0, -1.5, 1e300, float("nan"), float("inf"), 3, True, "off_brand", "user jane@example.org",
    {"score": 0.2}, {"score": float("nan")}, {"label": "x"}, {}, None, [0.1],
]  # fmt: skip


def reference_evaluations(raw: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    out = {}
    for name, value in raw.items():
        clean_name = redactor.redact_label(name)
        out[clean_name] = evaluation_value(clean_name, value, redactor)
    return out


def test_evaluation_score_fast_path_equals_evaluation_value() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        raw = {
            rng.choice(["groundedness", "tone", "call jane@example.org"]): rng.choice(EVALUATION_VALUES)
            for _ in range(rng.randrange(1, 4))
        }
        fast_redactor, slow_redactor = Redactor(), Redactor()
        fast = outcome(_evaluations, raw, fast_redactor)
        slow = outcome(reference_evaluations, raw, slow_redactor)
        # repr: NaN != NaN, but the same repr means the same normalised value.
        assert repr(fast) == repr(slow), raw
        assert fast_redactor.stats == slow_redactor.stats


def test_any_mapping_is_read_like_a_dict() -> None:
    doc: dict[Any, Any] = {
        "schema_version": "1", "session_id": "sess-4711", "timestamp": 1.0, "intent": "refund",
        "evaluations": {"groundedness": 0.3}, "tool_calls": [{"name": "lookup", "error": "timeout"}],
    }  # fmt: skip
    assert event_from_dict(MappingProxyType(doc), "t", Redactor()) == event_from_dict(doc, "t", Redactor())
    for bad in ({**doc, "bogus": 1}, {**doc, 7: 1}):
        with pytest.raises(EventFormatError, match="unknown field"):
            event_from_dict(bad, "t", Redactor())
        with pytest.raises(EventFormatError, match="unknown field"):
            event_from_dict(MappingProxyType(bad), "t", Redactor())


def test_a_label_shaped_like_an_iban_with_only_its_check_digits_is_redacted() -> None:
    from tenant_agent.redact import Redactor

    value = "GB75WESTABCDEFGHIJKLMN"  # valid mod-97 checksum, two digits only
    assert Redactor().redact(value) == "<IBAN>"
    assert Redactor().redact_label(value) == "<IBAN>"


# -- the inline reads of event_from_dict ---------------------------------------------

DOC_VARIANTS: dict[str, list[Any]] = {
    "session_id": ["sess-1", "sess-2", "jane@example.org", "", 7],
    "timestamp": [1_764_000_000.5, 1_764_000_000, "2025-11-24T16:00:00Z", -1.0, 0.0, float("nan"),
                  float("inf"), True, None, "yesterday"],
    "evaluations": [None, {}, {"groundedness": 0.3}, {"groundedness": 0.3, "tone": 0.9}, {"groundedness": 1},
                    {"groundedness": float("nan")}, {"": 0.3}, {"call jane@example.org": 0.2},
                    {"groundedness": "off_brand"}, {"groundedness": {"score": 0.1}}, [0.1], {7: 0.1},
                    {"x" * 257: 0.1}, {"a": 0.1, "b": True}],
    "safety_incident": [True, False, None, "yes", 1],
    "tool_calls": [None, [], [{"name": "lookup_order"}], [{"name": "lookup_order", "error": "timeout"}],
                   [{"name": "lookup_order", "error": None, "expected": "refund_order"}],
                   [{"name": "lookup_order"}, {"name": "call jane@example.org"}],
                   [{"name": "lookup_order", "latency_ms": 12.0}], [{"name": "lookup_order", "extra": 1}],
                   [{"name": 7}], [{"name": ["a"]}], [{"name": "lookup_order"}, "lookup"], [{}], "lookup",
                   [{"name": "lookup_order", "error": ""}], [{"name": "x" * 257}]],
    "retrieval_ids": [None, [], ["kb-1", "kb-2"], ["kb-1", "jane@example.org"], ["kb-1", 7], ["x" * 257],
                      "kb-1", [None]],
    "latency_ms": [None, 1200.5, 0.0, 12, -1.0, float("inf"), float("nan"), True, "12"],
    "intent": [None, "refund", "", "call +44 20 7946 0958", 7],
    "escalated": [True, False, None, "no"],
}  # fmt: skip


def generated_docs(rng: random.Random, count: int) -> list[dict[str, Any]]:
    docs = []
    for _ in range(count):
        doc: dict[str, Any] = {"schema_version": "1"}
        for field, values in DOC_VARIANTS.items():
            # Mostly well-formed (the first values), so that one bad field at a time is common.
            if field in ("session_id", "timestamp") or rng.random() < 0.7:
                doc[field] = rng.choice(values[:3] if rng.random() < 0.7 else values)
        if rng.random() < 0.3:
            doc["text"] = "reach me at jane@example.org"
        docs.append(doc)
    return docs


def test_the_inline_reads_of_event_from_dict_equal_the_general_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same documents through event_from_dict, with its inline reads and with them turned off (every
    field then goes through _evaluations, _tool_calls, _string_list, ...): the same events, errors, counts."""
    from tenant_agent.ingest import records

    docs = generated_docs(random.Random(5), 4000)
    fast_redactor, slow_redactor = Redactor(), Redactor()
    fast = [outcome(event_from_dict, doc, "t", fast_redactor) for doc in docs]
    fast_stats = dict(fast_redactor.stats)
    with monkeypatch.context() as patched:
        patched.setattr(records, "_plain_scores", lambda raw: False)
        patched.setattr(records, "_short_strings", lambda raw: False)
        patched.setattr(records, "_remembered_calls", lambda raw, redactor: None)
        slow = [outcome(event_from_dict, doc, "t", slow_redactor) for doc in docs]
    assert dict(slow_redactor.stats) == fast_stats
    for doc, a, b in zip(docs, fast, slow, strict=True):
        assert repr(a) == repr(b), doc  # repr: NaN != NaN
    # The documents reach every inline read, their fallbacks and the errors behind them.
    assert sum(a[0] == "ok" for a in fast) > 1000
    assert sum(a[0] == "error" for a in fast) > 1000
    assert {type(a[1].tool_calls) for a in fast if a[0] == "ok"} == {tuple}


def test_remembered_calls_are_the_tool_calls_built_before() -> None:
    from tenant_agent.ingest import records

    redactor = Redactor()
    calls: list[Any] = [{"name": "lookup_order", "error": "timeout"}, {"name": "refund_order"}]
    doc = {"schema_version": "1", "session_id": "s", "timestamp": 1.0, "tool_calls": calls}
    assert records._remembered_calls(calls, redactor) is None  # nothing remembered yet
    first = event_from_dict(doc, "t", redactor)
    again = records._remembered_calls(calls, redactor)
    assert again is not None and again == first.tool_calls and again[0] is first.tool_calls[0]
    assert records._remembered_calls(calls, Redactor()) is None  # per redactor
    assert records._remembered_calls([{"name": "call jane@example.org"}], redactor) is None
