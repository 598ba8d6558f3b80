"""SignalService: tenants fetch their cohort's schema and submit DP reports.

A thin servicer over :mod:`server.signals.schemas` and :mod:`server.signals.ingest`. The
caller's tenant and cohort come from its certificate (``server.identity.auth``).
``SubmitReport`` receives the raw request bytes and parses them itself, so
malformed protobuf is answered ``INVALID_ARGUMENT`` (gRPC's own
deserialization failure would surface as ``INTERNAL``).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fedsignal.v1 import common_pb2, signals_pb2
from google.protobuf.message import DecodeError

from aggregation.errors import NotFound
from server.context import ServerContext
from server.servicer import unit_of_work
from server.signals.ingest import IngestOutcome, ReportIngest, Submitter
from server.signals.refusals import MalformedReport
from server.signals.schemas import current_schema, get_schema

log = logging.getLogger(__name__)
SERVICE_NAME = signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name

class UnknownSchema(NotFound):
    """A schema version the caller's cohort never had."""


_OUTCOMES = {
    IngestOutcome.ACCEPTED: signals_pb2.SubmitReportResponse.ACCEPTED,
    IngestOutcome.DUPLICATE: signals_pb2.SubmitReportResponse.DUPLICATE,
}


class SignalServicer:
    def __init__(self, ctx: ServerContext, ingest: ReportIngest | None = None) -> None:
        self._ctx = ctx
        self._ingest = ingest if ingest is not None else ReportIngest(ctx)

    def GetSignalSchema(  # noqa: N802 - gRPC method name
        self, request: signals_pb2.GetSignalSchemaRequest, context: grpc.ServicerContext
    ) -> common_pb2.SignalSchema:
        with unit_of_work(context, self._ctx, "tenant") as call:
            if request.version == 0:
                return current_schema(call.session, call.cohort, clock=self._ctx.clock).to_proto()
            found = get_schema(call.session, call.cohort, request.version)
            if found is None:
                raise UnknownSchema(f"cohort {call.cohort!r} has no signal schema version {request.version}")
            return found.to_proto()

    def SubmitReport(self, request: bytes, context: grpc.ServicerContext) -> signals_pb2.SubmitReportResponse:  # noqa: N802
        # The ingest stores through its own group commit: no unit of work is opened here.
        with unit_of_work(context, self._ctx, "tenant", store=False) as call:
            submitter = Submitter(tenant_id=call.caller.subject, cohort=call.cohort)
            try:
                report = common_pb2.DpReport.FromString(request)
            except DecodeError as exc:
                self._ctx.metrics.report_outcome(MalformedReport.reason)
                raise MalformedReport(f"the request is not a valid DpReport message: {exc}") from exc
            result = self._ingest.submit(submitter, report, len(request))
        return signals_pb2.SubmitReportResponse(outcome=_OUTCOMES[result.outcome], report_id=result.report_id)


def _raw(data: bytes) -> bytes:
    return data


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext, ingest: ReportIngest | None = None) -> None:
    """Serve SignalService; ``ingest``: the report kernel to use (default: one on ``ctx``'s own store)."""
    servicer = SignalServicer(ctx, ingest)
    handlers: dict[str, Any] = {
        "GetSignalSchema": grpc.unary_unary_rpc_method_handler(
            servicer.GetSignalSchema,
            request_deserializer=signals_pb2.GetSignalSchemaRequest.FromString,
            response_serializer=common_pb2.SignalSchema.SerializeToString,
        ),
        "SubmitReport": grpc.unary_unary_rpc_method_handler(
            servicer.SubmitReport,
            request_deserializer=_raw,
            response_serializer=signals_pb2.SubmitReportResponse.SerializeToString,
        ),
    }
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
