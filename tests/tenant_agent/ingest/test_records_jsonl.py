"""The JSON decision-event schema and the JSON Lines reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.ingest import EventFormatError, LineError, event_from_dict, read_jsonl
from tenant_agent.redact import RedactionConfig, Redactor


def doc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"schema_version": "1", "session_id": "sess-1", "timestamp": 1_700_000_000}
    base.update(fields)
    return base


def test_full_document_maps_every_field() -> None:
    redactor = Redactor(RedactionConfig(dictionaries={"customer": ["Acme Corp"]}))
    event = event_from_dict(
        doc(
            event_id="ev-1",
            user_id="jane.roe@example.org",
            timestamp="2026-11-25T10:00:00Z",
            intent="refund",
            agent="support",
            model="gpt-4o-2024-08-06",
            tool_calls=[
                {"name": "lookup_order", "error": "timeout", "latency_ms": 1200, "expected": "refund"}
            ],
            retrieval_ids=["kb-1", "kb-2"],
            escalation_requested=True,
            human_edited=True,
            outcome="success",
            input_tokens=12,
            output_tokens=3,
            finish_reasons=["stop"],
            evaluations={"groundedness": 0.3, "tone": "off_brand", "safety": {"score": 0.9, "label": "safe"}},
            prompt_version="p-3",
            artifact_version="baseline",
            text="Acme Corp customer jane.roe@example.org called from +44 20 7946 0958",
        ),
        "tenant-a",
        redactor,
    )
    assert event.tenant_id == "tenant-a" and event.session_id == "sess-1" and event.event_id == "ev-1"
    assert event.timestamp == datetime(2026, 11, 25, 10, tzinfo=UTC).timestamp()
    assert event.model == "gpt-4o-2024-08-06"  # versions are kept verbatim
    assert event.tool_calls == (ToolCall("lookup_order", "timeout", 1200.0, "refund"),)
    assert event.evaluations == {
        "groundedness": 0.3,
        "tone": "off_brand",
        "safety": {"score": 0.9, "label": "safe"},
    }
    assert event.text == "<CUSTOMER> customer <EMAIL> called from <PHONE>"
    assert event.user_id is not None and event.user_id.startswith("u_") and "jane" not in event.user_id
    assert redactor.stats == {"CUSTOMER": 1, "EMAIL": 1, "PHONE": 1}


def test_same_user_same_pseudonym() -> None:
    a = event_from_dict(doc(user_id="jane@example.org"), "t", Redactor())
    b = event_from_dict(doc(user_id="jane@example.org", session_id="other"), "t", Redactor())
    assert a.user_id == b.user_id


def test_labels_carrying_personal_data_are_redacted() -> None:
    event = event_from_dict(
        doc(
            session_id="jane@example.org",
            tool_calls=[{"name": "t", "error": "user jane@example.org not found"}],
        ),
        "t",
        Redactor(),
    )
    assert "jane" not in repr(event)
    assert event.tool_calls[0].error == "user <EMAIL> not found"


def test_safety_flag_becomes_a_safety_verdict() -> None:
    assert event_from_dict(doc(safety_incident=True), "t", Redactor()).evaluations == {"safety": "unsafe"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"schema_version": "2"}, "schema_version"),
        ({"session_id": ""}, "session_id"),
        ({"timestamp": "yesterday"}, "RFC 3339"),
        ({"timestamp": "2026-11-25T10:00:00"}, "UTC offset"),
        ({"timestamp": -5}, "positive"),
        ({"escalated": "yes"}, "true or false"),
        ({"latency_ms": -1}, "non-negative"),
        ({"tool_calls": [{"error": "x"}]}, r"tool_calls\[0\]\.name"),
        ({"evaluations": {"g": [1, 2]}}, "evaluations.g"),
        ({"surprise": 1}, "unknown field"),
    ],
)
def test_invalid_documents_name_the_problem(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(EventFormatError, match=reason):
        event_from_dict(doc(**fields), "t", Redactor())


def test_error_messages_never_echo_values() -> None:
    with pytest.raises(EventFormatError) as failed:
        event_from_dict(doc(escalated="jane@example.org"), "t", Redactor())
    assert "jane" not in str(failed.value)


def test_jsonl_reports_bad_lines_and_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps(doc(event_id="a")),
        "{not json",
        "",
        json.dumps(doc(event_id="b", tool_calls=[{"name": "x", "latency_ms": "slow"}])),
        json.dumps([1, 2]),
        json.dumps(doc(event_id="c", text="mail me: jane@example.org")),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    results = list(read_jsonl(path, "t", Redactor()))

    events = [r for r in results if isinstance(r, DecisionEvent)]
    errors = [r for r in results if isinstance(r, LineError)]
    assert [e.event_id for e in events] == ["a", "c"]
    assert events[1].text == "mail me: <EMAIL>"
    assert [e.line for e in errors] == [2, 4, 5, 7]
    assert "invalid JSON" in errors[0].reason and "latency_ms" in errors[1].reason
    assert "JSON object" in errors[2].reason and "UTF-8" in errors[3].reason


def test_jsonl_missing_file_is_a_user_error(tmp_path: Path) -> None:
    from tenant_agent.ingest.jsonl import JsonlFileError

    with pytest.raises(JsonlFileError, match="cannot open"):
        list(read_jsonl(tmp_path / "none.jsonl", "t", Redactor()))
