"""OtlpMapper and the receiver on hand-built requests: grouping, timeouts, grace, failures."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aggregation.events import DecisionEvent
from tenant_agent.ingest import OtlpMapper, add_otlp_services
from tenant_agent.redact import Redactor

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        any_value = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = common_pb2.AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = common_pb2.AnyValue(double_value=value)
    elif isinstance(value, dict):
        any_value = common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(values=[kv(k, v) for k, v in value.items()])
        )
    else:
        any_value = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=any_value)


def span(
    span_id: int, parent: int | None, *, end: int = 2_000_000_000, flags: int = 0, **attrs: Any
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        flags=flags,
        name="s",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=end,
        attributes=[kv(k.replace("__", "."), v) for k, v in attrs.items()],
    )


def request(*spans: trace_pb2.Span) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])]
    )


def evaluation(span_id: int, name: str, score: float) -> logs_service_pb2.ExportLogsServiceRequest:
    record = logs_pb2.LogRecord(
        event_name="gen_ai.evaluation.result",
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        attributes=[kv("gen_ai.evaluation.name", name), kv("gen_ai.evaluation.score.value", score)],
    )
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])]
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


AGENT: dict[str, Any] = {"gen_ai__operation__name": "invoke_agent"}


def test_children_before_root_wait_for_the_root() -> None:
    mapper = OtlpMapper("t", Redactor())
    assert mapper.map_traces(request(span(2, 1, gen_ai__operation__name="chat"))) == []
    assert mapper.pending_traces == 1
    events = mapper.map_traces(request(span(1, None, **AGENT)))
    assert len(events) == 1 and mapper.pending_traces == 0


def test_root_with_remote_parent_completes_the_trace() -> None:
    mapper = OtlpMapper("t", Redactor())
    remote_root = span(1, 99, flags=0x100 | 0x200, **AGENT)
    assert len(mapper.map_traces(request(remote_root))) == 1


def test_incomplete_trace_is_emitted_after_the_pending_timeout() -> None:
    clock = FakeClock()
    mapper = OtlpMapper("t", Redactor(), clock=clock, pending_timeout=60)
    assert mapper.map_traces(request(span(2, 1, **AGENT))) == []
    clock.now += 59
    assert mapper.flush() == []
    clock.now += 2
    assert len(mapper.flush()) == 1


def test_evaluation_within_grace_is_merged() -> None:
    clock = FakeClock()
    mapper = OtlpMapper("t", Redactor(), clock=clock, evaluation_grace=30)
    assert mapper.map_traces(request(span(1, None, **AGENT))) == []
    clock.now += 10
    assert mapper.map_logs(evaluation(1, "context_relevance", 0.1)) == []
    clock.now += 25
    (event,) = mapper.flush()
    assert event.evaluations == {"context_relevance": 0.1}


def test_retriever_without_documents_marks_retrieval_empty() -> None:
    mapper = OtlpMapper("t", Redactor())
    (event,) = mapper.map_traces(
        request(
            span(2, 1, openinference__span__kind="RETRIEVER"),
            span(1, None, openinference__span__kind="AGENT"),
        )
    )
    assert event.retrieval_empty and event.retrieval_ids == ()


def test_fedsignal_flags_and_unlisted_values_of_any_type() -> None:
    mapper = OtlpMapper("t", Redactor())
    root = span(
        1,
        None,
        **AGENT,
        fedsignal__human_edited=True,
        fedsignal__user_reasked=True,
        fedsignal__escalation__requested=True,
        fedsignal__outcome="success",
        fedsignal__safety_incident=True,
        gen_ai__input__messages={"role": "user", "content": "jane.roe@example.org"},
    )
    (event,) = mapper.map_traces(request(root))
    assert event.human_edited and event.user_reasked and event.escalation_requested and not event.escalated
    assert event.outcome == "success" and event.evaluations == {"safety": "unsafe"}
    assert "jane" not in repr(event)


def test_trace_without_agent_span_is_one_turn() -> None:
    mapper = OtlpMapper("t", Redactor())
    (event,) = mapper.map_traces(
        request(
            span(
                2,
                1,
                gen_ai__operation__name="chat",
                gen_ai__request__model="m",
                gen_ai__usage__input_tokens=5,
            ),
            span(1, None, gen_ai__operation__name="chat", gen_ai__usage__input_tokens=7),
        )
    )
    assert event.input_tokens == 12 and event.model == "m"
    assert event.session_id == "trace-" + TRACE.hex()


def test_failed_sink_makes_export_unavailable_and_retry_completes_the_same_turn() -> None:
    stored: list[DecisionEvent] = []
    failures = [RuntimeError("disk full")]

    def sink(events: Sequence[DecisionEvent]) -> None:
        if failures:
            raise failures.pop()
        stored.extend(events)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_otlp_services(server, sink, tenant_id="t")
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tool = span(2, 1, gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(request(tool), timeout=5)  # the child, acknowledged
            with pytest.raises(grpc.RpcError) as failed:
                stub.Export(request(span(1, None, **AGENT)), timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert stored == []
            stub.Export(request(span(1, None, **AGENT)), timeout=5)  # the exporter's retry
    finally:
        server.stop(None)
    (event,) = stored
    assert event.event_id == TRACE.hex() + "-" + (1).to_bytes(8, "big").hex()
    assert [c.name for c in event.tool_calls] == ["lookup"]


def test_resent_spans_count_once_and_late_children_are_dropped() -> None:
    mapper = OtlpMapper("t", Redactor())
    child = span(2, 1, gen_ai__operation__name="execute_tool", gen_ai__tool__name="lookup")
    (event,) = mapper.map_traces(request(child, child, span(1, None, **AGENT)))
    assert len(event.tool_calls) == 1
    assert mapper.map_traces(request(span(3, 1, gen_ai__operation__name="chat"))) == []
    assert mapper.late_spans == 1 and mapper.pending_traces == 0


def test_same_turn_from_otlp_and_json_classifies_the_same() -> None:
    from aggregation.taxonomy import Taxonomy
    from tenant_agent.ingest import event_from_dict

    taxonomy = Taxonomy.load()
    (from_otlp,) = OtlpMapper("t", Redactor()).map_traces(
        request(
            span(
                2,
                1,
                gen_ai__operation__name="execute_tool",
                gen_ai__tool__name="lookup",
                error__type="http_500",
            ),
            span(3, 1, openinference__span__kind="RETRIEVER"),
            span(
                1,
                None,
                **AGENT,
                gen_ai__conversation__id="c-1",
                fedsignal__intent="refund",
                fedsignal__escalation__requested=True,
                fedsignal__outcome="failure",
            ),
        )
    )
    from_json = event_from_dict(
        {
            "schema_version": "1",
            "session_id": "c-1",
            "timestamp": from_otlp.timestamp,
            "intent": "refund",
            "tool_calls": [{"name": "lookup", "error": "http_500"}],
            "retrieval_empty": True,
            "escalation_requested": True,
            "outcome": "failure",
        },
        "t",
        Redactor(),
    )
    expected = {"tool_error", "missing_context", "poor_escalation"}
    assert taxonomy.classify(from_otlp) == taxonomy.classify(from_json) == expected


def test_one_tool_call_recorded_by_two_spans_counts_once() -> None:
    mapper = OtlpMapper("t", Redactor())
    tool: dict[str, Any] = {
        "gen_ai__operation__name": "execute_tool",
        "gen_ai__tool__name": "lookup",
        "gen_ai__tool__call__id": "c1",
    }
    (event,) = mapper.map_traces(
        request(
            span(3, 2, **tool, error__type="http_500"),
            span(2, 1, **tool),
            span(4, 1, **{**tool, "gen_ai__tool__call__id": "c2"}),
            span(1, None, **AGENT),
        )
    )
    assert [(c.name, c.error) for c in event.tool_calls] == [("lookup", "http_500"), ("lookup", None)]


def test_read_span_resolves_aliases_by_precedence_even_without_a_value() -> None:
    from fedsignal.v1.otlp_view_pb2 import OtlpViewResource, OtlpViewSpan

    from tenant_agent.ingest.otel_attrs import Slot
    from tenant_agent.ingest.spans import read_attribute_map, read_span

    def with_attrs(*pairs: tuple[str, common_pb2.AnyValue]) -> OtlpViewSpan:
        s = span(1, None)
        s.attributes.extend([common_pb2.KeyValue(key=k, value=v) for k, v in pairs])
        return OtlpViewSpan.FromString(s.SerializeToString())  # what the receiver parses

    a, b, c, empty = (common_pb2.AnyValue(string_value="a"), common_pb2.AnyValue(string_value="b"),
                      common_pb2.AnyValue(string_value="c"), common_pb2.AnyValue())  # fmt: skip
    request_model, response, oi = "gen_ai.request.model", "gen_ai.response.model", "llm.model_name"
    # The model that answered wins over the one requested, in either order on the span.
    assert read_span(with_attrs((request_model, a), (response, b)), {}).values == {Slot.MODEL: "b"}
    assert read_span(with_attrs((response, b), (request_model, a)), {}).values == {Slot.MODEL: "b"}
    # GenAI's names win over OpenInference's; a lone lower alias still counts.
    assert read_span(with_attrs((request_model, a), (oi, c)), {}).values == {Slot.MODEL: "a"}
    assert read_span(with_attrs((oi, c),), {}).values == {Slot.MODEL: "c"}
    # The winner without a value still wins: the field stays empty, the lower alias is not used.
    assert Slot.MODEL not in read_span(with_attrs((request_model, a), (response, empty)), {}).values
    assert read_span(with_attrs((request_model, empty), (response, a)), {}).values == {Slot.MODEL: "a"}
    # A key repeated on one span keeps its last value (as the attribute list would).
    assert read_span(with_attrs((response, a), (response, b)), {}).values == {Slot.MODEL: "b"}
    docs = with_attrs(("retrieval.documents.1.document.id", a), ("retrieval.documents.0.document.id", b),
                      ("retrieval.documents.1.document.id", b), ("retrieval.documents.2.document.id", empty),
                      ("retrieval.documents.3.document.id", common_pb2.AnyValue(int_value=7)))  # fmt: skip
    view = read_span(docs, {})
    assert view.values == {} and view.document_ids == [(0, "b"), (1, "b"), (3, "7")]
    # The resource's attributes follow the same rule.
    resource = OtlpViewResource.FromString(
        common_pb2.KeyValueList(values=[common_pb2.KeyValue(key="enduser.id", value=a),
                                        common_pb2.KeyValue(key="user.id", value=b)]).SerializeToString()
    )  # KeyValueList.values and Resource.attributes are both field 1
    from tenant_agent.ingest import otel_attrs

    assert read_attribute_map(resource.attributes, otel_attrs.SPAN_ATTRIBUTES) == {Slot.USER_ID: "b"}


def test_alias_precedence_names_every_alias_of_every_field_once() -> None:
    from collections import defaultdict

    from tenant_agent.ingest import otel_attrs

    by_slot: dict[Any, set[str]] = defaultdict(set)
    for key, slot in otel_attrs.SPAN_ATTRIBUTES.items():
        by_slot[slot].add(key)
    aliased = {slot: keys for slot, keys in by_slot.items() if len(keys) > 1}
    orders = otel_attrs.ALIAS_PRECEDENCE
    assert sorted(sorted(keys) for keys in aliased.values()) == sorted(sorted(order) for order in orders)
    assert all(len(set(order)) == len(order) for order in orders)
    assert otel_attrs.BEATEN_BY["llm.model_name"] == ("gen_ai.response.model", "gen_ai.request.model")


def test_an_evaluation_riding_on_a_span_event_reaches_the_turn() -> None:
    chat = span(2, 1, gen_ai__operation__name="chat")
    chat.events.append(
        trace_pb2.Span.Event(
            name="gen_ai.evaluation.result",
            attributes=[kv("gen_ai.evaluation.name", "groundedness"), kv("gen_ai.evaluation.score.value", 0.25),
                        kv("gen_ai.input.messages", "never read")],
        )
    )  # fmt: skip
    chat.events.append(trace_pb2.Span.Event(name="log", attributes=[kv("gen_ai.evaluation.name", "ignored")]))
    (event,) = OtlpMapper("t", Redactor()).map_traces(request(chat, span(1, None, **AGENT)))
    assert event.evaluations == {"groundedness": 0.25}
