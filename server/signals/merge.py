"""Incremental, idempotent merge of stored reports into per-window sums.

Work unit: one (cohort, window, schema version) with pending reports. In
one transaction (several units share one) the job adds the pending reports'
cells and noise variances to the unit's :class:`MergedWindow` and stamps
each report with the window's new generation. A report is therefore merged exactly once, and a
late report just re-merges its window.

Replicas: on PostgreSQL each unit takes a transaction-scoped advisory lock
with ``pg_try_advisory_xact_lock`` (one statement for the whole chunk); a
unit another replica is merging is skipped (its pending reports are picked up by whichever run comes next).
Read-committed statements after the lock see every report the previous
holder stamped. On SQLite ``BEGIN IMMEDIATE`` serializes writers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg.rows import namedtuple_row
from sqlalchemy import Select, bindparam, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from server.context import ServerContext
from server.db import transaction
from server.observability import log_event
from server.signals.models import MergedWindow, SignalReport

log = logging.getLogger(__name__)

# Units handled per run; the rest wait for the next run.
MAX_UNITS_PER_RUN = 2000
# Units merged in one transaction (a fixed number of round trips per chunk).
UNITS_PER_TRANSACTION = 50
# Reports read per transaction (bounds memory: a report is 8 bytes per cell); the rest stay
# pending for the next chunk or run.
MAX_REPORTS_PER_TRANSACTION = 2000

Unit = tuple[str, int, int]  # (cohort, window_start, schema_version)


@dataclass(frozen=True)
class MergeSummary:
    windows: int  # units whose merged row changed
    reports: int  # reports merged in this run
    skipped: int  # units another replica held


def _unit_lock_key(unit: Unit) -> int:
    cohort, window_start, schema_version = unit
    raw = f"fedsignal.merge:{cohort}:{window_start}:{schema_version}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _try_lock(session: Session, units: list[Unit]) -> list[Unit]:
    """The units this transaction now holds; units another replica holds are left out."""
    if session.get_bind().dialect.name != "postgresql":
        return units  # BEGIN IMMEDIATE already holds the write lock
    keys = {_unit_lock_key(u): u for u in units}
    got = session.execute(
        text("SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_xact_lock(k)"),
        {"keys": list(keys)},
    ).scalars()
    return [keys[k] for k in got]


def _pending_units(ctx: ServerContext) -> list[Unit]:
    with ctx.sessions() as session:
        rows = session.execute(
            select(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version)
            .where(SignalReport.merge_generation.is_(None))
            .distinct()
            .order_by(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version)
            .limit(MAX_UNITS_PER_RUN)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _unit_of(row: Any) -> Unit:
    return (row.cohort, row.window_start, row.schema_version)


def _fetch(session: Session, stmt: Select[Any, *tuple[Any, ...]]) -> Sequence[Any]:
    """Rows of ``stmt`` (attribute access by column name) in the session's transaction.

    PostgreSQL: through psycopg with binary results, so each report's cells arrive as raw
    bytes; in the default text format the server hex-encodes every bytea and the driver
    decodes it again (measured: ~5x the CPU on both sides for 2,000 16 KB reports).
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return session.execute(stmt).all()
    compiled = stmt.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.driver_connection
    with driver.cursor(binary=True, row_factory=namedtuple_row) as cursor:  # type: ignore[union-attr]
        cursor.execute(str(compiled), compiled.params)
        return cursor.fetchall()


def _merge_units(session: Session, units: list[Unit], now: datetime) -> dict[Unit, int]:
    """Merge the pending reports of ``units`` (already locked); returns reports merged per unit."""
    unit_key = tuple_(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version)
    pending = _fetch(
        session,
        select(
            SignalReport.id,
            SignalReport.cohort,
            SignalReport.window_start,
            SignalReport.schema_version,
            SignalReport.tenant_id,
            SignalReport.window_end,
            SignalReport.noise_variance,
            SignalReport.cell_count,
            SignalReport.cells,
        )
        .where(SignalReport.merge_generation.is_(None), unit_key.in_(units))
        .order_by(SignalReport.id)
        .limit(MAX_REPORTS_PER_TRANSACTION),
    )
    by_unit: dict[Unit, list[Any]] = {}
    for r in pending:
        by_unit.setdefault(_unit_of(r), []).append(r)
    if not by_unit:
        return {}
    merged_key = tuple_(MergedWindow.cohort, MergedWindow.window_start, MergedWindow.schema_version)
    existing = {
        _unit_of(m): m
        for m in session.scalars(select(MergedWindow).where(merged_key.in_(list(by_unit))).with_for_update())
    }
    stamps: list[dict[str, int]] = []
    for unit, reports in by_unit.items():
        merged = existing.get(unit)
        if merged is None:
            merged = MergedWindow(
                cohort=unit[0], window_start=unit[1], window_end=reports[0].window_end, schema_version=unit[2],
                cells=np.zeros(reports[0].cell_count, dtype="<i8").tobytes(),
                variance=0.0, tenants=0, reports=0, generation=0, updated_at=now,
            )
            session.add(merged)
        total = np.frombuffer(merged.cells, dtype="<i8").copy()
        for report in reports:
            # Same schema version, so the same layout; ingest checked the length.
            total += np.frombuffer(report.cells, dtype="<i8")
        merged.generation = merged.generation + 1
        merged.cells = total.tobytes()
        merged.variance = merged.variance + float(sum(r.noise_variance for r in reports))
        # ingest keeps one report per tenant and window, so new reports are new tenants.
        merged.tenants = merged.tenants + len({r.tenant_id for r in reports})
        merged.reports = merged.reports + len(reports)
        merged.updated_at = now
        stamps.extend({"rid": r.id, "generation": merged.generation} for r in reports)
    session.flush()
    session.connection().execute(
        update(SignalReport)
        .where(SignalReport.id == bindparam("rid"), SignalReport.merge_generation.is_(None))
        .values(merge_generation=bindparam("generation")),
        stamps,
    )
    return {unit: len(reports) for unit, reports in by_unit.items()}


def merge_pending(ctx: ServerContext) -> MergeSummary:
    """Merge every pending report (bounded per run); safe on concurrent replicas."""
    windows = reports = skipped = 0
    merged_cohorts: set[str] = set()
    units = _pending_units(ctx)
    for i in range(0, len(units), UNITS_PER_TRANSACTION):
        chunk = units[i : i + UNITS_PER_TRANSACTION]
        with transaction(ctx.sessions) as session:
            held = _try_lock(session, chunk)
            skipped += len(chunk) - len(held)
            merged = _merge_units(session, held, ctx.clock()) if held else {}
        for unit, count in merged.items():
            merged_cohorts.add(unit[0])
            windows += 1
            reports += count
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
        ctx.metrics.set_merge_lag(lags.get(cohort, 0.0), cohort)
