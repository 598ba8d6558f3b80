"""Incremental, idempotent merge of stored reports into per-window sums.

Work unit: one (cohort, window, schema version) with pending reports. In
one transaction the job adds the pending reports' cells and noise variances
to that window's :class:`MergedWindow` and stamps each report with the
window's new generation. A report is therefore merged exactly once, and a
late report just re-merges its window.

Replicas: on PostgreSQL each unit takes a transaction-scoped advisory lock
with ``pg_try_advisory_xact_lock``; a unit another replica is merging is
skipped (its pending reports are picked up by whichever run comes next).
Read-committed statements after the lock see every report the previous
holder stamped. On SQLite ``BEGIN IMMEDIATE`` serializes writers.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from server import metrics
from server.context import ServerContext
from server.db import transaction
from server.logs import log_event
from server.models.signals import MergedWindow, SignalReport

log = logging.getLogger(__name__)

# Units handled per run; the rest wait for the next run.
MAX_UNITS_PER_RUN = 500
# Reports summed per transaction of one unit (bounds memory and lock time).
MAX_REPORTS_PER_UNIT = 2000


@dataclass(frozen=True)
class MergeSummary:
    windows: int  # units whose merged row changed
    reports: int  # reports merged in this run
    skipped: int  # units another replica held


def _unit_lock_key(cohort: str, window_start: int, schema_version: int) -> int:
    raw = f"fedsignal.merge:{cohort}:{window_start}:{schema_version}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _try_lock(session: Session, key: int) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # BEGIN IMMEDIATE already holds the write lock
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar_one())


def _pending_units(ctx: ServerContext) -> list[tuple[str, int, int]]:
    with ctx.sessions() as session:
        rows = session.execute(
            select(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version)
            .where(SignalReport.merge_generation.is_(None))
            .distinct()
            .order_by(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version)
            .limit(MAX_UNITS_PER_RUN)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _merge_unit(session: Session, cohort: str, window_start: int, schema_version: int, now: datetime) -> int:
    """Merge the unit's pending reports; returns how many were merged."""
    pending = session.execute(
        select(
            SignalReport.id,
            SignalReport.tenant_id,
            SignalReport.window_end,
            SignalReport.noise_variance,
            SignalReport.cell_count,
            SignalReport.cells,
        )
        .where(
            SignalReport.cohort == cohort,
            SignalReport.window_start == window_start,
            SignalReport.schema_version == schema_version,
            SignalReport.merge_generation.is_(None),
        )
        .order_by(SignalReport.id)
        .limit(MAX_REPORTS_PER_UNIT)
    ).all()
    if not pending:
        return 0
    merged = session.scalars(
        select(MergedWindow)
        .where(
            MergedWindow.cohort == cohort,
            MergedWindow.window_start == window_start,
            MergedWindow.schema_version == schema_version,
        )
        .with_for_update()
    ).first()
    size = pending[0].cell_count
    if merged is None:
        merged = MergedWindow(
            cohort=cohort,
            window_start=window_start,
            window_end=pending[0].window_end,
            schema_version=schema_version,
            cells=np.zeros(size, dtype="<i8").tobytes(),
            variance=0.0,
            tenants=0,
            reports=0,
            generation=0,
            updated_at=now,
        )
        session.add(merged)
    total = np.frombuffer(merged.cells, dtype="<i8").copy()
    for report in pending:
        # Same schema version, so the same layout; ingest checked the length.
        total += np.frombuffer(report.cells, dtype="<i8")
    generation = merged.generation + 1
    merged.cells = total.tobytes()
    merged.variance = merged.variance + float(sum(r.noise_variance for r in pending))
    # ingest keeps one report per tenant and window, so new reports are new tenants.
    merged.tenants = merged.tenants + len({r.tenant_id for r in pending})
    merged.reports = merged.reports + len(pending)
    merged.generation = generation
    merged.updated_at = now
    ids = [r.id for r in pending]
    for i in range(0, len(ids), 500):
        session.execute(
            update(SignalReport)
            .where(SignalReport.id.in_(ids[i : i + 500]), SignalReport.merge_generation.is_(None))
            .values(merge_generation=generation)
        )
    return len(pending)


def merge_pending(ctx: ServerContext) -> MergeSummary:
    """Merge every pending report (bounded per run); safe on concurrent replicas."""
    windows = reports = skipped = 0
    merged_cohorts: set[str] = set()
    for cohort, window_start, schema_version in _pending_units(ctx):
        with transaction(ctx.sessions) as session:
            if not _try_lock(session, _unit_lock_key(cohort, window_start, schema_version)):
                skipped += 1
                continue
            merged = _merge_unit(session, cohort, window_start, schema_version, ctx.clock())
        if merged:
            merged_cohorts.add(cohort)
            windows += 1
            reports += merged
    _publish_lag(ctx, merged_cohorts)
    if reports:
        log_event(log, "merged reports", reports=reports, windows=windows, skipped=skipped)
    return MergeSummary(windows=windows, reports=reports, skipped=skipped)


def run_merge(ctx: ServerContext) -> None:
    """Periodic job entry point (see ``server.app.JOB_FUNCTIONS``)."""
    merge_pending(ctx)


def merge_lag_by_cohort(ctx: ServerContext) -> dict[str, float]:
    """Age in seconds of the oldest report still waiting to be merged, per cohort."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(SignalReport.cohort, func.min(SignalReport.received_at))
            .where(SignalReport.merge_generation.is_(None))
            .group_by(SignalReport.cohort)
        ).all()
    now = ctx.clock()
    lags = {}
    for cohort, oldest in rows:
        ref = now.replace(tzinfo=None) if oldest.tzinfo is None else now  # SQLite returns naive datetimes
        lags[cohort] = max(0.0, (ref - oldest).total_seconds())
    return lags


def _publish_lag(ctx: ServerContext, merged_cohorts: set[str]) -> None:
    lags = merge_lag_by_cohort(ctx)
    for cohort in merged_cohorts | set(lags):
        metrics.set_merge_lag(lags.get(cohort, 0.0), cohort)
    metrics.set_merge_lag(max(lags.values(), default=0.0), "")
