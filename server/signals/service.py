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
from sqlalchemy.exc import SQLAlchemyError

from server.context import ServerContext
from server.db import transaction
from server.identity.auth import require
from server.metrics import report_outcome
from server.signals.ingest import IngestOutcome, ReportIngest, Submitter
from server.signals.refusals import MalformedReport, ReportRefused
from server.signals.schemas import current_schema, get_schema

log = logging.getLogger(__name__)
SERVICE_NAME = signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name

_OUTCOMES = {
    IngestOutcome.ACCEPTED: signals_pb2.SubmitReportResponse.ACCEPTED,
    IngestOutcome.DUPLICATE: signals_pb2.SubmitReportResponse.DUPLICATE,
}


class SignalServicer:
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._ingest = ReportIngest(ctx)

    def _submitter(self, context: grpc.ServicerContext) -> Submitter:
        identity = require(context, self._ctx, "tenant")
        if not identity.cohort:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate of tenant {identity.subject!r} names no cohort; re-enroll the collector",
            )
        return Submitter(tenant_id=identity.subject, cohort=identity.cohort or "")

    def GetSignalSchema(  # noqa: N802 - gRPC method name
        self, request: signals_pb2.GetSignalSchemaRequest, context: grpc.ServicerContext
    ) -> common_pb2.SignalSchema:
        submitter = self._submitter(context)
        with transaction(self._ctx.sessions) as session:
            if request.version == 0:
                schema = current_schema(session, submitter.cohort)
            else:
                found = get_schema(session, submitter.cohort, request.version)
                if found is None:
                    context.abort(
                        grpc.StatusCode.NOT_FOUND,
                        f"cohort {submitter.cohort!r} has no signal schema version {request.version}",
                    )
                schema = found  # type: ignore[assignment]
        return schema.to_proto()

    def SubmitReport(self, request: bytes, context: grpc.ServicerContext) -> signals_pb2.SubmitReportResponse:  # noqa: N802
        submitter = self._submitter(context)
        try:
            report = common_pb2.DpReport.FromString(request)
        except DecodeError as exc:
            report_outcome(MalformedReport.reason)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid DpReport message: {exc}")
        try:
            result = self._ingest.submit(submitter, report, len(request))
        except ReportRefused as exc:
            context.abort(exc.status, str(exc))
        except SQLAlchemyError:
            # Nothing was acknowledged: the collector's outbox keeps the report and retries.
            log.exception("report store unavailable")
            report_outcome("store_unavailable")
            context.abort(grpc.StatusCode.UNAVAILABLE, "the report store is unavailable; retry the report later")
        return signals_pb2.SubmitReportResponse(outcome=_OUTCOMES[result.outcome], report_id=result.report_id)


def _raw(data: bytes) -> bytes:
    return data


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    servicer = SignalServicer(ctx)
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
