"""Ingest: every bad report is refused with its own status and leaves the store unchanged;
resends are acknowledged once; a second, different report for a window is refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest
from fedsignal.v1 import common_pb2
from sqlalchemy import func, select

from aggregation.schema import SECURE
from server.audit import AuditRecord
from server.context import ServerContext
from server.db import transaction
from server.servicer import status_for
from server.signals import refusals
from server.signals.ingest import IngestOutcome, ReportIngest, Submitter
from server.signals.models import SignalReport
from server.signals.schemas import current_schema
from tests.server.signals.helpers import COHORT, NOW, WINDOW, cohort_schema, make_report

TENANT = Submitter("acme", COHORT)
Mutation = Callable[[common_pb2.DpReport], None]


def store_counts(ctx: ServerContext) -> tuple[int, int]:
    with ctx.sessions() as session:
        reports = session.scalar(select(func.count()).select_from(SignalReport))
        audits = session.scalar(select(func.count()).select_from(AuditRecord))
    return int(reports or 0), int(audits or 0)


def _set(**fields: object) -> Mutation:
    def mutate(report: common_pb2.DpReport) -> None:
        for name, value in fields.items():
            setattr(report, name, value)

    return mutate


def _drop_cell(report: common_pb2.DpReport) -> None:
    del report.cells[-1]


def _extra_cell(report: common_pb2.DpReport) -> None:
    report.cells.append(0)


def _huge_cell(report: common_pb2.DpReport) -> None:
    report.cells[0] = 1 << 50


def _overstated_rho(report: common_pb2.DpReport) -> None:
    report.privacy_loss.rho *= 2


def _understated_epsilon(report: common_pb2.DpReport) -> None:
    report.privacy_loss.epsilon /= 3


def _laplace_with_gaussian_loss(report: common_pb2.DpReport) -> None:
    report.mechanism = common_pb2.DISCRETE_LAPLACE
    report.sensitivity = float(report.max_cells_per_unit * report.max_count_per_cell)
    report.privacy_loss.delta = 0.0


BAD_REPORTS: dict[str, tuple[Mutation, type[refusals.ReportRefused], grpc.StatusCode]] = {
    "vector too short": (_drop_cell, refusals.VectorLengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "vector too long": (_extra_cell, refusals.VectorLengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "absurd cell value": (_huge_cell, refusals.CellOutOfRange, grpc.StatusCode.INVALID_ARGUMENT),
    "unknown schema version": (_set(schema_version=7), refusals.UnknownSchemaVersion, grpc.StatusCode.FAILED_PRECONDITION),
    "wrong taxonomy version": (
        _set(taxonomy_version="0.9.0"), refusals.TaxonomyVersionMismatch, grpc.StatusCode.FAILED_PRECONDITION
    ),
    "another tenant's id": (_set(tenant_id="globex"), refusals.ForeignTenant, grpc.StatusCode.PERMISSION_DENIED),
    "another cohort": (_set(cohort="retail-us"), refusals.ForeignCohort, grpc.StatusCode.PERMISSION_DENIED),
    "no idempotency key": (_set(idempotency_key=""), refusals.MissingIdempotencyKey, grpc.StatusCode.INVALID_ARGUMENT),
    "window too long": (_set(window_end=WINDOW + 7200), refusals.WindowOutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    "window off the grid": (
        _set(window_start=WINDOW + 60, window_end=WINDOW + 3660), refusals.WindowOutOfRange, grpc.StatusCode.OUT_OF_RANGE
    ),
    "window in the future": (
        _set(window_start=WINDOW + 3 * 3600, window_end=WINDOW + 4 * 3600),
        refusals.WindowOutOfRange,
        grpc.StatusCode.OUT_OF_RANGE,
    ),
    "window absurdly old": (
        _set(window_start=WINDOW - 3600 * 24 * 3650, window_end=WINDOW - 3600 * 24 * 3650 + 3600),
        refusals.WindowOutOfRange,
        grpc.StatusCode.OUT_OF_RANGE,
    ),
    "mechanism unset": (
        _set(mechanism=common_pb2.MECHANISM_UNSPECIFIED), refusals.MechanismMissing, grpc.StatusCode.INVALID_ARGUMENT
    ),
    "L0 differs from schema": (
        _set(max_cells_per_unit=32), refusals.ContributionBoundsMismatch, grpc.StatusCode.INVALID_ARGUMENT
    ),
    "Linf differs from schema": (
        _set(max_count_per_cell=3), refusals.ContributionBoundsMismatch, grpc.StatusCode.INVALID_ARGUMENT
    ),
    "negative noise scale": (_set(noise_scale=-4.0), refusals.NoiseScaleInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "zero noise scale": (_set(noise_scale=0.0), refusals.NoiseScaleInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "NaN noise scale": (_set(noise_scale=float("nan")), refusals.NoiseScaleInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "absurd noise scale": (_set(noise_scale=1e12), refusals.NoiseScaleInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    # The schema fixes the noise: a tenant's own scale (it would outweigh the others) is refused.
    "scale other than the schema's": (_set(noise_scale=2.0), refusals.NoiseScaleInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "overstated rho": (_overstated_rho, refusals.DeclaredLossInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "understated epsilon": (_understated_epsilon, refusals.DeclaredLossInvalid, grpc.StatusCode.INVALID_ARGUMENT),
    "mechanism other than the schema's": (
        _laplace_with_gaussian_loss, refusals.MechanismMismatch, grpc.StatusCode.INVALID_ARGUMENT
    ),
    "wrong sensitivity": (_set(sensitivity=1.0), refusals.SensitivityMismatch, grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("case", sorted(BAD_REPORTS))
def test_bad_report_is_refused_with_its_status_and_store_unchanged(ctx: ServerContext, case: str) -> None:
    mutate, error, status = BAD_REPORTS[case]
    report = make_report(cohort_schema(ctx), TENANT.tenant_id)
    mutate(report)
    before = store_counts(ctx)
    with pytest.raises(error) as refused:
        ReportIngest(ctx).submit(TENANT, report)
    assert status_for(refused.value) == status
    assert str(refused.value)
    assert store_counts(ctx) == before


def test_oversized_report_is_refused(ctx: ServerContext) -> None:
    ctx.settings = ctx.settings.with_changes(max_message_bytes=200)
    report = make_report(cohort_schema(ctx), TENANT.tenant_id)
    with pytest.raises(refusals.ReportTooLarge) as refused:
        ReportIngest(ctx).submit(TENANT, report)
    assert status_for(refused.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert store_counts(ctx) == (0, 0)


def test_accepted_report_is_stored_packed_and_audited_with_its_privacy_loss(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    report = make_report(schema, TENANT.tenant_id)
    result = ReportIngest(ctx).submit(TENANT, report)
    assert result.outcome is IngestOutcome.ACCEPTED
    with ctx.sessions() as session:
        row = session.scalars(select(SignalReport)).one()
        audit = session.scalars(select(AuditRecord).where(AuditRecord.kind == "report.accepted")).one()
    assert str(row.id) == result.report_id
    assert (row.tenant_id, row.cohort, row.window_start, row.merge_generation) == ("acme", COHORT, WINDOW, None)
    assert row.cells == b"".join(int(c).to_bytes(8, "little", signed=True) for c in report.cells)
    assert row.noise_variance > 0
    assert audit.actor == "acme"
    assert f'"epsilon":{report.privacy_loss.epsilon!r}' in audit.payload_json.replace(" ", "")
    assert f'"report_id":"{result.report_id}"' in audit.payload_json.replace(" ", "")


def test_resent_report_is_a_duplicate_stored_once(ctx: ServerContext) -> None:
    report = make_report(cohort_schema(ctx), TENANT.tenant_id)
    ingest_ = ReportIngest(ctx)
    first = ingest_.submit(TENANT, report)
    again = ingest_.submit(TENANT, report)
    assert (first.outcome, again.outcome) == (IngestOutcome.ACCEPTED, IngestOutcome.DUPLICATE)
    assert again.report_id == first.report_id
    assert store_counts(ctx) == (1, 1)


def test_different_report_for_the_same_window_is_refused(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    ingest_ = ReportIngest(ctx)
    ingest_.submit(TENANT, make_report(schema, TENANT.tenant_id, seed=1))
    with pytest.raises(refusals.ReportConflict) as refused:
        ingest_.submit(TENANT, make_report(schema, TENANT.tenant_id, seed=2))
    assert status_for(refused.value) == grpc.StatusCode.ALREADY_EXISTS
    assert store_counts(ctx) == (1, 1)


def test_same_key_with_other_content_is_refused(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    ingest_ = ReportIngest(ctx)
    ingest_.submit(TENANT, make_report(schema, TENANT.tenant_id, key="k-1", seed=1))
    later = make_report(schema, TENANT.tenant_id, key="k-1", seed=2, window_start=WINDOW - 3600)
    with pytest.raises(refusals.ReportConflict, match="already used"):
        ingest_.submit(TENANT, later)
    assert store_counts(ctx) == (1, 1)


def test_a_tenant_cannot_occupy_another_tenants_key(ctx: ServerContext) -> None:
    """Keys are per tenant: globex cannot squat acme's future key and block acme's report."""
    schema = cohort_schema(ctx)
    ingest_ = ReportIngest(ctx)
    squat = make_report(schema, "globex", seed=1, window_start=WINDOW - 3600)
    squat.idempotency_key = f"{TENANT.tenant_id}/{WINDOW}-k"
    with pytest.raises(refusals.MissingIdempotencyKey, match="namespace") as refused:
        ingest_.submit(Submitter("globex", COHORT), squat)
    assert status_for(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert store_counts(ctx) == (0, 0)
    genuine = make_report(schema, TENANT.tenant_id, key=f"{WINDOW}-k", seed=2)
    assert ingest_.submit(TENANT, genuine).outcome is IngestOutcome.ACCEPTED
    # The same suffix in globex's own namespace is a different key.
    assert ingest_.submit(Submitter("globex", COHORT), make_report(schema, "globex", key=f"{WINDOW}-k", seed=3)
                          ).outcome is IngestOutcome.ACCEPTED
    assert store_counts(ctx)[0] == 2


def test_window_closing_within_clock_skew_is_accepted(ctx: ServerContext) -> None:
    now = int(NOW.timestamp())
    start = now - now % 3600  # the window that is still open, ending within the hour
    report = make_report(cohort_schema(ctx), TENANT.tenant_id, window_start=start - 3600)
    assert ReportIngest(ctx).submit(TENANT, report).outcome is IngestOutcome.ACCEPTED
    open_window = make_report(cohort_schema(ctx), TENANT.tenant_id, window_start=start)
    with pytest.raises(refusals.WindowOutOfRange):
        ReportIngest(ctx).submit(TENANT, open_window)


def test_concurrent_submissions_are_group_committed_with_an_intact_audit_chain(ctx: ServerContext) -> None:
    import threading

    from server.audit import verify_audit

    schema = cohort_schema(ctx)
    ingest_ = ReportIngest(ctx)
    reports = [make_report(schema, f"t{i}", window_start=WINDOW - 3600 * w, seed=w) for i in range(6) for w in range(5)]
    outcomes: list[IngestOutcome] = []

    def send(chunk: list[common_pb2.DpReport]) -> None:
        for r in chunk:
            outcomes.append(ingest_.submit(Submitter(r.tenant_id, COHORT), r).outcome)
            outcomes.append(ingest_.submit(Submitter(r.tenant_id, COHORT), r).outcome)  # resend

    threads = [threading.Thread(target=send, args=(reports[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(IngestOutcome.ACCEPTED) == len(reports) == outcomes.count(IngestOutcome.DUPLICATE)
    assert store_counts(ctx) == (len(reports), len(reports))
    with ctx.sessions() as session:
        verdict = verify_audit(session)
        ids = {r.id for r in session.scalars(select(SignalReport))}
        audited = {json.loads(a.payload_json)["report_id"] for a in session.scalars(select(AuditRecord))}
    assert verdict.ok and verdict.checked == len(reports)
    assert audited == {str(i) for i in ids}


def test_a_per_tenant_report_for_a_secure_cohort_is_refused(ctx: ServerContext) -> None:
    # A secure cohort's windows are its rounds' sums: a per-tenant report beside them, at a
    # tiny scale of the tenant's choosing, would outweigh every other tenant's evidence.
    with transaction(ctx.sessions) as session:
        secure = current_schema(session, "secure-cohort", clock=ctx.clock)
    assert secure.aggregation_mode == SECURE
    report = make_report(secure, TENANT.tenant_id, scale=0.5)
    report.cohort = "secure-cohort"
    tenant = Submitter(TENANT.tenant_id, "secure-cohort")
    before = store_counts(ctx)
    with pytest.raises(refusals.SecureCohortReport) as refused:
        ReportIngest(ctx).submit(tenant, report)
    assert status_for(refused.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert "secure aggregation" in str(refused.value)
    assert store_counts(ctx) == before
