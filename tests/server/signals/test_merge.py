"""Merge: per-window sums equal the stored reports, nothing twice, late reports re-merge,
k-suppression, cross-version merge by cell key, rates with intervals."""

from __future__ import annotations

import threading

import numpy as np
from fedsignal.v1 import admin_pb2
from sqlalchemy import select

from aggregation import stats
from aggregation.schema import SignalSchema
from server.context import ServerContext
from server.db import transaction
from server.signals.ingest import ReportIngest, Submitter
from server.signals.merge import merge_pending
from server.signals.models import MergedWindow, SignalReport
from server.signals.schemas import publish_artifact_versions
from server.signals.views import list_signals, merged_cells
from tests.server.signals.helpers import COHORT, WINDOW, cohort_schema, make_report


def submit(ctx: ServerContext, schema: SignalSchema, tenant: str, **kwargs: object) -> None:
    ReportIngest(ctx).submit(Submitter(tenant, COHORT), make_report(schema, tenant, **kwargs))  # type: ignore[arg-type]


def assert_merged_equals_stored(ctx: ServerContext) -> None:
    """Every merged row is exactly the sum of the reports stamped into it; nothing pending."""
    with ctx.sessions() as session:
        reports = session.scalars(select(SignalReport)).all()
        merged = session.scalars(select(MergedWindow)).all()
    assert all(r.merge_generation is not None for r in reports)
    for row in merged:
        mine = [r for r in reports if (r.cohort, r.window_start, r.schema_version) == (row.cohort, row.window_start, row.schema_version)]
        expected = sum(np.frombuffer(r.cells, dtype="<i8") for r in mine)
        assert np.array_equal(np.frombuffer(row.cells, dtype="<i8"), expected)
        assert row.reports == len(mine) == row.tenants
        assert row.variance == sum(r.noise_variance for r in mine)
        assert max(r.merge_generation or 0 for r in mine) == row.generation
    assert sum(row.reports for row in merged) == len(reports)


def test_merged_window_is_the_sum_of_its_reports_and_rerun_merges_nothing(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    for i, tenant in enumerate(["a", "b", "c"]):
        submit(ctx, schema, tenant, seed=i)
        submit(ctx, schema, tenant, seed=10 + i, window_start=WINDOW - 3600)
    first = merge_pending(ctx)
    second = merge_pending(ctx)
    assert (first.windows, first.reports) == (2, 6)
    assert (second.windows, second.reports) == (0, 0)
    assert_merged_equals_stored(ctx)


def test_late_report_re_merges_its_window_only(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    submit(ctx, schema, "a", seed=1)
    submit(ctx, schema, "b", seed=2)
    submit(ctx, schema, "a", seed=3, window_start=WINDOW - 3600)
    merge_pending(ctx)
    submit(ctx, schema, "c", seed=4)  # late for WINDOW
    late = merge_pending(ctx)
    assert (late.windows, late.reports) == (1, 1)
    with ctx.sessions() as session:
        rows = {r.window_start: r for r in session.scalars(select(MergedWindow))}
    assert (rows[WINDOW].generation, rows[WINDOW].tenants) == (2, 3)
    assert (rows[WINDOW - 3600].generation, rows[WINDOW - 3600].tenants) == (1, 1)
    assert_merged_equals_stored(ctx)


def test_concurrent_ingest_and_merge_merge_every_report_once(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)
    stop = threading.Event()
    errors: list[BaseException] = []

    def merger() -> None:
        try:
            while not stop.is_set():
                merge_pending(ctx)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def tenant(name: str) -> None:
        try:
            for w in range(6):
                submit(ctx, schema, name, seed=w, window_start=WINDOW - 3600 * w)
        except BaseException as exc:
            errors.append(exc)

    mergers = [threading.Thread(target=merger) for _ in range(2)]
    tenants = [threading.Thread(target=tenant, args=(f"t{i}",)) for i in range(4)]
    for t in mergers + tenants:
        t.start()
    for t in tenants:
        t.join()
    stop.set()
    for t in mergers:
        t.join()
    merge_pending(ctx)
    assert errors == []
    assert_merged_equals_stored(ctx)
    with ctx.sessions() as session:
        assert sum(r.reports for r in session.scalars(select(MergedWindow))) == 24


def _table(schema: SignalSchema, values: dict[tuple[str, str, str], int]) -> np.ndarray:
    cells = np.zeros(schema.size, dtype=np.int64)
    for (measure, intent, version), v in values.items():
        cells[schema.cell_index({"measure": measure, "intent": intent, "artifact_version": version})] = v
    return cells


def test_cells_below_k_tenants_are_withheld(ctx: ServerContext) -> None:
    schema = cohort_schema(ctx)  # k = 3 in these tests
    table = _table(schema, {("turns", "billing", "baseline"): 100, ("wrong_tool", "billing", "baseline"): 30})
    for tenant in ("a", "b"):
        submit(ctx, schema, tenant, cells=table)
    merge_pending(ctx)
    with ctx.sessions() as session:
        hidden = list_signals(session, ctx.settings, admin_pb2.ListSignalsRequest(cohort=COHORT))
        shown = list_signals(session, ctx.settings, admin_pb2.ListSignalsRequest(include_suppressed=True))
    assert (len(hidden.cells), hidden.min_tenants) == (0, 3)
    assert shown.cells and all(c.suppressed and c.estimate == 0 and c.tenants == 2 for c in shown.cells)
    submit(ctx, schema, "c", cells=table)
    merge_pending(ctx)
    with ctx.sessions() as session:
        released = list_signals(session, ctx.settings, admin_pb2.ListSignalsRequest(cohort=COHORT))
    cell = next(c for c in released.cells if c.measure == "wrong_tool" and c.slice["intent"] == "billing"
                and c.slice["artifact_version"] == "baseline")
    assert (cell.estimate, cell.tenants, cell.suppressed) == (90, 3, False)
    assert cell.rate == 0.3
    var = 3 * stats.noise_variance("discrete_gaussian", 4.0)
    assert (cell.rate, cell.rate_low, cell.rate_high) == stats.ratio_interval(90, var, 300, var, 0.95)
    assert cell.rate_low < 0.3 < cell.rate_high
    harms = [-c.z_score if c.measure == "task_success" else c.z_score for c in released.cells]
    assert harms == sorted(harms, reverse=True)


def test_harmful_deviations_lead_the_table(ctx: ServerContext) -> None:
    """A failure-rate rise and a task-success drop sort above an unusually clean slice."""
    schema = cohort_schema(ctx)
    table = _table(schema, {
        ("turns", "billing", "baseline"): 400, ("wrong_tool", "billing", "baseline"): 160,
        ("task_success", "billing", "baseline"): 120,
        ("turns", "refund", "baseline"): 400, ("wrong_tool", "refund", "baseline"): 0,
        ("task_success", "refund", "baseline"): 390,
        ("turns", "account", "baseline"): 400, ("wrong_tool", "account", "baseline"): 40,
        ("task_success", "account", "baseline"): 300,
    })
    for tenant in ("a", "b", "c"):
        submit(ctx, schema, tenant, cells=table)
    merge_pending(ctx)
    with ctx.sessions() as session:
        released = list_signals(session, ctx.settings, admin_pb2.ListSignalsRequest(cohort=COHORT))
    order = [(c.measure, c.slice["intent"]) for c in released.cells
             if c.slice["artifact_version"] == "baseline" and c.measure in ("wrong_tool", "task_success")]
    top = set(order[:2])
    assert top == {("wrong_tool", "billing"), ("task_success", "billing")}
    assert order.index(("wrong_tool", "refund")) > order.index(("wrong_tool", "account"))
    assert order.index(("task_success", "refund")) > order.index(("task_success", "account"))
    # Slices without traffic (only noise in their turns) carry no significance.
    idle = [c for c in released.cells if c.slice["intent"] == "shipping"]
    assert idle and all(c.z_score == 0 for c in idle)


def test_schema_versions_of_one_window_merge_by_cell_key(ctx: ServerContext) -> None:
    v1 = cohort_schema(ctx)
    with transaction(ctx.sessions) as session:
        v2 = publish_artifact_versions(session, COHORT, ["baseline", "cand-1"])
    base = {("turns", "refund", "baseline"): 50, ("timeout", "refund", "baseline"): 5}
    for tenant in ("a", "b", "c"):
        submit(ctx, v1, tenant, cells=_table(v1, base))
    canary = {**base, ("turns", "refund", "cand-1"): 20, ("timeout", "refund", "cand-1"): 8}
    for tenant in ("d", "e"):
        submit(ctx, v2, tenant, cells=_table(v2, canary))
    merge_pending(ctx)
    with ctx.sessions() as session:
        cells = merged_cells(session, COHORT, ctx.settings)
        assert {r.schema_version for r in session.scalars(select(MergedWindow))} == {v1.version, v2.version}
    by_key = {(c.measure, c.slice["intent"], c.slice["artifact_version"]): c for c in cells}
    baseline = by_key[("timeout", "refund", "baseline")]
    assert (baseline.estimate, baseline.turns_estimate, baseline.tenants) == (25, 250, 5)
    candidate = by_key[("timeout", "refund", "cand-1")]
    assert (candidate.tenants, candidate.suppressed) == (2, True)
    assert candidate.estimate == 0  # withheld below k
    assert by_key[("timeout", "refund", "other")].tenants == 5
    assert_merged_equals_stored(ctx)
