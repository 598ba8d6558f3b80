"""AdminService: enrollment tokens, revocation, merged signals, the audit log. Admin certificates only."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

import grpc
from fedsignal.v1 import admin_pb2, admin_pb2_grpc, common_pb2

from aggregation.errors import FedsignalError
from server.audit import iter_audit
from server.context import ServerContext
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.auth import forget_cached_revocations, require
from server.logs import log_event
from server.servicer import status_for

log = logging.getLogger("fedsignal.server.admin")

AUDIT_PAGE_DEFAULT = 100
AUDIT_PAGE_MAX = 1000

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (identity.InvalidName, grpc.StatusCode.INVALID_ARGUMENT),
    (identity.UnknownTenant, grpc.StatusCode.NOT_FOUND),
    (identity.TenantRevoked, grpc.StatusCode.FAILED_PRECONDITION),
    (identity.CohortMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (identity.IdentityError, grpc.StatusCode.INVALID_ARGUMENT),
    (FedsignalError, grpc.StatusCode.FAILED_PRECONDITION),
]



class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def CreateEnrollmentToken(self, request: admin_pb2.CreateEnrollmentTokenRequest,
                              context: grpc.ServicerContext) -> admin_pb2.CreateEnrollmentTokenResponse:
        caller = require(context, self._ctx, "admin")
        ttl = timedelta(seconds=request.ttl_seconds or self._ctx.settings.enrollment_token_ttl_seconds)
        try:
            with transaction(self._ctx.sessions) as session:
                token, expires_at = identity.create_enrollment_token(
                    session, request.tenant_id, request.cohort, ttl, caller.actor, self._ctx.clock()
                )
        except FedsignalError as exc:
            context.abort(status_for(exc, _STATUS), str(exc))
        log_event(log, "enrollment token created", tenant=request.tenant_id, cohort=request.cohort, by=caller.actor)
        return admin_pb2.CreateEnrollmentTokenResponse(
            token=token, expires_at=expires_at.astimezone(UTC).isoformat(timespec="seconds")
        )

    def RevokeTenant(self, request: admin_pb2.RevokeTenantRequest,
                     context: grpc.ServicerContext) -> admin_pb2.RevokeTenantResponse:
        caller = require(context, self._ctx, "admin")
        if not request.reason.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a revocation needs a reason (it goes to the audit log)")
        try:
            with transaction(self._ctx.sessions) as session:
                count = identity.revoke_tenant(session, request.tenant_id, request.reason, caller.actor,
                                               self._ctx.clock())
        except FedsignalError as exc:
            context.abort(status_for(exc, _STATUS), str(exc))
        forget_cached_revocations()
        log_event(log, "tenant revoked", tenant=request.tenant_id, certificates=count, by=caller.actor)
        return admin_pb2.RevokeTenantResponse(certificates_revoked=count)

    def ListSignals(self, request: admin_pb2.ListSignalsRequest,
                    context: grpc.ServicerContext) -> admin_pb2.ListSignalsResponse:
        from server.signals.views import list_signals

        require(context, self._ctx, "admin")
        try:
            with self._ctx.sessions() as session:
                response = list_signals(session, self._ctx.settings, request)
                response.hotspots.extend(hotspot_ages(session, self._ctx.clock(), request.cohort))
                return response
        except FedsignalError as exc:
            context.abort(status_for(exc, _STATUS), str(exc))

    def GetAuditLog(self, request: admin_pb2.GetAuditLogRequest,
                    context: grpc.ServicerContext) -> admin_pb2.GetAuditLogResponse:
        require(context, self._ctx, "admin")
        limit = min(request.limit or AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX)
        with self._ctx.sessions() as session:
            entries = [
                common_pb2.AuditEntry(seq=e.seq, at=e.at, actor=e.actor, kind=e.kind, payload_json=e.payload_json,
                                      prev_hash=e.prev_hash, hash=e.hash)
                for e in iter_audit(session, after_seq=request.after_seq, limit=limit)
            ]
        return admin_pb2.GetAuditLogResponse(entries=entries)


def hotspot_ages(session: Any, now: Any, cohort: str) -> list[admin_pb2.HotspotAge]:
    """Open hotspots with age and SLA, overdue first (server.evaluation.sla; validation-stages)."""
    from server.evaluation.sla import open_hotspots

    return [admin_pb2.HotspotAge(cohort=h.cohort, category=h.category, stage=h.stage, candidate_id=h.candidate_id,
                                 age_seconds=h.age_seconds, sla_seconds=h.sla_seconds, overdue=h.overdue,
                                 reopened=h.reopened) for h in open_hotspots(session, now, cohort)]


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(ctx), grpc_server)
