"""The OTLP view (fedsignal/v1/otlp_view.proto) reads what opentelemetry-proto's messages read.

The receiver parses export requests with the view, whose attribute lists are maps: these tests
parse the same bytes with both schemas and compare every field the mapper reads, check the
allow-list read against a reference reader over the official messages on random spans (fixed
seed), and drive the gRPC receiver with the official client stub and with bytes that are not
an export request.
"""

from __future__ import annotations

import random
from concurrent import futures
from typing import Any

import grpc
import pytest
from fedsignal.v1.otlp_view_pb2 import OtlpViewTraces
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tenant_agent.ingest import add_otlp_services
from tenant_agent.ingest import otel_attrs as A
from tenant_agent.ingest.otlp import parse_traces
from tenant_agent.ingest.spans import _KEY_CODES, DOCUMENT_ID_BASE, any_value, read_span

KINDS = ("string", "bool", "int", "double", "array", "kvlist", "bytes", "unset")


def value_of(kind: str, rng: random.Random) -> common_pb2.AnyValue:
    if kind == "string":
        return common_pb2.AnyValue(string_value=rng.choice(["", "a", "chat", "é✓", "x" * 300]))
    if kind == "bool":
        return common_pb2.AnyValue(bool_value=rng.random() < 0.5)
    if kind == "int":
        return common_pb2.AnyValue(int_value=rng.choice([0, 7, -3, 2**62]))
    if kind == "double":
        return common_pb2.AnyValue(double_value=rng.choice([0.0, 0.5, -1e300]))
    if kind == "array":
        items = [value_of(rng.choice(("string", "int", "bool")), rng) for _ in range(rng.randrange(3))]
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=items))
    if kind == "kvlist":
        inner = [common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(string_value="v"))]
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=inner))
    if kind == "bytes":
        return common_pb2.AnyValue(bytes_value=b"\x00\x01")
    return common_pb2.AnyValue()


#: Keys the mapper reads (with aliases), keys it ignores, and document ids.
KEYS = [*A.SPAN_ATTRIBUTES, "gen_ai.input.messages", "http.url", "input.value",
        "retrieval.documents.0.document.id", "retrieval.documents.2.document.id",
        "retrieval.documents.0.document.content", ""]  # fmt: skip


def random_span(rng: random.Random, i: int) -> trace_pb2.Span:
    attributes = [
        common_pb2.KeyValue(key=rng.choice(KEYS), value=value_of(rng.choice(KINDS), rng))
        for _ in range(rng.randrange(12))
    ]
    event_attrs = [common_pb2.KeyValue(key=k, value=value_of("string", rng)) for k in A.EVALUATION_ATTRIBUTES]
    return trace_pb2.Span(
        trace_id=rng.randbytes(16),
        span_id=i.to_bytes(8, "big"),
        trace_state="k=v",
        parent_span_id=rng.choice([b"", rng.randbytes(8)]),
        flags=rng.choice([0, 0x100, 0x300, 0xFFFFFFFF]),
        name="span",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=rng.randrange(2**63),
        end_time_unix_nano=rng.choice([0, 2**64 - 1, 1_700_000_000_000_000_000]),
        attributes=attributes,
        dropped_attributes_count=3,
        events=[trace_pb2.Span.Event(time_unix_nano=5, name=rng.choice([A.GEN_AI_EVALUATION_RESULT, "other"]),
                                     attributes=event_attrs)] if rng.random() < 0.3 else [],  # fmt: skip
        links=[trace_pb2.Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)],
        status=trace_pb2.Status(message="boom", code=rng.choice([trace_pb2.Status.STATUS_CODE_UNSET, trace_pb2.Status.STATUS_CODE_OK, trace_pb2.Status.STATUS_CODE_ERROR])),
    )


def random_request(rng: random.Random, spans: int) -> trace_service_pb2.ExportTraceServiceRequest:
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key=rng.choice(KEYS), value=value_of("string", rng)) for _ in range(4)]
    )
    scope = trace_pb2.ScopeSpans(
        scope=common_pb2.InstrumentationScope(name="lib", version="1"),
        spans=[random_span(rng, i) for i in range(spans)],
        schema_url="https://opentelemetry.io/schemas/1.30.0",
    )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[scope], schema_url="s")]
    )


def last_values(attributes: Any) -> dict[str, Any]:
    """An official attribute list as the list means it: the last value of each key."""
    out: dict[str, Any] = {}
    for kv in attributes:
        out[kv.key] = any_value(kv.value)
    return out


def test_the_view_parses_every_field_the_mapper_reads_as_the_official_messages_do() -> None:
    rng = random.Random(11)
    for _ in range(30):
        official = random_request(rng, 20)
        view = OtlpViewTraces.FromString(official.SerializeToString())
        assert len(view.resource_spans) == len(official.resource_spans)
        for rs_o, rs_v in zip(official.resource_spans, view.resource_spans, strict=True):
            resource = {k: any_value(v) for k, v in rs_v.resource.attributes.items()}
            assert resource == last_values(rs_o.resource.attributes)
            for ss_o, ss_v in zip(rs_o.scope_spans, rs_v.scope_spans, strict=True):
                for o, v in zip(ss_o.spans, ss_v.spans, strict=True):
                    assert (v.trace_id, v.span_id, v.parent_span_id, v.flags) == (
                        o.trace_id, o.span_id, o.parent_span_id, o.flags)  # fmt: skip
                    assert (v.start_time_unix_nano, v.end_time_unix_nano, v.status.code) == (
                        o.start_time_unix_nano, o.end_time_unix_nano, o.status.code)  # fmt: skip
                    assert {k: any_value(x) for k, x in v.attributes.items()} == last_values(o.attributes)
                    assert [e.name for e in v.events] == [e.name for e in o.events]
                    for eo, ev in zip(o.events, v.events, strict=True):
                        assert {k: any_value(x) for k, x in ev.attributes.items()} == last_values(eo.attributes)


def reference_read(span: trace_pb2.Span) -> tuple[dict[Any, Any], list[tuple[int, str]] | None]:
    """The allow-list read done on the official span, independently of spans.read_span: the last
    value of each key, then for each field its highest-precedence key present."""
    values_by_key = last_values(span.attributes)
    values: dict[Any, Any] = {}
    documents = []
    for key, value in values_by_key.items():
        code = _KEY_CODES.get(key)
        if code is None:
            continue
        if code >= DOCUMENT_ID_BASE:
            if isinstance(value, str | int):
                documents.append((code - DOCUMENT_ID_BASE, str(value)))
            continue
        if any(winner in values_by_key for winner in A.BEATEN_BY.get(key, ())):
            continue
        if value is not None:
            values[code] = value
    return values, sorted(documents) or None


def test_read_span_on_the_view_equals_the_reference_read_of_the_official_span() -> None:
    rng = random.Random(5)
    official = random_request(rng, 400)
    view = parse_traces(official)
    for o, v in zip(official.resource_spans[0].scope_spans[0].spans,
                    view.resource_spans[0].scope_spans[0].spans, strict=True):  # fmt: skip
        read = read_span(v, {})
        assert (read.values, read.document_ids) == reference_read(o)
        assert read.error == (o.status.code == 2) and read.span_id == o.span_id


def test_parse_traces_takes_bytes_the_official_message_or_a_view_and_refuses_garbage() -> None:
    official = random_request(random.Random(3), 3)
    data = official.SerializeToString()
    view = parse_traces(data)
    assert parse_traces(official) == view and parse_traces(view) is view
    with pytest.raises(DecodeError):
        parse_traces(data[: len(data) // 2])  # truncated inside a span
    with pytest.raises(DecodeError):
        trace_service_pb2.ExportTraceServiceRequest.FromString(data[: len(data) // 2])  # the same verdict


def test_the_grpc_receiver_reads_the_official_stub_and_refuses_bytes_that_are_no_request() -> None:
    stored: list[Any] = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_otlp_services(server, stored.extend, tenant_id="t")
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    agent = trace_pb2.Span(
        trace_id=b"\x07" * 16, span_id=b"\x01" * 8, start_time_unix_nano=1, end_time_unix_nano=2_000_000,
        attributes=[common_pb2.KeyValue(key="gen_ai.operation.name",
                                        value=common_pb2.AnyValue(string_value="invoke_agent")),
                    common_pb2.KeyValue(key="fedsignal.intent", value=common_pb2.AnyValue(string_value="refund"))],
    )  # fmt: skip
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[agent])])]
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=5)
            assert isinstance(reply, trace_service_pb2.ExportTraceServiceResponse)
            raw = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.RpcError) as refused:
                raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)  # a length past the end
            assert refused.value.code() == grpc.StatusCode.INTERNAL
    finally:
        server.stop(None)
    (event,) = stored
    assert event.intent == "refund" and event.event_id == (b"\x07" * 16).hex() + "-" + (b"\x01" * 8).hex()
