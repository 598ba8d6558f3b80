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

Requests are read through the view of ``fedsignal/v1/otlp_view.proto`` (the same
bytes, every attribute list parsed into a map in C): only the attributes of
:mod:`tenant_agent.ingest.otel_attrs` are looked up and converted, the rest are
never turned into Python objects (see :mod:`tenant_agent.ingest.spans`). The only
free text read (``fedsignal.text``) goes through the
:class:`~tenant_agent.redact.Redactor` — or, when ``keep_text`` says no consumer
reads it, is discarded unread when its turn is assembled (counted in ``discarded``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedsignal.v1.otlp_view_pb2 import OtlpViewTraces
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aggregation.events import DecisionEvent
from tenant_agent.ingest import otel_attrs as A
from tenant_agent.ingest.otel_attrs import Slot
from tenant_agent.ingest.records import DiscardedTexts
from tenant_agent.ingest.spans import SpanView, read_attribute_map, read_attributes, read_span
from tenant_agent.ingest.turns import TurnAssembler, split_turns
from tenant_agent.redact import Redactor

_EMITTED_MEMORY = 65_536
_MAX_PENDING_TRACES = 100_000


def parse_traces(request: OtlpViewTraces | ExportTraceServiceRequest | bytes) -> OtlpViewTraces:
    """An OTLP trace export request as the view (``OtlpViewTraces``): parsed from its bytes, or
    from an ``ExportTraceServiceRequest`` serialized again; a view is returned as it is."""
    if isinstance(request, OtlpViewTraces):
        return request
    if isinstance(request, ExportTraceServiceRequest):
        request = request.SerializeToString()
    return OtlpViewTraces.FromString(request)


@dataclass
class _PendingTrace:
    first_seen: float
    spans: list[SpanView] = field(default_factory=list)
    span_ids: set[bytes] = field(default_factory=set)
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
        keep_text: bool | Callable[[], bool] = True,
        defer_text: Callable[[], bool] | None = None,
        discarded: DiscardedTexts | None = None,
    ) -> None:
        """``keep_text``: whether turns keep their (redacted) free text, or a callable asked at
        every request (the collector's decision follows its replay policy and taxonomy);
        ``defer_text``, asked with it: a kept text is not redacted here but held, unredacted,
        beside its event (:meth:`take_held`) for the caller to redact only what it stores;
        ``discarded`` counts the texts dropped unread (default: a counter of this mapper's own)."""
        self.tenant_id = tenant_id
        self.redactor = redactor
        self._keep_text = keep_text
        self._defer_text = defer_text
        self.discarded = DiscardedTexts() if discarded is None else discarded
        self._assembler = TurnAssembler(tenant_id, redactor, discarded=self.discarded)
        self.clock = clock
        self.evaluation_grace = evaluation_grace
        self.pending_timeout = pending_timeout
        self._pending: dict[bytes, _PendingTrace] = {}
        self._emitted: OrderedDict[bytes, None] = OrderedDict()
        self._last_sweep = clock()
        # Traces whose events were returned but not yet committed (see commit/restore).
        self._in_flight: dict[bytes, _PendingTrace] = {}
        self.late_evaluations = 0
        self.late_spans = 0
        self.spans_read = 0

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    # -- traces ------------------------------------------------------------------
    def map_traces(self, request: OtlpViewTraces | ExportTraceServiceRequest | bytes) -> list[DecisionEvent]:
        """Events for every turn whose trace is complete after this request: the view the
        receiver parsed (:func:`parse_traces`), its serialized bytes, or an
        ``ExportTraceServiceRequest`` (re-read through the view: replay files, tests)."""
        request = parse_traces(request)
        self.commit()  # a new request: the previous events were accepted
        self._decide_text()
        now = self.clock()
        ready: list[bytes] = []
        pending = self._pending
        read = self.read_span
        count = 0
        for resource_spans in request.resource_spans:
            resource = read_attribute_map(resource_spans.resource.attributes, A.SPAN_ATTRIBUTES)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    view = read(span, resource)
                    count += 1
                    trace_id = view.trace_id
                    trace = pending.get(trace_id)
                    if trace is None:
                        if trace_id in self._emitted and not view.local_root:
                            self.late_spans += 1  # its turn was counted already
                            continue
                        trace = pending[trace_id] = _PendingTrace(first_seen=now)
                    if view.span_id in trace.span_ids:
                        # A retried export resends spans we hold: keep one copy, but a
                        # resent root still completes the trace.
                        if view.local_root and trace.completed_at is not None:
                            ready.append(trace_id)
                        continue
                    trace.span_ids.add(view.span_id)
                    trace.spans.append(view)
                    if view.local_root and trace.completed_at is None:
                        trace.completed_at = now
                        ready.append(trace_id)
        self.spans_read += count
        events: list[DecisionEvent] = []
        if self.evaluation_grace <= 0:
            for trace_id in dict.fromkeys(ready):
                if trace_id in pending:
                    events.extend(self._emit(trace_id))
        events.extend(self._sweep(now, force=False))
        return events

    def _decide_text(self) -> None:
        # Once per request: the turns it completes keep their text (redacted, or held), or drop it unread.
        keep = self._keep_text
        self._assembler.keep_text = kept = bool(keep() if callable(keep) else keep)
        self._assembler.defer_text = kept and self._defer_text is not None and self._defer_text()

    def take_held(self) -> list[tuple[DecisionEvent, str]]:
        """The unredacted texts held beside the events the last call returned (``defer_text``),
        each with its event; forgotten at the next call, :meth:`commit` or :meth:`restore`."""
        held, self._assembler.held = self._assembler.held, []
        return held

    # -- acknowledgement ----------------------------------------------------------
    def commit(self) -> None:
        """The events returned by the last call are stored: forget their spans.
        (Implied by the next ``map_*``/``flush`` call.)"""
        self._in_flight.clear()
        self._assembler.held = []

    def restore(self) -> None:
        """The events returned by the last call were not stored: hold their spans
        again, so that the exporter's retry completes the same turns."""
        for trace_id, trace in self._in_flight.items():
            self._emitted.pop(trace_id, None)
            self._pending[trace_id] = trace
        self._in_flight.clear()
        self._assembler.held = []

    # -- logs ----------------------------------------------------------------------
    def map_logs(self, request: ExportLogsServiceRequest) -> list[DecisionEvent]:
        """Merge ``gen_ai.evaluation.result`` records into their turns; returns the
        events that became ready (complete traces past their evaluation grace)."""
        self.commit()
        self._decide_text()
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
        return self._sweep(now, force=False)

    # -- flushing --------------------------------------------------------------------
    def flush(self, *, now: float | None = None, force: bool = False) -> list[DecisionEvent]:
        """Events of traces that are due: complete and past the evaluation grace,
        or incomplete for longer than ``pending_timeout``; ``force``: everything."""
        self.commit()
        self._decide_text()
        return self._sweep(self.clock() if now is None else now, force=force)

    def _sweep(self, now: float, *, force: bool) -> list[DecisionEvent]:
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
        self._in_flight[trace_id] = trace
        self._emitted[trace_id] = None
        if len(self._emitted) > _EMITTED_MEMORY:
            self._emitted.popitem(last=False)
        if not trace.spans:
            return []  # evaluations whose spans never came: nothing to count
        return [
            self._assembler.event(turn, members, evaluations)
            for turn, members, evaluations in split_turns(trace.spans, trace.evaluations)
        ]
