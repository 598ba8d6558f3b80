"""The OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export``.

Thin servicers over :class:`~tenant_agent.ingest.otlp.OtlpMapper`: the logs service is
``opentelemetry-proto``'s generated one; the trace service is registered with the same
service and method names but parses its requests straight into the view of
``fedsignal/v1/otlp_view.proto`` (the same bytes, attributes as maps built in C), so a
span's attributes are never turned into Python objects beyond the allow-listed ones.

An Export call returns
success only after ``sink`` returned for every event the request completed:
the sink stores events durably, so a success is an acknowledgement. When the
sink fails the call fails with ``UNAVAILABLE`` and the exporter retries; the
retried spans map to the same ``event_id`` values.

Spans of a turn whose trace root has not arrived yet are held in memory (see
:mod:`tenant_agent.ingest.otlp`); call :meth:`OtlpReceiver.flush` periodically
and ``flush(force=True)`` at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from fedsignal.v1.otlp_view_pb2 import OtlpViewTraces
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from aggregation.events import DecisionEvent
from tenant_agent.ingest.otlp import OtlpMapper
from tenant_agent.redact import Redactor

Sink = Callable[[Sequence[DecisionEvent]], None]

log = logging.getLogger(__name__)


class OtlpReceiver:
    """Serialises the mapper and hands completed events to the sink."""

    def __init__(self, mapper: OtlpMapper, sink: Sink) -> None:
        self.mapper = mapper
        self.sink = sink
        self._lock = threading.Lock()
        self.events_delivered = 0

    def _deliver(self, events: Sequence[DecisionEvent]) -> None:
        # Called under the lock, right after the mapper produced ``events``.
        if events:
            try:
                self.sink(events)
            except BaseException:
                self.mapper.restore()  # the retry will complete the same turns
                raise
            self.events_delivered += len(events)
        self.mapper.commit()

    def receive_traces(self, request: OtlpViewTraces | trace_service_pb2.ExportTraceServiceRequest | bytes) -> None:
        with self._lock:
            self._deliver(self.mapper.map_traces(request))

    def receive_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self._lock:
            self._deliver(self.mapper.map_logs(request))

    def flush(self, *, force: bool = False) -> int:
        """Deliver the turns that are due (all pending turns with ``force``); returns how many."""
        with self._lock:
            events = self.mapper.flush(force=force)
            self._deliver(events)
        return len(events)


#: The generated service's full name (add_otlp_services registers the view's handler under it).
_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        try:
            self.receiver.receive_traces(request)
        except Exception as exc:  # the sink could not store: let the exporter retry
            log.warning("OTLP trace export not stored: %s", type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector could not store the events; retry")
        return trace_service_pb2.ExportTraceServiceResponse()


class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        try:
            self.receiver.receive_logs(request)
        except Exception as exc:
            log.warning("OTLP logs export not stored: %s", type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector could not store the events; retry")
        return logs_service_pb2.ExportLogsServiceResponse()


def add_otlp_services(
    grpc_server: grpc.Server,
    sink: Sink,
    *,
    tenant_id: str = "",
    redactor: Redactor | None = None,
    mapper: OtlpMapper | None = None,
) -> OtlpReceiver:
    """Register the OTLP trace and logs services on ``grpc_server``.

    Events carry ``tenant_id`` and their free text is redacted by
    ``redactor``; pass a configured ``mapper`` instead to tune grace and
    timeouts. Returns the receiver (for :meth:`OtlpReceiver.flush`).
    """
    if mapper is None:
        mapper = OtlpMapper(tenant_id, redactor or Redactor())
    receiver = OtlpReceiver(mapper, sink)
    traces = TraceServicer(receiver)
    grpc_server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _TRACE_SERVICE,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        traces.Export,
                        request_deserializer=OtlpViewTraces.FromString,
                        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsServicer(receiver), grpc_server)
    return receiver
