"""The versioned JSON decision-event schema (``schema_version`` "1").

:func:`event_from_dict` turns one JSON object into a :class:`DecisionEvent`,
or raises :class:`EventFormatError` naming the first problem. Field reference:
``docs/event-schema.md``. Every string a person could have typed goes through
the :class:`~tenant_agent.redact.Redactor` before it is put on the event; the
end-user id is pseudonymised (see :func:`pseudonymise`). The free text
(``text``) is checked, then either redacted onto the event or, with
``keep_text=False`` (no consumer of the collector reads it), discarded unread:
the event's ``text`` is None and the text is counted in :class:`DiscardedTexts`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aggregation.errors import FedsignalError
from aggregation.events import EVENT_SCHEMA_VERSION, FIELD_DEFAULTS, FIELD_FACTORIES, DecisionEvent, ToolCall
from tenant_agent.redact import Redactor

#: Longest free text accepted on one event (characters).
MAX_TEXT = 65_536
#: Longest label or identifier (intent, tool name, version, ids, ...).
MAX_LABEL = 256
MAX_TOOL_CALLS = 256
MAX_RETRIEVAL_IDS = 1024
MAX_EVALUATIONS = 64


class DeferredTexts:
    """The unredacted free texts of one batch of events, by ``id(event)``, held only while the
    batch is recorded (``Collector.text_mode`` ``defer``: a replay set storing redacted text
    is the only consumer). Called by replay capture for the text of a case it stores: the held
    text, redacted now (an event whose text was not held keeps its own, already redacted,
    text). Local to one ``record_many`` call, so an ``id`` never outlives its event."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._texts: dict[int, str] = {}
        self.redacted = 0

    def hold(self, event: DecisionEvent, text: str) -> None:
        self._texts[id(event)] = text

    def __len__(self) -> int:
        return len(self._texts)

    def __call__(self, event: DecisionEvent) -> str | None:
        raw = self._texts.pop(id(event), None)
        if raw is None:
            return event.text
        self.redacted += 1
        return self._redactor.redact(raw)


class EventFormatError(FedsignalError):
    """A decision-event document that does not follow the event schema."""


class DiscardedTexts:
    """A running count of free texts discarded unread (``keep_text=False``); thread-safe.

    The collector folds its growth into the store's ``texts_discarded`` counter, as it does
    with the redactor's statistics.
    """

    def __init__(self) -> None:
        self._total = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        if n:
            with self._lock:
                self._total += n

    @property
    def total(self) -> int:
        return self._total


def pseudonymise(user_id: str) -> str:
    """A stable pseudonym for an end-user id: the raw id (often an e-mail
    address) never lands on an event, yet the same user maps to the same
    privacy unit. Pseudonymisation, not anonymisation: it stays inside the
    tenant boundary."""
    return "u_" + hashlib.blake2b(user_id.encode("utf-8"), digest_size=12).hexdigest()


def clean_label(value: str, redactor: Redactor) -> str:
    """A categorical string (intent, tool name, error type, label) with any
    personal data redacted; a pure identifier comes back unchanged."""
    return redactor.redact_label(value)


def _kind(value: Any) -> str:
    # Error messages end up in logs: they name a value's type or a short,
    # harmless literal, never a value that could carry personal data.
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _fail(field: str, reason: str) -> EventFormatError:
    return EventFormatError(f"field {field!r}: {reason}")


def _label(doc: Mapping[str, Any], field: str, redactor: Redactor) -> str | None:
    value = doc.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(field, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_LABEL:
        raise _fail(field, f"longer than {MAX_LABEL} characters")
    return clean_label(value, redactor) if value else None


def _flag(doc: Mapping[str, Any], field: str) -> bool:
    value = doc.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(field, f"must be true or false, got {type(value).__name__}")
    return value


def _number(doc: Mapping[str, Any], field: str) -> float | None:
    value = doc.get(field)
    if value is None:
        return None
    if type(value) is float and 0.0 <= value < math.inf:  # the usual case, without the isinstance chain
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _fail(field, f"must be a non-negative number, got {_kind(value)}")
    return float(value)


def _count(doc: Mapping[str, Any], field: str) -> int | None:
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(field, f"must be a non-negative integer, got {_kind(value)}")
    return value


def parse_timestamp(value: Any) -> float:
    """Unix seconds from a number or an RFC 3339 string (with offset or ``Z``)."""
    if isinstance(value, bool):
        raise _fail("timestamp", "must be unix seconds or an RFC 3339 string")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _fail("timestamp", "is not an RFC 3339 date-time") from None
        if moment.tzinfo is None:
            raise _fail("timestamp", "has no UTC offset (add 'Z' or '+00:00')")
        ts = moment.timestamp()
    else:
        raise _fail("timestamp", "must be unix seconds or an RFC 3339 string")
    if not math.isfinite(ts) or ts <= 0:
        raise _fail("timestamp", "is not a positive time")
    return ts


def _tool_calls(raw: Any, redactor: Redactor) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOL_CALLS:
        raise _fail("tool_calls", f"must be a list of at most {MAX_TOOL_CALLS} objects")
    calls = []
    clean = redactor.redact_label
    plain = _plain_calls_of(redactor)
    for i, item in enumerate(raw):
        # Fast path for the usual call: a dict of known fields whose labels are
        # all well-formed, with a non-empty name. It cleans the same labels as
        # the general path below, which handles everything else and raises its
        # errors (the latency, checked last by both, is the only one left here).
        if type(item) is dict and item.keys() <= _TOOL_CALL_FIELDS:
            name, error, expected = item.get("name"), item.get("error"), item.get("expected")
            if (
                type(name) is str
                and 0 < len(name) <= MAX_LABEL
                and (error is None or (type(error) is str and len(error) <= MAX_LABEL))
                and (expected is None or (type(expected) is str and len(expected) <= MAX_LABEL))
            ):
                latency = item.get("latency_ms")
                if latency is None:
                    # Calls repeat (same tool, same outcome): one whose labels all come back from the
                    # redactor unchanged is remembered (no entity in it, so no redaction count to add).
                    key = (name, error, expected)
                    call = plain.get(key)
                    if call is None:
                        call = tool_call(clean(name), clean(error) if error else None, None,
                                         clean(expected) if expected else None)  # fmt: skip
                        if call.name == name and call.error == (error or None) and call.expected == (expected or None):
                            if len(plain) >= _PLAIN_CALLS_MAX:
                                plain.clear()
                            plain[key] = call
                    calls.append(call)
                    continue
                # The same order as the general path: name, error, latency (which may raise), expected.
                name = clean(name)
                error = clean(error) if error else None
                if not (type(latency) is float and 0 <= latency < math.inf):
                    latency = _number(item, "latency_ms")
                calls.append(tool_call(name, error, latency, clean(expected) if expected else None))
                continue
        calls.append(_tool_call(item, f"tool_calls[{i}]", redactor))
    return tuple(calls)


def _plain_calls_of(redactor: Redactor) -> dict[tuple[str, str | None, str | None], ToolCall]:
    """The remembered plain tool calls of ``redactor`` (the last one asked is kept at hand: a
    WeakKeyDictionary lookup makes a weak reference every time)."""
    global _last_plain
    last = _last_plain
    if last is not None and last[0]() is redactor:
        return last[1]
    plain = _plain_calls.get(redactor)
    if plain is None:
        plain = _plain_calls[redactor] = {}
    _last_plain = (weakref.ref(redactor), plain)
    return plain


def _remembered_calls(raw: list[Any], redactor: Redactor) -> tuple[ToolCall, ...] | None:
    """The tool calls of ``raw`` when every one is a remembered plain call (see _tool_calls), else None.

    A remembered call is one _tool_calls built from the same (name, error, expected) labels with no
    latency, all of which came back from the redactor unchanged: the same ToolCall, no redaction to count.
    """
    if len(raw) > MAX_TOOL_CALLS:
        return None
    plain = _plain_calls_of(redactor)
    calls = []
    for item in raw:
        if type(item) is not dict or not item.keys() <= _TOOL_CALL_FIELDS or item.get("latency_ms") is not None:
            return None
        name, error, expected = item.get("name"), item.get("error"), item.get("expected")
        if type(name) is not str or not (error is None or type(error) is str) or not (
            expected is None or type(expected) is str
        ):
            return None
        call = plain.get((name, error, expected))
        if call is None:
            return None
        calls.append(call)
    return tuple(calls)


def tool_call(name: str, error: str | None, latency_ms: float | None, expected: str | None) -> ToolCall:
    """``ToolCall(name, error, latency_ms, expected)`` without the frozen dataclass's
    per-field ``object.__setattr__`` (as ``DecisionEvent.from_fields`` does; the
    instance is as frozen and equal as the constructor's, see test_throughput_paths.py)."""
    call = object.__new__(ToolCall)
    call.__dict__.update(name=name, error=error, latency_ms=latency_ms, expected=expected)
    return call


def _tool_call(item: Any, where: str, redactor: Redactor) -> ToolCall:
    if not isinstance(item, Mapping):
        raise _fail(where, "must be an object with at least 'name'")
    unknown = item.keys() - _TOOL_CALL_FIELDS
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(redactor.redact(str(k)[:40]) for k in unknown)}")
    name = _label(item, "name", redactor)
    if name is None:
        raise _fail(f"{where}.name", "is required")
    return ToolCall(
        name=name,
        error=_label(item, "error", redactor),
        latency_ms=_number(item, "latency_ms"),
        expected=_label(item, "expected", redactor),
    )


_TOOL_CALL_FIELDS = frozenset({"name", "error", "latency_ms", "expected"})
# Per redactor (its configuration decides what is plain): (name, error, expected) -> the ToolCall.
_plain_calls: weakref.WeakKeyDictionary[Redactor, dict[tuple[str, str | None, str | None], ToolCall]] = (
    weakref.WeakKeyDictionary()
)
_PLAIN_CALLS_MAX = 4096
_last_plain: tuple[weakref.ref[Redactor], dict[tuple[str, str | None, str | None], ToolCall]] | None = None


def _string_list(raw: Any, field: str, limit: int, clean: Callable[[str], str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > limit:
        raise _fail(field, f"must be a list of at most {limit} strings")
    out = []
    for item in raw:
        if not isinstance(item, str) or len(item) > MAX_LABEL:
            raise _fail(field, f"items must be strings of at most {MAX_LABEL} characters")
        out.append(clean(item))
    return tuple(out)


def evaluation_value(name: str, value: Any, redactor: Redactor) -> float | str | dict[str, Any]:
    """Normalise one evaluator result: a score, a label, or ``{"score", "label"}``."""
    if isinstance(value, bool):
        raise _fail(f"evaluations.{name}", "must be a score, a label or {score, label}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _fail(f"evaluations.{name}", "score must be finite")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_LABEL:
            raise _fail(f"evaluations.{name}", f"label longer than {MAX_LABEL} characters")
        return clean_label(value, redactor)
    if isinstance(value, Mapping) and value and value.keys() <= {"score", "label"}:
        out: dict[str, Any] = {}
        if value.get("score") is not None:
            out["score"] = evaluation_value(name, value["score"], redactor)
            if not isinstance(out["score"], float):
                raise _fail(f"evaluations.{name}.score", "must be a number")
        if value.get("label") is not None:
            out["label"] = evaluation_value(name, value["label"], redactor)
            if not isinstance(out["label"], str):
                raise _fail(f"evaluations.{name}.label", "must be a string")
        return out
    raise _fail(f"evaluations.{name}", "must be a score, a label or {score, label}")


def _evaluations(raw: Any, redactor: Redactor) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_EVALUATIONS:
        raise _fail("evaluations", f"must be an object of at most {MAX_EVALUATIONS} evaluator results")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name or len(name) > MAX_LABEL:
            raise _fail("evaluations", "evaluator names must be non-empty strings")
        clean_name = redactor.redact_label(name)
        # Fast path for the usual finite float score: evaluation_value would
        # return it unchanged.
        if type(value) is float and math.isfinite(value):
            out[clean_name] = value
        else:
            out[clean_name] = evaluation_value(clean_name, value, redactor)
    return out


KNOWN_FIELDS = frozenset(
    {
        "schema_version", "event_id", "session_id", "user_id", "timestamp", "intent", "agent", "model",
        "tool_calls", "retrieval_ids", "retrieval_empty", "fallback", "escalated", "escalation_requested",
        "policy_blocked", "guardrail_triggered", "human_edited", "user_reasked", "safety_incident",
        "outcome", "error_type", "timed_out", "latency_ms", "input_tokens", "output_tokens",
        "finish_reasons", "evaluations", "prompt_version", "policy_version", "bundle_version",
        "artifact_version", "text", "mode", "shadow_of",
    }
)  # fmt: skip


def event_from_dict(doc: Any, tenant_id: str, redactor: Redactor, *, keep_text: bool = True) -> DecisionEvent:
    """One decision event from its JSON document; raises :class:`EventFormatError`.

    The tenant comes from the collector, never from the document. ``keep_text``: the free
    text is redacted onto the event; without it the text is checked like any field (a
    non-string or one longer than :data:`MAX_TEXT` is refused the same way) and then dropped
    unread: never redacted, the event's ``text`` is None (the caller counts it).
    """
    # type() first: isinstance against the Mapping ABC is slow for the usual dict.
    if type(doc) is not dict and not isinstance(doc, Mapping):
        raise EventFormatError("a decision event must be a JSON object")
    version = doc.get("schema_version")
    if version != EVENT_SCHEMA_VERSION:
        raise _fail("schema_version", f"must be {EVENT_SCHEMA_VERSION!r}, got {_kind(version)}")
    if not doc.keys() <= KNOWN_FIELDS:  # a subset test allocates nothing
        unknown = doc.keys() - KNOWN_FIELDS
        names = sorted(redactor.redact(str(k)[:40]) for k in unknown)
        raise EventFormatError(f"unknown field(s) {names} (schema_version {EVENT_SCHEMA_VERSION})")
    session_id = doc.get("session_id")
    if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_LABEL:
        raise _fail("session_id", f"is required: a non-empty string of at most {MAX_LABEL} characters")
    if "timestamp" not in doc:
        raise _fail("timestamp", "is required (unix seconds or RFC 3339)")
    timestamp = doc["timestamp"]
    # The usual values of the fields below are checked inline; any other value goes
    # through the general helper, at the same point, so errors and redactions
    # happen in the same order (test_event_fast_paths.py compares the two).
    if not (type(timestamp) is float and 0.0 < timestamp < math.inf):
        timestamp = parse_timestamp(timestamp)
    user_id = doc.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > MAX_LABEL):
        raise _fail("user_id", f"must be a string of at most {MAX_LABEL} characters")
    text = doc.get("text")
    if text is not None:
        if type(text) is not str and not isinstance(text, str):
            raise _fail("text", "must be a string")
        if len(text) > MAX_TEXT:
            raise _fail("text", f"longer than {MAX_TEXT} characters")
    clean = redactor.redact_label
    evaluations: dict[str, Any]
    raw = doc.get("evaluations")
    if raw is None:
        evaluations = {}
    elif type(raw) is dict and len(raw) <= MAX_EVALUATIONS and _plain_scores(raw):
        # Every entry a well-formed name with a finite float score (what _evaluations keeps as is).
        evaluations = {clean(name): value for name, value in raw.items()}
    else:
        evaluations = _evaluations(raw, redactor)
    safety = doc.get("safety_incident")
    if safety is True or (safety is not None and safety is not False and _flag(doc, "safety_incident")):
        # The taxonomy reads safety verdicts from evaluations; an explicit flag is one.
        evaluations["safety"] = "unsafe"
    event_id = doc.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or len(event_id) > MAX_LABEL):
        raise _fail("event_id", f"must be a string of at most {MAX_LABEL} characters")

    # The event is built in place: its __dict__ starts as the defaults and the
    # fields below are set in it (the same event as DecisionEvent(**fields),
    # without the frozen dataclass's per-field object.__setattr__ nor an
    # intermediate dict; the instance is still frozen: only __setattr__ is
    # blocked). Every required field and every default_factory field
    # (``evaluations``) is set below.
    event = object.__new__(DecisionEvent)
    fields = event.__dict__
    fields.update(FIELD_DEFAULTS)
    # Flags, labels and versions in loops over their names: one dict lookup
    # per field and no call for the (usual) absent or well-typed value.
    get = doc.get
    for name in _FLAG_FIELDS:
        value = get(name)
        if value is True:
            fields[name] = True
        elif value is not None and value is not False:
            raise _fail(name, f"must be true or false, got {type(value).__name__}")
    for name in _LABEL_FIELDS:
        value = get(name)
        if value is None:
            continue
        if type(value) is not str:
            raise _fail(name, f"must be a string, got {type(value).__name__}")
        if len(value) > MAX_LABEL:
            raise _fail(name, f"longer than {MAX_LABEL} characters")
        if value:
            fields[name] = clean(value)
    for name in _VERSION_FIELDS:
        # Artifact and model versions are identifiers the platform assigns, not
        # user content: kept verbatim so "gpt-4o-2024-08-06" stays itself.
        value = get(name)
        if value is None:
            continue
        if type(value) is not str or len(value) > MAX_LABEL:
            raise _fail(name, f"must be a string of at most {MAX_LABEL} characters")
        if value:
            fields[name] = value
    mode = get("mode")
    if mode is not None:
        if mode not in ("live", "shadow"):
            raise _fail("mode", "must be 'live' or 'shadow'")
        fields["mode"] = mode
        shadow_of = get("shadow_of")
        if mode == "shadow":
            if type(shadow_of) is not str or not shadow_of or len(shadow_of) > MAX_LABEL:
                raise _fail("shadow_of", "a shadow turn must name the event_id of the live turn it shadows")
            fields["shadow_of"] = clean(shadow_of)
    if "tool_calls" in doc:
        raw = doc["tool_calls"]
        calls = _remembered_calls(raw, redactor) if type(raw) is list else None
        fields["tool_calls"] = calls if calls is not None else _tool_calls(raw, redactor)
    if "retrieval_ids" in doc:
        raw = doc["retrieval_ids"]
        if type(raw) is list and not raw:
            fields["retrieval_ids"] = ()
        elif type(raw) is list and len(raw) <= MAX_RETRIEVAL_IDS and _short_strings(raw):
            fields["retrieval_ids"] = tuple([clean(item) for item in raw])
        else:
            fields["retrieval_ids"] = _string_list(raw, "retrieval_ids", MAX_RETRIEVAL_IDS, clean)
    if "finish_reasons" in doc:
        fields["finish_reasons"] = _string_list(doc["finish_reasons"], "finish_reasons", 16, clean)
    if "latency_ms" in doc:
        latency = doc["latency_ms"]
        fields["latency_ms"] = latency if type(latency) is float and 0.0 <= latency < math.inf else _number(
            doc, "latency_ms"
        )
    if "input_tokens" in doc:
        fields["input_tokens"] = _count(doc, "input_tokens")
    if "output_tokens" in doc:
        fields["output_tokens"] = _count(doc, "output_tokens")
    fields["tenant_id"] = tenant_id
    # clean_session, inline (one call instead of three for the usual plain id).
    fields["session_id"] = session_id if clean(session_id) == session_id else _session_pseudonym(session_id)
    fields["timestamp"] = timestamp
    if user_id:
        fields["user_id"] = pseudonymise(user_id)
    if event_id:
        fields["event_id"] = clean(event_id)
    fields["evaluations"] = evaluations
    if text and keep_text:
        fields["text"] = redactor.redact(text)
    return event


# event_from_dict sets these itself (a new field with a default factory must be added there).
assert [name for name, _factory in FIELD_FACTORIES] == ["evaluations"], "event_from_dict sets every factory field"

_FLAG_FIELDS = (
    "retrieval_empty", "fallback", "escalated", "escalation_requested", "policy_blocked",
    "guardrail_triggered", "human_edited", "user_reasked", "timed_out",
)  # fmt: skip
_LABEL_FIELDS = ("intent", "agent", "outcome", "error_type")
_VERSION_FIELDS = ("model", "prompt_version", "policy_version", "bundle_version", "artifact_version")


def clean_session(session_id: str, redactor: Redactor) -> str:
    """Session ids are opaque tokens; one that carries personal data (an
    e-mail, a phone number) is replaced by its pseudonym."""
    if clean_label(session_id, redactor) != session_id:
        return _session_pseudonym(session_id)
    return session_id


def _session_pseudonym(session_id: str) -> str:
    return "s_" + hashlib.blake2b(session_id.encode("utf-8"), digest_size=12).hexdigest()


def _plain_scores(raw: dict[Any, Any]) -> bool:
    """Every evaluation a non-empty name of at most MAX_LABEL characters with a finite float score."""
    for name, value in raw.items():  # noqa: SIM110 - as _short_strings
        if not (type(name) is str and 0 < len(name) <= MAX_LABEL and type(value) is float and math.isfinite(value)):
            return False
    return True


def _short_strings(raw: list[Any]) -> bool:
    """Every item a string of at most MAX_LABEL characters (what _string_list accepts)."""
    for item in raw:  # noqa: SIM110 - a loop, not all(<generator>): no generator per document
        if type(item) is not str or len(item) > MAX_LABEL:
            return False
    return True
