"""The periodic secure-aggregation job: close rounds at their deadline, release or abort them.

Safe on concurrent replicas: rounds are taken with ``FOR UPDATE SKIP LOCKED``
(PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes writers), and every step
re-reads the phase under that lock, so no round is closed or unmasked twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.context import ServerContext
from server.db import read_connection
from server.observability import log_event
from server.secagg import metrics as secagg_metrics
from server.secagg.models import ABORTED, COLLECTING, DONE, UNMASKING
from server.secagg.rounds import (
    aware,
    close_round,
    due_rounds,
    rounds_needing_work,
    settings_for,
    try_release,
)
from server.secagg.service import write_transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSummary:
    closed: int
    released: int
    aborted: int


def run_rounds(ctx: ServerContext) -> JobSummary:
    """One pass over the open rounds."""
    with secagg_metrics.bound(ctx.metrics.registry):
        return _run_rounds(ctx)


def _run_rounds(ctx: ServerContext) -> JobSummary:
    closed = released = aborted = 0
    settings = settings_for(ctx)
    with read_connection(ctx.read_engine) as conn:  # most passes find nothing to do: no write transaction
        if not rounds_needing_work(conn, ctx.clock()):
            return JobSummary(0, 0, 0)
    with write_transaction(ctx) as session:
        now = ctx.clock()
        for row in due_rounds(session, now):
            if row.phase == COLLECTING and now >= aware(row.submit_deadline, now):
                outcome = close_round(session, row, now, settings)
                closed += outcome.phase == UNMASKING
                aborted += outcome.phase == ABORTED
            if row.phase == UNMASKING:
                deadline = row.unmask_deadline
                final = deadline is not None and now >= aware(deadline, now)
                phase = try_release(session, row, now, final=final)
                released += phase == DONE
                aborted += phase == ABORTED
    if closed or released or aborted:
        log_event(log, "secagg rounds", closed=closed, released=released, aborted=aborted)
    return JobSummary(closed, released, aborted)


def run_secagg(ctx: ServerContext) -> None:
    """Periodic job entry point (``server.app.JOBS``)."""
    run_rounds(ctx)
