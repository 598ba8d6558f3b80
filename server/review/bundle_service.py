"""BundleService: a tenant pulls its cohort's signed bundle and reports what it runs.

The cohort comes from the tenant's certificate: a tenant can only ever
receive its own cohort's bundle. Trust-root versions after the tenant's are
sent along so the tenant can follow rotations.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from fedsignal.v1 import bundles_pb2, bundles_pb2_grpc

from aggregation.errors import ResourceExhausted
from server.audit import append_audit
from server.context import ServerContext
from server.review.bundles import bundle_artifacts, current_bundle
from server.review.models import TenantBundleStatus
from server.review.trust_root import TrustRootMissing, current_root_version, root_chain
from server.review.workflow import now_text
from server.servicer import RateLimiter, check_text, unit_of_work

#: Longest stored ``ReportStatusRequest.detail`` (a short machine-readable reason; longer ones are cut).
MAX_STATUS_DETAIL_CHARS = 200


class StatusReportsTooFrequent(ResourceExhausted):
    """A tenant reports its bundle status more often than the server records it."""


class BundleServicer(bundles_pb2_grpc.BundleServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        # Each status change is an audit entry under the chain's global lock; a flapping
        # collector must not turn that into a write per call.
        self._status_limit = RateLimiter(ctx.clock, ctx.settings.status_reports_per_minute, timedelta(minutes=1))

    def GetBundle(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        with unit_of_work(context, self._ctx, "tenant") as call:
            session = call.session
            root_version = current_root_version(session)
            if root_version == 0:
                raise TrustRootMissing("no trust root is installed; reviewers run `fedsignal admin root init` first")
            record = current_bundle(session, self._ctx, call.cohort)
            if request.installed_version == record.version and request.root_version >= root_version:
                return bundles_pb2.GetBundleResponse(up_to_date=True)
            return bundles_pb2.GetBundleResponse(
                up_to_date=False,
                root_chain=root_chain(session, request.root_version) if request.root_version < root_version else [],
                bundle_metadata=record.metadata_json.encode("utf-8"),
                artifacts=[bundles_pb2.Artifact(name=n, content=c) for n, c in bundle_artifacts(session, record)],
            )

    def ReportStatus(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        now = self._ctx.clock()
        with unit_of_work(context, self._ctx, "tenant") as call:
            tenant, cohort, session = call.caller.subject, call.cohort, call.session
            # A longer reason is cut (it is advisory); a NUL or control character is refused.
            detail = check_text(request.detail[:MAX_STATUS_DETAIL_CHARS], "detail", max_chars=MAX_STATUS_DETAIL_CHARS)
            if not self._status_limit.allow(tenant):
                raise StatusReportsTooFrequent(
                    f"tenant {tenant!r} reported its bundle status more than "
                    f"{self._ctx.settings.status_reports_per_minute} times in a minute; report again later"
                )
            row = session.get(TenantBundleStatus, tenant)
            changed = row is None or (row.active_version, row.healthy, row.detail) != (
                request.active_version, request.healthy, detail)
            if row is None:
                row = TenantBundleStatus(tenant_id=tenant, cohort=cohort, reported_at=now_text(now))
                session.add(row)
            row.cohort = cohort
            row.active_version = request.active_version
            row.previous_version = request.previous_version
            row.healthy = request.healthy
            row.detail = detail
            row.reported_at = now_text(now)
            if changed:  # audit what changed, not every heartbeat
                append_audit(session, f"tenant:{tenant}", "bundle.status",
                             {"tenant_id": tenant, "cohort": cohort, "active_version": request.active_version,
                              "previous_version": request.previous_version, "healthy": request.healthy,
                              "detail": detail}, at=now)
        return bundles_pb2.ReportStatusResponse()


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    bundles_pb2_grpc.add_BundleServiceServicer_to_server(BundleServicer(ctx), grpc_server)
