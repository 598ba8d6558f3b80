"""OTLP traces and logs → decision events, one per agent turn.

A *turn* is an outermost agent span (``gen_ai.operation.name`` =
``invoke_agent`` or ``openinference.span.kind`` = ``AGENT``) with every span
below it; a trace without agent spans is one turn. Spans are grouped by trace
until the trace's local root arrives (the exporter sends children before
parents, possibly in earlier requests); then each turn becomes a
:class:`DecisionEvent`. Traces whose root never arrives (a remote parent that
is not flagged as such, a crashed agent) are turned into events after
``pending_timeout`` seconds.

``gen_ai.evaluation.result`` log records (or span events) carry evaluator
scores and labels; they are merged into the turn of the span they reference.
Evaluations that arrive before the trace completes — or within
``evaluation_grace`` seconds after it — are merged; later ones are counted in
``late_evaluations`` and dropped, because the turn has been counted already.

Only the attributes of :mod:`tenant_agent.ingest.otel_attrs` are read; the
loop looks each key up in one dict and skips the rest without converting the
value. The only free text read (``fedsignal.text``) goes through the
:class:`~tenant_agent.redact.Redactor`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.ingest import otel_attrs as A
from tenant_agent.ingest.otel_attrs import Slot
from tenant_agent.ingest.records import (
    EventFormatError,
    clean_label,
    clean_session,
    evaluation_value,
    pseudonymise,
)
from tenant_agent.redact import Redactor

_STATUS_ERROR = 2
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_DOCS_PREFIX = A.OI_RETRIEVAL_DOCUMENTS_PREFIX
_DOCS_PREFIX_LEN = len(_DOCS_PREFIX)
_DOC_ID_SUFFIX = A.OI_DOCUMENT_ID_SUFFIX
_DOC_ID_SUFFIX_LEN = len(_DOC_ID_SUFFIX)
_LLM_OPERATIONS = frozenset({A.OPERATION_CHAT, A.OPERATION_TEXT_COMPLETION, A.OPERATION_GENERATE_CONTENT})
_EMITTED_MEMORY = 65_536
_MAX_PENDING_TRACES = 100_000


def any_value(value: AnyValue) -> Any:
    """Python value of an OTLP ``AnyValue`` (only ever called for allow-listed keys)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return None


def read_attributes(attributes: Iterable[Any], table: dict[str, Slot]) -> dict[Slot, Any]:
    """The allow-listed attributes of a resource, span, span event or log record."""
    raw = {slot: kv.value for kv in attributes if (slot := table.get(kv.key)) is not None}
    return {slot: value for slot, any_val in raw.items() if (value := any_value(any_val)) is not None}


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
    document_ids: list[tuple[int, str]] | None = None
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


def _role(values: dict[Slot, Any]) -> int:
    operation = values.get(Slot.OPERATION)
    kind = values.get(Slot.SPAN_KIND)
    role = _ROLES.get(operation, 0) if isinstance(operation, str) else 0
    return role | _ROLES.get(kind, 0) if isinstance(kind, str) else role


def read_span(span: Any, resource: dict[Slot, Any]) -> SpanView:
    """One pass over a span's attributes: dict dispatch on the key; the values of
    keys off the allow-list are never converted."""
    table = A.SPAN_ATTRIBUTES
    raw = {slot: kv.value for kv in span.attributes if (slot := table.get(kv.key)) is not None}
    values: dict[Slot, Any] = {}
    for slot, any_val in raw.items():
        # Most allow-listed values are strings: read those without WhichOneof.
        value = any_val.string_value or any_value(any_val)
        if value is not None:
            values[slot] = value
    role = _role(values)
    documents: list[tuple[int, str]] | None = None
    if role & RETRIEVER:
        # OpenInference flattens the document list: retrieval.documents.<N>.document.id
        for kv in span.attributes:
            key = kv.key
            if key.startswith(_DOCS_PREFIX) and key.endswith(_DOC_ID_SUFFIX):
                index = key[_DOCS_PREFIX_LEN:-_DOC_ID_SUFFIX_LEN]
                doc = any_value(kv.value)
                if index.isdigit() and isinstance(doc, str | int):
                    documents = documents if documents is not None else []
                    documents.append((int(index), str(doc)))
    evaluations = None
    if span.events:  # an evaluation result may ride on a span event
        evaluations = [
            read_attributes(event.attributes, A.EVALUATION_ATTRIBUTES)
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


@dataclass
class _PendingTrace:
    first_seen: float
    spans: list[SpanView] = field(default_factory=list)
    completed_at: float | None = None
    # (span_id, allow-listed evaluation attributes) from log records.
    evaluations: list[tuple[bytes, dict[Slot, Any]]] = field(default_factory=list)


class OtlpMapper:
    """Maps OTLP export requests to decision events. Not thread-safe: the
    receiver serialises calls."""

    #: How one span is read (a hook: the benchmark swaps in a read-everything reader).
    read_span = staticmethod(read_span)

    def __init__(
        self,
        tenant_id: str,
        redactor: Redactor,
        *,
        clock: Callable[[], float] = time.monotonic,
        evaluation_grace: float = 0.0,
        pending_timeout: float = 300.0,
    ) -> None:
        self.tenant_id = tenant_id
        self.redactor = redactor
        self.clock = clock
        self.evaluation_grace = evaluation_grace
        self.pending_timeout = pending_timeout
        self._pending: dict[bytes, _PendingTrace] = {}
        self._emitted: OrderedDict[bytes, None] = OrderedDict()
        self._last_sweep = clock()
        self.late_evaluations = 0
        self.spans_read = 0

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    # -- traces ------------------------------------------------------------------
    def map_traces(self, request: ExportTraceServiceRequest) -> list[DecisionEvent]:
        """Events for every turn whose trace is complete after this request."""
        now = self.clock()
        ready: list[bytes] = []
        pending = self._pending
        read = self.read_span
        count = 0
        for resource_spans in request.resource_spans:
            resource = read_attributes(resource_spans.resource.attributes, A.SPAN_ATTRIBUTES)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    view = read(span, resource)
                    count += 1
                    trace = pending.get(view.trace_id)
                    if trace is None:
                        trace = pending[view.trace_id] = _PendingTrace(first_seen=now)
                    trace.spans.append(view)
                    if view.local_root and trace.completed_at is None:
                        trace.completed_at = now
                        ready.append(view.trace_id)
        self.spans_read += count
        events: list[DecisionEvent] = []
        if self.evaluation_grace <= 0:
            for trace_id in ready:
                events.extend(self._emit(trace_id))
        events.extend(self.flush(now=now))
        return events

    # -- logs ----------------------------------------------------------------------
    def map_logs(self, request: ExportLogsServiceRequest) -> list[DecisionEvent]:
        """Merge ``gen_ai.evaluation.result`` records into their turns; returns the
        events that became ready (complete traces past their evaluation grace)."""
        now = self.clock()
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    values = read_attributes(record.attributes, A.EVALUATION_ATTRIBUTES)
                    name = record.event_name or values.get(Slot.EVENT_NAME)
                    if name != A.GEN_AI_EVALUATION_RESULT or Slot.EVALUATION_NAME not in values:
                        continue
                    trace_id = record.trace_id
                    if not trace_id:
                        continue
                    trace = self._pending.get(trace_id)
                    if trace is None:
                        if trace_id in self._emitted:
                            self.late_evaluations += 1
                            continue
                        trace = self._pending[trace_id] = _PendingTrace(first_seen=now)
                    trace.evaluations.append((record.span_id, values))
        return self.flush(now=now)

    # -- flushing --------------------------------------------------------------------
    def flush(self, *, now: float | None = None, force: bool = False) -> list[DecisionEvent]:
        """Events of traces that are due: complete and past the evaluation grace,
        or incomplete for longer than ``pending_timeout``; ``force``: everything."""
        now = self.clock() if now is None else now
        # With no grace period only timeouts are due: sweeping once a second is enough.
        recently_swept = self.evaluation_grace <= 0 and now - self._last_sweep < 1.0
        if not force and recently_swept and len(self._pending) <= _MAX_PENDING_TRACES:
            return []
        self._last_sweep = now
        due = []
        for trace_id, trace in self._pending.items():
            if force:
                due.append(trace_id)
            elif trace.completed_at is not None:
                if now - trace.completed_at >= self.evaluation_grace:
                    due.append(trace_id)
            elif now - trace.first_seen >= self.pending_timeout:
                due.append(trace_id)
        overflow = len(self._pending) - len(due) - _MAX_PENDING_TRACES
        if overflow > 0:  # bounded memory: oldest incomplete traces go first
            due_set = set(due)
            due.extend([t for t in self._pending if t not in due_set][:overflow])
        events: list[DecisionEvent] = []
        for trace_id in due:
            events.extend(self._emit(trace_id))
        return events

    def _emit(self, trace_id: bytes) -> list[DecisionEvent]:
        trace = self._pending.pop(trace_id)
        self._emitted[trace_id] = None
        if len(self._emitted) > _EMITTED_MEMORY:
            self._emitted.popitem(last=False)
        if not trace.spans:
            return []  # evaluations whose spans never came: nothing to count
        return [self._event(turn, members, evaluations) for turn, members, evaluations in _turns(trace)]

    # -- one turn → one event ---------------------------------------------------
    def _event(
        self, turn: SpanView, members: list[SpanView], evaluations: list[dict[Slot, Any]]
    ) -> DecisionEvent:
        redactor = self.redactor

        # One merged view: the turn span wins, then its members in order, then
        # the resource; flags are true when any of them says so.
        merged = dict(turn.resource)
        flags = {slot for slot, value in turn.resource.items() if slot in _FLAG_SLOTS and _truthy(value)}
        for span in reversed(members):
            merged.update(span.values)
            for slot, value in span.values.items():
                if slot in _FLAG_SLOTS and _truthy(value):
                    flags.add(slot)
        merged.update(turn.values)
        first = merged.get

        def any_true(slot: Slot) -> bool:
            return slot in flags

        def label(slot: Slot) -> str | None:
            value = first(slot)
            return self._label(value[:256]) if isinstance(value, str) and value else None

        def version(slot: Slot) -> str | None:
            value = first(slot)
            return value[:256] if isinstance(value, str) and value else None

        tool_calls = []
        input_tokens = output_tokens = 0
        saw_llm = False
        finish_reasons: list[str] = []
        retrieval_ids: list[str] = []
        retrieval_empty = any_true(Slot.RETRIEVAL_EMPTY)
        guardrail_triggered = policy_blocked = False
        model = None
        for span in members:
            values = span.values
            if span.is_tool:
                name = values.get(Slot.TOOL_NAME)
                error = values.get(Slot.ERROR_TYPE)
                if not isinstance(error, str) or not error:
                    error = "error" if span.error else None
                expected = values.get(Slot.TOOL_EXPECTED)
                tool_calls.append(
                    ToolCall(
                        name=self._label(name[:256]) if isinstance(name, str) and name else "unknown",
                        error=self._label(error[:256]) if error else None,
                        latency_ms=max(0.0, (span.end_ns - span.start_ns) / 1e6) if span.end_ns else None,
                        expected=self._label(expected[:256])
                        if isinstance(expected, str) and expected
                        else None,
                    )
                )
            if span.is_llm:
                saw_llm = True
                input_tokens += _int(values.get(Slot.INPUT_TOKENS))
                output_tokens += _int(values.get(Slot.OUTPUT_TOKENS))
                reasons = values.get(Slot.FINISH_REASONS)
                if isinstance(reasons, str):
                    reasons = [reasons]
                if isinstance(reasons, list):
                    finish_reasons.extend(self._label(r[:64]) for r in reasons if isinstance(r, str))
                if model is None and isinstance(values.get(Slot.MODEL), str):
                    model = values[Slot.MODEL][:256]
            if span.document_ids:
                retrieval_ids.extend(self._label(d[:256]) for _, d in sorted(span.document_ids))
            elif span.is_retriever and not _int(values.get(Slot.RETRIEVAL_DOCUMENT_COUNT)):
                retrieval_empty = True
            action = values.get(Slot.GUARDRAIL_ACTION)
            if _truthy(values.get(Slot.GUARDRAIL_TRIGGERED)):
                guardrail_triggered = True
            if isinstance(action, str):
                action = action.lower()
                if action not in A.GUARDRAIL_PASSING_ACTIONS:
                    guardrail_triggered = True
                if action in A.GUARDRAIL_BLOCKING_ACTIONS:
                    policy_blocked = True
            if span.evaluations:
                evaluations = evaluations + span.evaluations
            if Slot.EVALUATION_NAME in values:  # an EVALUATOR span carrying its verdict
                evaluations = evaluations + [values]
        if not saw_llm:
            input_tokens = _int(turn.values.get(Slot.INPUT_TOKENS))
            output_tokens = _int(turn.values.get(Slot.OUTPUT_TOKENS))

        verdicts = self._evaluations(evaluations)
        if any_true(Slot.SAFETY_INCIDENT):
            verdicts["safety"] = "unsafe"
        error_type = turn.values.get(Slot.ERROR_TYPE)
        if not isinstance(error_type, str) or not error_type:
            error_type = next(
                (
                    s.values[Slot.ERROR_TYPE]
                    for s in members
                    if not s.is_tool and isinstance(s.values.get(Slot.ERROR_TYPE), str)
                ),
                "error" if turn.error else None,
            )
        conversation = first(Slot.CONVERSATION_ID)
        session = (
            conversation if isinstance(conversation, str) and conversation else "trace-" + turn.trace_id.hex()
        )
        user = first(Slot.USER_ID)
        text = first(Slot.TEXT)
        end_ns = turn.end_ns or turn.start_ns
        return DecisionEvent(
            tenant_id=self.tenant_id,
            session_id=clean_session(session[:256], redactor),
            timestamp=end_ns / 1e9,
            user_id=pseudonymise(str(user)) if user not in (None, "") else None,
            event_id=f"{turn.trace_id.hex()}-{turn.span_id.hex()}",
            intent=label(Slot.INTENT),
            agent=label(Slot.AGENT_NAME),
            model=model or version(Slot.MODEL),
            tool_calls=tuple(tool_calls),
            retrieval_ids=tuple(retrieval_ids),
            retrieval_empty=retrieval_empty,
            fallback=any_true(Slot.FALLBACK),
            escalated=any_true(Slot.ESCALATED),
            escalation_requested=any_true(Slot.ESCALATION_REQUESTED),
            policy_blocked=policy_blocked or any_true(Slot.POLICY_BLOCKED),
            guardrail_triggered=guardrail_triggered,
            human_edited=any_true(Slot.HUMAN_EDITED),
            user_reasked=any_true(Slot.USER_REASKED),
            outcome=label(Slot.OUTCOME),
            error_type=self._label(error_type[:256]) if error_type else None,
            timed_out=any_true(Slot.TIMED_OUT),
            latency_ms=max(0.0, (turn.end_ns - turn.start_ns) / 1e6) if turn.end_ns else None,
            input_tokens=input_tokens or None,
            output_tokens=output_tokens or None,
            finish_reasons=tuple(dict.fromkeys(finish_reasons)),
            evaluations=verdicts,
            prompt_version=version(Slot.PROMPT_VERSION),
            policy_version=version(Slot.POLICY_VERSION),
            bundle_version=version(Slot.BUNDLE_VERSION),
            artifact_version=version(Slot.ARTIFACT_VERSION),
            text=redactor.redact(text[:65_536]) if isinstance(text, str) and text else None,
        )

    def _label(self, value: str) -> str:
        return self.redactor.redact_label(value[:256])

    def _evaluations(self, results: list[dict[Slot, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for values in results:
            name = values.get(Slot.EVALUATION_NAME)
            if not isinstance(name, str) or not name:
                continue
            score = values.get(Slot.EVALUATION_SCORE)
            label = values.get(Slot.EVALUATION_LABEL)
            raw: dict[str, Any] = {}
            if isinstance(score, int | float) and not isinstance(score, bool):
                raw["score"] = score
            if isinstance(label, str) and label:
                raw["label"] = label[:256]
            if not raw:
                continue
            clean_name = clean_label(name[:256], self.redactor)
            try:
                value = evaluation_value(
                    clean_name, raw if len(raw) == 2 else next(iter(raw.values())), self.redactor
                )
            except EventFormatError:
                continue  # a non-finite score: no verdict to use
            merged[clean_name] = value
        return merged


def _turns(trace: _PendingTrace) -> list[tuple[SpanView, list[SpanView], list[dict[Slot, Any]]]]:
    """Split a trace into turns: outermost agent spans and the spans below them."""
    spans = trace.spans
    agents = [s for s in spans if s.role & AGENT]
    if len(agents) == 1:  # the common case: one agent turn per trace
        return [(agents[0], spans, [v for _, v in trace.evaluations])]
    by_id = {s.span_id: s for s in spans}

    def top_agent(span: SpanView) -> SpanView | None:
        found = None
        seen = 0
        node: SpanView | None = span
        while node is not None and seen <= len(spans):
            if node.is_agent:
                found = node
            node = by_id.get(node.parent_id) if node.parent_id else None
            seen += 1
        return found

    owners = [top_agent(s) for s in spans]
    tops: list[SpanView] = list({id(o): o for o in owners if o is not None}.values())
    if not tops:
        roots = [s for s in spans if s.local_root]
        turn = roots[0] if roots else max(spans, key=lambda s: s.end_ns)
        return [(turn, spans, [v for _, v in trace.evaluations])]
    tops.sort(key=lambda s: s.start_ns)
    members: dict[int, list[SpanView]] = {id(t): [] for t in tops}
    owner_of_span: dict[bytes, SpanView] = {}
    for span, owner in zip(spans, owners, strict=True):
        if owner is None:  # outside every agent: the turn running at that time, else the last
            owner = next((t for t in tops if t.start_ns <= span.start_ns <= t.end_ns), tops[-1])
        members[id(owner)].append(span)
        owner_of_span[span.span_id] = owner
    evaluations: dict[int, list[dict[Slot, Any]]] = {id(t): [] for t in tops}
    for span_id, values in trace.evaluations:
        owner = owner_of_span.get(span_id, tops[-1])
        evaluations[id(owner)].append(values)
    return [(t, members[id(t)], evaluations[id(t)]) for t in tops]


_FLAG_SLOTS = frozenset(
    {
        Slot.RETRIEVAL_EMPTY,
        Slot.FALLBACK,
        Slot.ESCALATED,
        Slot.ESCALATION_REQUESTED,
        Slot.POLICY_BLOCKED,
        Slot.HUMAN_EDITED,
        Slot.USER_REASKED,
        Slot.TIMED_OUT,
        Slot.SAFETY_INCIDENT,
    }
)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value:
        return max(0, int(value))
    return 0
