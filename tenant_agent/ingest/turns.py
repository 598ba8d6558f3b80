"""One agent turn (a group of spans) → one :class:`DecisionEvent`.

:func:`split_turns` cuts a trace into turns — outermost agent spans and the
spans below them; a trace without agent spans is one turn — and
:class:`TurnAssembler` reads a turn's spans into the event's fields (the
field-by-field mapping is documented in ``docs/event-schema.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.ingest import otel_attrs as A
from tenant_agent.ingest.otel_attrs import Slot
from tenant_agent.ingest.records import (
    DiscardedTexts,
    EventFormatError,
    clean_label,
    clean_session,
    evaluation_value,
    pseudonymise,
    tool_call,
)
from tenant_agent.ingest.spans import AGENT, LLM, RETRIEVER, TOOL, SpanView
from tenant_agent.redact import Redactor

# Slot members as module globals: reading ``Slot.X`` takes EnumType's slow attribute path on
# Python 3.11 (~170 ns, as much as a dict lookup and a call), dozens of times per turn.
_AGENT_NAME = Slot.AGENT_NAME
_ARTIFACT_VERSION = Slot.ARTIFACT_VERSION
_BUNDLE_VERSION = Slot.BUNDLE_VERSION
_CONVERSATION_ID = Slot.CONVERSATION_ID
_ERROR_TYPE = Slot.ERROR_TYPE
_ESCALATED = Slot.ESCALATED
_ESCALATION_REQUESTED = Slot.ESCALATION_REQUESTED
_EVALUATION_LABEL = Slot.EVALUATION_LABEL
_EVALUATION_NAME = Slot.EVALUATION_NAME
_EVALUATION_SCORE = Slot.EVALUATION_SCORE
_FALLBACK = Slot.FALLBACK
_FINISH_REASONS = Slot.FINISH_REASONS
_GUARDRAIL_ACTION = Slot.GUARDRAIL_ACTION
_GUARDRAIL_TRIGGERED = Slot.GUARDRAIL_TRIGGERED
_HUMAN_EDITED = Slot.HUMAN_EDITED
_INPUT_TOKENS = Slot.INPUT_TOKENS
_INTENT = Slot.INTENT
_MODE = Slot.MODE
_MODEL = Slot.MODEL
_OUTCOME = Slot.OUTCOME
_OUTPUT_TOKENS = Slot.OUTPUT_TOKENS
_POLICY_BLOCKED = Slot.POLICY_BLOCKED
_POLICY_VERSION = Slot.POLICY_VERSION
_PROMPT_VERSION = Slot.PROMPT_VERSION
_RETRIEVAL_DOCUMENT_COUNT = Slot.RETRIEVAL_DOCUMENT_COUNT
_RETRIEVAL_EMPTY = Slot.RETRIEVAL_EMPTY
_SAFETY_INCIDENT = Slot.SAFETY_INCIDENT
_SHADOW_OF = Slot.SHADOW_OF
_TEXT = Slot.TEXT
_TIMED_OUT = Slot.TIMED_OUT
_TOOL_CALL_ID = Slot.TOOL_CALL_ID
_TOOL_EXPECTED = Slot.TOOL_EXPECTED
_TOOL_NAME = Slot.TOOL_NAME
_USER_ID = Slot.USER_ID
_USER_REASKED = Slot.USER_REASKED

Turn = tuple[SpanView, list[SpanView], list[dict[Slot, Any]]]

# The merged view's labels (intent, agent, outcome: redacted) and versions (kept, cut to 256 characters).
_LABEL_SLOTS = (_INTENT, _AGENT_NAME, _OUTCOME)
_VERSION_SLOTS = (_PROMPT_VERSION, _POLICY_VERSION, _BUNDLE_VERSION, _ARTIFACT_VERSION, _MODEL)


class TurnAssembler:
    """Builds decision events of one tenant from turns, redacting as it reads.

    ``keep_text`` False: a turn's free text (``fedsignal.text``) is dropped unread — never
    redacted, the event's ``text`` is None — and counted in ``discarded``.
    """

    def __init__(
        self, tenant_id: str, redactor: Redactor, *, keep_text: bool = True, discarded: DiscardedTexts | None = None
    ) -> None:
        self.tenant_id = tenant_id
        self.redactor = redactor
        self.keep_text = keep_text
        #: With ``keep_text``: hold each turn's text unredacted in ``held`` (with its event) instead of
        #: redacting it, for the collector to redact only what replay capture stores.
        self.defer_text = False
        self.held: list[tuple[DecisionEvent, str]] = []
        self.discarded = DiscardedTexts() if discarded is None else discarded

    def event(
        self, turn: SpanView, members: list[SpanView], evaluations: list[dict[Slot, Any]]
    ) -> DecisionEvent:
        redactor = self.redactor
        clean = redactor.redact_label

        # One merged view: the turn span wins, then its members in order, then
        # the resource; flags are true when any of them says so.
        merged = dict(turn.resource)
        flags = {slot for slot, value in turn.resource.items() if slot in _FLAG_SLOTS and _truthy(value)}
        for span in reversed(members):
            merged.update(span.values)
            if not _FLAG_SLOTS.isdisjoint(span.values):  # most spans carry no flag: one C call
                for slot, value in span.values.items():
                    if slot in _FLAG_SLOTS and _truthy(value):
                        flags.add(slot)
        merged.update(turn.values)
        first = merged.get
        tool_calls: list[ToolCall] = []
        calls_by_id: dict[str, int] = {}
        input_tokens = output_tokens = 0
        saw_llm = False
        finish_reasons: list[str] = []
        retrieval_ids: list[str] = []
        retrieval_empty = _RETRIEVAL_EMPTY in flags
        guardrail_triggered = policy_blocked = False
        model = None
        for span in members:
            values = span.values
            role = span.role
            if role & TOOL:
                name = values.get(_TOOL_NAME)
                error = values.get(_ERROR_TYPE)
                if not isinstance(error, str) or not error:
                    error = "error" if span.error else None
                expected = values.get(_TOOL_EXPECTED)
                call = tool_call(
                    self._label(name[:256]) if isinstance(name, str) and name else "unknown",
                    self._label(error[:256]) if error else None,
                    max(0.0, (span.end_ns - span.start_ns) / 1e6) if span.end_ns else None,
                    self._label(expected[:256]) if isinstance(expected, str) and expected else None,
                )
                call_id = values.get(_TOOL_CALL_ID)
                if isinstance(call_id, str) and call_id:
                    # Nested instrumentations (framework + tool library) may both
                    # record one call: keep one, with whichever saw the error.
                    seen = calls_by_id.get(call_id)
                    if seen is not None:
                        if call.error and not tool_calls[seen].error:
                            tool_calls[seen] = call
                        continue
                    calls_by_id[call_id] = len(tool_calls)
                tool_calls.append(call)
            if role & LLM:
                saw_llm = True
                input_tokens += _int(values.get(_INPUT_TOKENS))
                output_tokens += _int(values.get(_OUTPUT_TOKENS))
                reasons = values.get(_FINISH_REASONS)
                if isinstance(reasons, str):
                    reasons = [reasons]
                if isinstance(reasons, list):
                    finish_reasons.extend([clean(r[:64]) for r in reasons if isinstance(r, str)])
                if model is None and isinstance(values.get(_MODEL), str):
                    model = values[_MODEL][:256]
            if span.document_ids:
                retrieval_ids.extend([clean(d[:256]) for _, d in span.document_ids])  # in index order (read_span)
            elif role & RETRIEVER and not _int(values.get(_RETRIEVAL_DOCUMENT_COUNT)):
                retrieval_empty = True
            action = values.get(_GUARDRAIL_ACTION)
            triggered = values.get(_GUARDRAIL_TRIGGERED)
            if triggered is not None and _truthy(triggered):
                guardrail_triggered = True
            if isinstance(action, str):
                action = action.lower()
                if action not in A.GUARDRAIL_PASSING_ACTIONS:
                    guardrail_triggered = True
                if action in A.GUARDRAIL_BLOCKING_ACTIONS:
                    policy_blocked = True
            if span.evaluations:
                evaluations = evaluations + span.evaluations
            if _EVALUATION_NAME in values:  # an EVALUATOR span carrying its verdict
                evaluations = evaluations + [values]
        if not saw_llm:
            input_tokens = _int(turn.values.get(_INPUT_TOKENS))
            output_tokens = _int(turn.values.get(_OUTPUT_TOKENS))

        verdicts = self._evaluations(evaluations) if evaluations else {}
        if _SAFETY_INCIDENT in flags:
            verdicts["safety"] = "unsafe"
        error_type = turn.values.get(_ERROR_TYPE)
        if not isinstance(error_type, str) or not error_type:
            # The first non-tool member's error type, else "error" for a failed turn span.
            error_type = "error" if turn.error else None
            for s in members:
                if not s.role & TOOL and isinstance(s.values.get(_ERROR_TYPE), str):
                    error_type = s.values[_ERROR_TYPE]
                    break
        conversation = first(_CONVERSATION_ID)
        session = (
            conversation if isinstance(conversation, str) and conversation else "trace-" + turn.trace_id.hex()
        )
        user = first(_USER_ID)
        text = first(_TEXT)
        raw: str | None = None
        if not isinstance(text, str) or not text:
            text = None
        elif self.keep_text and self.defer_text:
            raw, text = text[:65_536], None
        elif self.keep_text:
            text = redactor.redact(text[:65_536])
        else:
            self.discarded.add(1)
            text = None
        end_ns = turn.end_ns or turn.start_ns
        # The labels (redacted) and versions (cut to 256 characters) of the merged view, read inline:
        # a closure call per field cost as much as the rest of the field's work.
        intent, agent, outcome = [
            clean(v[:256]) if isinstance(v := first(slot), str) and v else None for slot in _LABEL_SLOTS
        ]
        prompt_version, policy_version, bundle_version, artifact_version, model_version = [
            v[:256] if isinstance(v := first(slot), str) and v else None for slot in _VERSION_SLOTS
        ]
        shadow = first(_MODE) == "shadow"
        shadow_of = first(_SHADOW_OF) if shadow else None
        # from_fields: the same event as DecisionEvent(**fields), without the frozen
        # dataclass's per-field object.__setattr__ (see DecisionEvent.from_fields).
        event = DecisionEvent.from_fields(
            {
                "tenant_id": self.tenant_id,
                "session_id": clean_session(session[:256], redactor),
                "timestamp": end_ns / 1e9,
                "user_id": pseudonymise(str(user)) if user not in (None, "") else None,
                "event_id": f"{turn.trace_id.hex()}-{turn.span_id.hex()}",
                "intent": intent,
                "agent": agent,
                "model": model or model_version,
                "tool_calls": tuple(tool_calls),
                "retrieval_ids": tuple(retrieval_ids),
                "retrieval_empty": retrieval_empty,
                "fallback": _FALLBACK in flags,
                "escalated": _ESCALATED in flags,
                "escalation_requested": _ESCALATION_REQUESTED in flags,
                "policy_blocked": policy_blocked or _POLICY_BLOCKED in flags,
                "guardrail_triggered": guardrail_triggered,
                "human_edited": _HUMAN_EDITED in flags,
                "user_reasked": _USER_REASKED in flags,
                "outcome": outcome,
                "error_type": clean(error_type[:256]) if error_type else None,
                "timed_out": _TIMED_OUT in flags,
                "latency_ms": max(0.0, (turn.end_ns - turn.start_ns) / 1e6) if turn.end_ns else None,
                "input_tokens": input_tokens or None,
                "output_tokens": output_tokens or None,
                "finish_reasons": tuple(dict.fromkeys(finish_reasons)),
                "evaluations": verdicts,
                "prompt_version": prompt_version,
                "policy_version": policy_version,
                "bundle_version": bundle_version,
                "artifact_version": artifact_version,
                "text": text,
                "mode": "shadow" if shadow else None,
                "shadow_of": clean(str(shadow_of)[:256]) if shadow_of else None,
            }
        )
        if raw is not None:
            self.held.append((event, raw))
        return event

    def _label(self, value: str) -> str:
        return self.redactor.redact_label(value[:256])

    def _evaluations(self, results: list[dict[Slot, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for values in results:
            name = values.get(_EVALUATION_NAME)
            if not isinstance(name, str) or not name:
                continue
            score = values.get(_EVALUATION_SCORE)
            label = values.get(_EVALUATION_LABEL)
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


def split_turns(
    spans: list[SpanView], trace_evaluations: Sequence[tuple[bytes, dict[Slot, Any]]]
) -> list[Turn]:
    """Split a trace into turns: outermost agent spans and the spans below them,
    each with the evaluation results (by evaluated span id) that belong to it."""
    agents = [s for s in spans if s.role & AGENT]
    if len(agents) == 1:  # the common case: one agent turn per trace
        return [(agents[0], spans, [v for _, v in trace_evaluations])]
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
        return [(turn, spans, [v for _, v in trace_evaluations])]
    tops.sort(key=lambda s: s.start_ns)
    members: dict[int, list[SpanView]] = {id(t): [] for t in tops}
    owner_of_span: dict[bytes, SpanView] = {}
    for span, owner in zip(spans, owners, strict=True):
        if owner is None:  # outside every agent: the turn running at that time, else the last
            owner = next((t for t in tops if t.start_ns <= span.start_ns <= t.end_ns), tops[-1])
        members[id(owner)].append(span)
        owner_of_span[span.span_id] = owner
    evaluations: dict[int, list[dict[Slot, Any]]] = {id(t): [] for t in tops}
    for span_id, values in trace_evaluations:
        owner = owner_of_span.get(span_id, tops[-1])
        evaluations[id(owner)].append(values)
    return [(t, members[id(t)], evaluations[id(t)]) for t in tops]


_FLAG_SLOTS = frozenset(
    {
        _RETRIEVAL_EMPTY,
        _FALLBACK,
        _ESCALATED,
        _ESCALATION_REQUESTED,
        _POLICY_BLOCKED,
        _HUMAN_EDITED,
        _USER_REASKED,
        _TIMED_OUT,
        _SAFETY_INCIDENT,
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
