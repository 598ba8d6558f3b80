"""Reading one OTLP span: the allow-listed attributes and nothing else.

The receiver parses export requests with the view of ``fedsignal/v1/otlp_view.proto``: the
same wire format, with every attribute list a ``map<string, AnyValue>`` that the parser
fills in C. :func:`read_span` intersects the span's keys with the table of
:mod:`tenant_agent.ingest.otel_attrs` and converts only the values of the keys it finds
there (the costly part of a Python OTLP receiver is turning every attribute into Python
objects); where several keys feed one field, ``ALIAS_PRECEDENCE`` picks the one that counts.
What it keeps is a :class:`SpanView`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tenant_agent.ingest import otel_attrs as A
from tenant_agent.ingest.otel_attrs import Slot

_STATUS_ERROR = 2
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_LLM_OPERATIONS = frozenset({A.OPERATION_CHAT, A.OPERATION_TEXT_COMPLETION, A.OPERATION_GENERATE_CONTENT})


def any_value(value: Any) -> Any:
    """Python value of an OTLP ``AnyValue``, opentelemetry-proto's or the view's (only ever
    called for allow-listed keys)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":  # mostly strings (finish reasons): those without WhichOneof
        return [v.string_value or any_value(v) for v in value.array_value.values]
    return None


def read_attributes(attributes: Iterable[Any], table: dict[str, Slot]) -> dict[Slot, Any]:
    """The allow-listed attributes of a list of ``KeyValue`` (a log record's)."""
    raw = {slot: kv.value for kv in attributes if (slot := table.get(kv.key)) is not None}
    return {slot: value for slot, any_val in raw.items() if (value := any_value(any_val)) is not None}


def read_attribute_map(attributes: Any, table: dict[str, Slot]) -> dict[Slot, Any]:
    """The allow-listed attributes of an attribute map of the view (a resource's, a span event's)."""
    values: dict[Slot, Any] = {}
    for key in attributes:  # the map's keys
        slot = table.get(key)
        if slot is None:
            continue
        beaten = _BEATEN_BY.get(key)
        if beaten is not None and any(winner in attributes for winner in beaten):
            continue  # a key of higher precedence for this field is there, with or without a value
        value = any_value(attributes[key])
        if value is not None:
            values[slot] = value
    return values


@dataclass(slots=True)
class SpanView:
    """What the mapper keeps of one span: ids, times, status, allow-listed values."""

    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    local_root: bool
    start_ns: int
    end_ns: int
    error: bool
    values: dict[Slot, Any]
    resource: dict[Slot, Any]
    document_ids: list[tuple[int, str]] | None = None  # (index, id), in index order
    evaluations: list[dict[Slot, Any]] | None = None

    role: int = 0  # bit set of AGENT, TOOL, LLM, RETRIEVER

    @property
    def is_agent(self) -> bool:
        return self.role & AGENT != 0

    @property
    def is_tool(self) -> bool:
        return self.role & TOOL != 0

    @property
    def is_llm(self) -> bool:
        return self.role & LLM != 0

    @property
    def is_retriever(self) -> bool:
        return self.role & RETRIEVER != 0


AGENT, TOOL, LLM, RETRIEVER = 1, 2, 4, 8
# What a span is, from gen_ai.operation.name or openinference.span.kind.
_ROLES: dict[Any, int] = {
    A.OPERATION_INVOKE_AGENT: AGENT,
    A.KIND_AGENT: AGENT,
    A.OPERATION_EXECUTE_TOOL: TOOL,
    A.KIND_TOOL: TOOL,
    A.KIND_LLM: LLM,
    A.KIND_RETRIEVER: RETRIEVER,
    "retrieval": RETRIEVER,
    **dict.fromkeys(_LLM_OPERATIONS, LLM),
}


# Slot members as module globals (``Slot.X`` takes EnumType's slow attribute path on Python 3.11).
_OPERATION, _SPAN_KIND = Slot.OPERATION, Slot.SPAN_KIND


def _role(values: dict[Slot, Any]) -> int:
    """What a span is (AGENT, TOOL, LLM, RETRIEVER bits) from its operation name and span kind."""
    operation = values.get(_OPERATION)
    kind = values.get(_SPAN_KIND)
    role = _ROLES.get(operation, 0) if isinstance(operation, str) else 0
    return role | _ROLES.get(kind, 0) if isinstance(kind, str) else role


# One lookup table for the whole allow-list: named attributes map to their
# Slot; OpenInference's flattened document ids (retrieval.documents.<N>.document.id)
# map to DOCUMENT_ID_BASE + N, so even those are found by one dict lookup.
DOCUMENT_ID_BASE = 1_000
_KEY_CODES: dict[str, int] = {
    **A.SPAN_ATTRIBUTES,
    **{
        f"{A.OI_RETRIEVAL_DOCUMENTS_PREFIX}{i}{A.OI_DOCUMENT_ID_SUFFIX}": DOCUMENT_ID_BASE + i
        for i in range(A.MAX_INDEXED_DOCUMENTS)
    },
}
_KEYS = frozenset(_KEY_CODES)
_BEATEN_BY = A.BEATEN_BY


def read_span(span: Any, resource: dict[Slot, Any]) -> SpanView:
    """One span of the view: the allow-listed keys found by one set intersection with the span's
    attribute map (built by the parser); the values of the other keys are never converted."""
    table = _KEY_CODES
    attributes = span.attributes
    values: dict[Slot, Any] = {}
    documents: list[tuple[int, str]] | None = None
    for key in _KEYS.intersection(attributes):
        code = table[key]
        any_val = attributes[key]
        # Most allow-listed values are strings: read those without WhichOneof.
        value = any_val.string_value or any_value(any_val)
        if code >= DOCUMENT_ID_BASE:
            if isinstance(value, str | int):
                documents = documents if documents is not None else []
                documents.append((code - DOCUMENT_ID_BASE, str(value)))
            continue
        beaten = _BEATEN_BY.get(key)
        if beaten is not None and any(winner in attributes for winner in beaten):
            continue  # a key of higher precedence for this field is on the span, with or without a value
        if value is not None:
            values[code] = value  # type: ignore[index]  # codes below the base are Slots
    if documents is not None:
        documents.sort()
    role = _role(values)
    evaluations = None
    if span.events:  # an evaluation result may ride on a span event
        evaluations = [
            read_attribute_map(event.attributes, A.EVALUATION_ATTRIBUTES)
            for event in span.events
            if event.name == A.GEN_AI_EVALUATION_RESULT
        ] or None
    flags = span.flags
    parent = span.parent_span_id
    return SpanView(
        span.trace_id,
        span.span_id,
        parent,
        not parent or (flags & _HAS_IS_REMOTE != 0 and flags & _IS_REMOTE != 0),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code == _STATUS_ERROR,
        values,
        resource,
        documents,
        evaluations,
        role,
    )
