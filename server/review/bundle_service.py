"""BundleService: a tenant pulls its cohort's signed bundle and reports what it runs.

The cohort comes from the tenant's certificate: a tenant can only ever
receive its own cohort's bundle. Trust-root versions after the tenant's are
sent along so the tenant can follow rotations.
"""

from __future__ import annotations

import grpc
from fedsignal.v1 import bundles_pb2, bundles_pb2_grpc

from aggregation.errors import FedsignalError
from server.audit import append_audit
from server.context import ServerContext
from server.db import transaction
from server.identity.auth import require
from server.review.bundles import bundle_artifacts, current_bundle
from server.review.models import TenantBundleStatus
from server.review.trust_root import TrustRootMissing, current_root_version, root_chain
from server.review.workflow import now_text


class BundleServicer(bundles_pb2_grpc.BundleServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def _cohort(self, context: grpc.ServicerContext) -> tuple[str, str]:
        identity = require(context, self._ctx, "tenant")
        if not identity.cohort:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"the certificate of tenant {identity.subject!r} names no cohort; re-enroll the collector")
        return identity.subject, identity.cohort or ""

    def GetBundle(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        _tenant, cohort = self._cohort(context)
        try:
            with transaction(self._ctx.sessions) as session:
                root_version = current_root_version(session)
                if root_version == 0:
                    raise TrustRootMissing("no trust root is installed; reviewers run `fedsignal admin root init` first")
                record = current_bundle(session, self._ctx, cohort)
                if request.installed_version == record.version and request.root_version >= root_version:
                    return bundles_pb2.GetBundleResponse(up_to_date=True)
                return bundles_pb2.GetBundleResponse(
                    up_to_date=False,
                    root_chain=root_chain(session, request.root_version) if request.root_version < root_version else [],
                    bundle_metadata=record.metadata_json.encode("utf-8"),
                    artifacts=[bundles_pb2.Artifact(name=n, content=c) for n, c in bundle_artifacts(session, record)],
                )
        except TrustRootMissing as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except FedsignalError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def ReportStatus(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        tenant, cohort = self._cohort(context)
        now = self._ctx.clock()
        with transaction(self._ctx.sessions) as session:
            row = session.get(TenantBundleStatus, tenant)
            changed = row is None or (row.active_version, row.healthy, row.detail) != (
                request.active_version, request.healthy, request.detail)
            if row is None:
                row = TenantBundleStatus(tenant_id=tenant, cohort=cohort, reported_at=now_text(now))
                session.add(row)
            row.cohort = cohort
            row.active_version = request.active_version
            row.previous_version = request.previous_version
            row.healthy = request.healthy
            row.detail = request.detail[:200]
            row.reported_at = now_text(now)
            if changed:  # audit what changed, not every heartbeat
                append_audit(session, f"tenant:{tenant}", "bundle.status",
                             {"tenant_id": tenant, "cohort": cohort, "active_version": request.active_version,
                              "previous_version": request.previous_version, "healthy": request.healthy,
                              "detail": request.detail[:200]}, at=now)
        return bundles_pb2.ReportStatusResponse()


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    bundles_pb2_grpc.add_BundleServiceServicer_to_server(BundleServicer(ctx), grpc_server)
