"""One tenant's malformed strings must not fail other tenants' reports (issue 13, item 3).

On PostgreSQL a NUL byte in a text column makes the driver raise; before, that
happened inside the group-commit batch and every report of the batch answered
``UNKNOWN``. Now every string field is validated before a batch sees it, and a
row the database still refuses fails alone.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from server.context import ServerContext
from server.servicer import status_for
from server.signals import refusals
from server.signals.ingest import IngestOutcome, ReportIngest, Submitter
from server.signals.models import SignalReport
from server.signals.store import ReportStore, _Pending
from tests.server.signals.helpers import COHORT, WINDOW, cohort_schema, make_report

TENANTS = [f"t{i}" for i in range(12)]


def _stored(ctx: ServerContext) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SignalReport)) or 0)


@pytest.mark.parametrize("field", ["collector_version", "taxonomy_version", "idempotency_key"])
def test_a_nul_byte_in_any_string_field_is_refused_before_the_store(ctx: ServerContext, field: str) -> None:
    report = make_report(cohort_schema(ctx), "t0")
    setattr(report, field, getattr(report, field) + "\x00")
    with pytest.raises(refusals.ReportRefused) as refused:
        ReportIngest(ctx).submit(Submitter("t0", COHORT), report)
    assert status_for(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert _stored(ctx) == 0


def test_overlong_collector_version_is_refused_not_cut(ctx: ServerContext) -> None:
    report = make_report(cohort_schema(ctx), "t0")
    report.collector_version = "v" * 101
    with pytest.raises(refusals.TextFieldInvalid):
        ReportIngest(ctx).submit(Submitter("t0", COHORT), report)


@pytest.mark.postgres
def test_nul_in_one_tenants_report_does_not_fail_honest_reports_submitted_with_it(postgres_ctx: ServerContext) -> None:
    ctx = postgres_ctx
    schema = cohort_schema(ctx)
    ingest = ReportIngest(ctx)
    barrier = threading.Barrier(len(TENANTS))
    outcomes: dict[str, Any] = {}

    def submit(tenant: str) -> None:
        report = make_report(schema, tenant, window_start=WINDOW)
        if tenant == "t0":
            report.collector_version = "evil\x00collector"
        barrier.wait()
        try:
            outcomes[tenant] = ingest.submit(Submitter(tenant, COHORT), report).outcome
        except Exception as exc:
            outcomes[tenant] = exc

    threads = [threading.Thread(target=submit, args=(t,)) for t in TENANTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(outcomes["t0"], refusals.TextFieldInvalid)
    assert {t: outcomes[t] for t in TENANTS[1:]} == {t: IngestOutcome.ACCEPTED for t in TENANTS[1:]}
    assert _stored(ctx) == len(TENANTS) - 1


class _RowTap(ReportStore):
    """Records what the ingest would store (the rows, exactly as built) instead of storing them."""

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.taken: list[tuple[dict[str, Any], str, dict[str, Any]]] = []

    def store(self, row: dict[str, Any], actor: str, audit: dict[str, Any]) -> int | None:
        self.taken.append((row, actor, audit))
        return len(self.taken)


@pytest.mark.postgres
def test_a_row_the_database_refuses_fails_alone_in_its_batch(postgres_ctx: ServerContext) -> None:
    ctx = postgres_ctx
    schema = cohort_schema(ctx)
    tap = _RowTap(ctx)
    ingest = ReportIngest(ctx, store=tap)
    for tenant in TENANTS[:5]:
        ingest.submit(Submitter(tenant, COHORT), make_report(schema, tenant))
    rows = [dict(row) for row, _a, _p in tap.taken]
    rows[2]["collector_version"] = "bypassed\x00validation"  # what a missed check would let through
    batch = [_Pending(row, actor, audit, Future()) for row, (_r, actor, audit) in zip(rows, tap.taken, strict=True)]
    ReportStore(ctx)._commit(batch)  # one batch, as the writer thread would commit it
    assert batch[2].result.exception() is not None
    others = [p.result.result() for i, p in enumerate(batch) if i != 2]
    assert all(isinstance(report_id, int) for report_id in others)
    assert _stored(ctx) == 4


@pytest.fixture
def postgres_ctx(postgres_url: str, tmp_path: Any) -> Any:
    from tests.server.signals.helpers import make_context

    context = make_context(postgres_url, tmp_path / "state")
    try:
        yield context
    finally:
        context.engine.dispose()
