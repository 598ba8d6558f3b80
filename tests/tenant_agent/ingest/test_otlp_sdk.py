"""The OTLP receiver fed by the real OpenTelemetry SDK and its OTLP/gRPC exporters."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from aggregation.events import DecisionEvent
from aggregation.taxonomy import Taxonomy
from tenant_agent.ingest import OtlpReceiver, add_otlp_services
from tenant_agent.redact import Redactor

SECRET_PROMPT = "my card is 4111 1111 1111 1111 and mail jane.roe@example.org"


@dataclass
class Agent:
    """An instrumented agent process: SDK providers exporting to the collector."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    receiver: OtlpReceiver
    events: list[DecisionEvent]

    @property
    def tracer(self):  # type: ignore[no-untyped-def]
        return self.tracer_provider.get_tracer("agent")

    @property
    def logger(self):  # type: ignore[no-untyped-def]
        return self.logger_provider.get_logger("agent")


@pytest.fixture
def agent() -> Iterator[Agent]:
    events: list[DecisionEvent] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    receiver = add_otlp_services(server, events.extend, tenant_id="tenant-a", redactor=Redactor())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    resource = Resource.create({"service.name": "support-agent", "fedsignal.bundle.version": "bundle-7"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5))
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5))
    )
    try:
        yield Agent(tracer_provider, logger_provider, receiver, events)
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()
        server.stop(None)


def run_turn(agent: Agent, conversation: str = "conv-1", *, evaluate: bool = True) -> None:
    tracer = agent.tracer
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "gen_ai.conversation.id": conversation,
            "user.id": "jane.roe@example.org",
            "fedsignal.intent": "refund",
            "fedsignal.artifact.version": "baseline",
            "fedsignal.text": "Please call me back at +1 415 555 0132",
        },
    ):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "gen_ai.response.finish_reasons": ["tool_calls"],
                "gen_ai.input.messages": SECRET_PROMPT,
                "llm.prompt_template.version": "prompt-3",
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool lookup_order",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call-1",
                "gen_ai.tool.call.arguments": SECRET_PROMPT,
                "error.type": "timeout",
                "fedsignal.tool.expected": "refund_order",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR))
        with tracer.start_as_current_span(
            "retrieve",
            attributes={
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.10.document.id": "kb-11",
                "retrieval.documents.2.document.id": "kb-3",
                "retrieval.documents.2.document.content": SECRET_PROMPT,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "output guardrail",
            attributes={"openinference.span.kind": "GUARDRAIL", "gen_ai.guardrail.action": "block"},
        ):
            pass
        if evaluate:
            agent.logger.emit(
                event_name="gen_ai.evaluation.result",
                attributes={
                    "gen_ai.evaluation.name": "groundedness",
                    "gen_ai.evaluation.score.value": 0.2,
                    "gen_ai.evaluation.score.label": "unsupported",
                    "gen_ai.evaluation.explanation": SECRET_PROMPT,
                },
            )


def test_sdk_turn_becomes_one_decision_event(agent: Agent) -> None:
    run_turn(agent)

    assert len(agent.events) == 1
    event = agent.events[0]
    assert event.tenant_id == "tenant-a"
    assert event.session_id == "conv-1"
    assert event.intent == "refund" and event.agent == "support" and event.model == "gpt-4o"
    assert event.artifact_version == "baseline" and event.bundle_version == "bundle-7"
    assert event.prompt_version == "prompt-3"
    assert event.input_tokens == 120 and event.output_tokens == 30
    assert event.finish_reasons == ("tool_calls",)
    assert [(c.name, c.error, c.expected) for c in event.tool_calls] == [
        ("lookup_order", "timeout", "refund_order")
    ]
    assert event.retrieval_ids == ("kb-3", "kb-11")  # regrouped in index order
    assert event.guardrail_triggered and event.policy_blocked
    assert event.evaluations == {"groundedness": {"score": 0.2, "label": "unsupported"}}
    assert event.text == "Please call me back at <PHONE>"
    assert event.user_id is not None and "jane" not in event.user_id
    assert event.latency_ms is not None and event.latency_ms >= 0
    assert Taxonomy.load().classify(event) >= {
        "tool_error",
        "timeout",
        "wrong_tool",
        "policy_violation",
        "unsupported_claim",
    }


def test_unlisted_attributes_never_reach_the_event(agent: Agent) -> None:
    run_turn(agent)

    dump = repr(agent.events)
    # Whole fragments: a bare "4111" could appear in a latency or a trace id by chance.
    for fragment in ("4111 1111", "jane.roe", "example.org", "415 555"):
        assert fragment not in dump


def test_each_conversation_turn_is_its_own_event(agent: Agent) -> None:
    run_turn(agent, "conv-1", evaluate=False)
    run_turn(agent, "conv-1", evaluate=False)
    run_turn(agent, "conv-2", evaluate=False)

    assert [e.session_id for e in agent.events] == ["conv-1", "conv-1", "conv-2"]
    assert len({e.event_id for e in agent.events}) == 3
    assert agent.receiver.mapper.pending_traces == 0


def test_turns_of_one_trace_split_by_outermost_agent_span(agent: Agent) -> None:
    tracer = agent.tracer
    with tracer.start_as_current_span("conversation"):
        for intent in ("billing", "refund"):
            with (
                tracer.start_as_current_span(
                    "invoke_agent",
                    attributes={"gen_ai.operation.name": "invoke_agent", "fedsignal.intent": intent},
                ),
                tracer.start_as_current_span(
                    "invoke_agent sub", attributes={"gen_ai.operation.name": "invoke_agent"}
                ),
                tracer.start_as_current_span(
                    "tool",
                    attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": intent},
                ),
            ):
                pass

    assert agent.receiver.mapper.pending_traces == 0
    assert sorted(e.intent or "" for e in agent.events) == ["billing", "refund"]
    assert {e.intent: [c.name for c in e.tool_calls] for e in agent.events} == {
        "billing": ["billing"],
        "refund": ["refund"],
    }


def test_evaluation_after_the_turn_is_counted_late_not_double(agent: Agent) -> None:
    run_turn(agent, evaluate=False)
    ctx_trace = agent.events[0].event_id
    assert ctx_trace is not None
    # An evaluator scoring the turn afterwards: the turn was already counted.
    from opentelemetry import trace as trace_api
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id, span_id = (int(part, 16) for part in ctx_trace.split("-"))
    parent = trace_api.set_span_in_context(
        NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1)))
    )
    agent.logger.emit(
        event_name="gen_ai.evaluation.result",
        context=parent,
        attributes={"gen_ai.evaluation.name": "groundedness", "gen_ai.evaluation.score.value": 0.1},
    )

    assert len(agent.events) == 1
    assert agent.receiver.mapper.late_evaluations == 1
