"""AdminService: enrollment tokens, revocation, merged signals, the audit log. Admin certificates only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import grpc
from fedsignal.v1 import admin_pb2, admin_pb2_grpc, common_pb2
from sqlalchemy.orm import Session

from server.audit import iter_audit, latest_head, verify_and_checkpoint
from server.context import ServerContext
from server.evaluation.sla import open_hotspots
from server.identity import enrollment as identity
from server.observability import log_event
from server.servicer import unit_of_work
from server.signals.views import DEFAULT_LIST_LIMIT, list_signals

log = logging.getLogger("fedsignal.server.admin")

AUDIT_PAGE_DEFAULT = 100
AUDIT_PAGE_MAX = 1000
#: Room left in a ListSignals answer for everything but the cells (field tags, k, next_offset).
PAGE_HEADROOM_BYTES = 16 * 1024


def signal_page(cells: Sequence[admin_pb2.MergedCell], budget: int) -> list[admin_pb2.MergedCell]:
    """The longest prefix of ``cells`` whose encoding fits ``budget`` bytes (at least one cell)."""
    page: list[admin_pb2.MergedCell] = []
    used = 0
    for cell in cells:
        size = cell.ByteSize() + 6  # the field's tag and length prefix
        if page and used + size > budget:
            break
        page.append(cell)
        used += size
    return page


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def CreateEnrollmentToken(self, request: admin_pb2.CreateEnrollmentTokenRequest,
                              context: grpc.ServicerContext) -> admin_pb2.CreateEnrollmentTokenResponse:
        ttl = timedelta(seconds=request.ttl_seconds or self._ctx.settings.enrollment_token_ttl_seconds)
        with unit_of_work(context, self._ctx, "admin") as call:
            token, expires_at = identity.create_enrollment_token(
                call.session, request.tenant_id, request.cohort, ttl, call.actor, self._ctx.clock()
            )
        log_event(log, "enrollment token created", tenant=request.tenant_id, cohort=request.cohort, by=call.actor)
        return admin_pb2.CreateEnrollmentTokenResponse(
            token=token, expires_at=expires_at.astimezone(UTC).isoformat(timespec="seconds")
        )

    def RevokeTenant(self, request: admin_pb2.RevokeTenantRequest,
                     context: grpc.ServicerContext) -> admin_pb2.RevokeTenantResponse:
        with unit_of_work(context, self._ctx, "admin") as call:
            if not request.reason.strip():
                raise identity.InvalidIdentityRequest("a revocation needs a reason (it goes to the audit log)")
            count = identity.revoke_tenant(call.session, request.tenant_id, request.reason, call.actor,
                                           self._ctx.clock())
        self._ctx.revocations.clear()
        log_event(log, "tenant revoked", tenant=request.tenant_id, certificates=count, by=call.actor)
        return admin_pb2.RevokeTenantResponse(certificates_revoked=count)

    def ListSignals(self, request: admin_pb2.ListSignalsRequest,
                    context: grpc.ServicerContext) -> admin_pb2.ListSignalsResponse:
        """One page of the ordered cells: at most ``limit``, and never more than fits the message limit."""
        wanted = request.limit or DEFAULT_LIST_LIMIT
        upto = admin_pb2.ListSignalsRequest()
        upto.CopyFrom(request)
        upto.offset = 0
        upto.limit = request.offset + wanted
        with unit_of_work(context, self._ctx, "admin") as call:
            full = list_signals(call.session, self._ctx.settings, upto)
            # Hotspots go on the first page only; they are few (one per open category and cohort).
            hotspots = hotspot_ages(call.session, self._ctx.clock(), request.cohort) if not request.offset else []
        cells = full.cells[request.offset:]
        page = signal_page(cells, self._ctx.settings.max_message_bytes - PAGE_HEADROOM_BYTES)
        more = len(page) < len(cells)
        return admin_pb2.ListSignalsResponse(cells=page, min_tenants=full.min_tenants, hotspots=hotspots,
                                             next_offset=request.offset + len(page) if more else 0)

    def GetAuditLog(self, request: admin_pb2.GetAuditLogRequest,
                    context: grpc.ServicerContext) -> admin_pb2.GetAuditLogResponse:
        limit = min(request.limit or AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX)
        with unit_of_work(context, self._ctx, "admin") as call:
            entries = [
                common_pb2.AuditEntry(seq=e.seq, at=e.at, actor=e.actor, kind=e.kind, payload_json=e.payload_json,
                                      prev_hash=e.prev_hash, hash=e.hash)
                for e in iter_audit(call.session, after_seq=request.after_seq, limit=limit)
            ]
        return admin_pb2.GetAuditLogResponse(entries=entries)

    def GetAuditHead(self, request: admin_pb2.GetAuditHeadRequest,
                     context: grpc.ServicerContext) -> admin_pb2.GetAuditHeadResponse:
        signer = self._ctx.online_signer
        with unit_of_work(context, self._ctx, "admin") as call:
            before = latest_head(call.session)
            verdict = None
            heads = [before] if before is not None else []
            if request.checkpoint:
                check = verify_and_checkpoint(call.session, signer, at=self._ctx.clock())
                verdict = check.verdict
                if check.head is not None and check.head != before:
                    heads.append(check.head)
        return admin_pb2.GetAuditHeadResponse(
            heads=[admin_pb2.SignedAuditHead(seq=h.seq, hash=h.hash, at=h.at, keyid=h.keyid, signature=h.signature)
                   for h in heads],
            public_key=signer.public_key.keyval["public"],
            verified=verdict.ok if verdict is not None else False,
            problem=(verdict.reason or "") if verdict is not None else "not checked (no checkpoint asked for)",
        )


def hotspot_ages(session: Session, now: datetime, cohort: str) -> list[admin_pb2.HotspotAge]:
    """Open hotspots with age and SLA, overdue first (server.evaluation.sla)."""
    return [admin_pb2.HotspotAge(cohort=h.cohort, category=h.category, stage=h.stage, candidate_id=h.candidate_id,
                                 age_seconds=h.age_seconds, sla_seconds=h.sla_seconds, overdue=h.overdue,
                                 reopened=h.reopened) for h in open_hotspots(session, now, cohort)]


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(ctx), grpc_server)
