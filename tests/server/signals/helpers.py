"""Builders shared by the server-signals tests: contexts with a fixed clock, valid reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fedsignal.v1 import common_pb2

from aggregation import dp
from aggregation.schema import LOCAL, SignalSchema
from server.context import ServerContext, ServerSettings
from server.db import make_engine, make_sessionmaker, transaction
from server.migrate import init_db
from server.signals.schemas import current_schema, publish_aggregation

COHORT = "retail-eu"
# A fixed "now": windows are hourly; NOW sits well after WINDOW.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp())
SCALE = 4.0


def make_context(database_url: str, state_dir: Path, *, min_tenants: int = 3, now: datetime = NOW) -> ServerContext:
    engine = make_engine(database_url)
    init_db(engine)
    settings = ServerSettings(database_url=database_url, state_dir=state_dir, min_tenants=min_tenants,
                              insecure_dev=True)
    return ServerContext(settings=settings, engine=engine, sessions=make_sessionmaker(engine), clock=lambda: now)


def cohort_schema(ctx: ServerContext, cohort: str = COHORT) -> SignalSchema:
    """``cohort``'s schema in local mode (per-tenant reports, each at the schema's ``SCALE``): what these tests
    exercise."""
    with transaction(ctx.sessions) as session:
        current_schema(session, cohort, clock=ctx.clock)
        return publish_aggregation(session, cohort, LOCAL, SCALE, clock=ctx.clock)


def make_report(
    schema: SignalSchema,
    tenant: str,
    *,
    window_start: int = WINDOW,
    cells: Sequence[int] | np.ndarray | None = None,
    key: str | None = None,
    mechanism: dp.Mechanism = dp.Mechanism.DISCRETE_GAUSSIAN,
    scale: float = SCALE,
    seed: int = 0,
) -> common_pb2.DpReport:
    """A report that passes every check of ``schema`` (unless the test breaks it)."""
    params = dp.ReleaseParams(mechanism, scale, schema.max_cells_per_unit, schema.max_count_per_cell)
    loss = dp.privacy_loss(params)
    if cells is None:
        cells = np.random.default_rng(seed).integers(-5, 40, size=schema.size)
    return common_pb2.DpReport(
        # Keys live in the tenant's namespace ("<tenant>/..."), as the server requires.
        idempotency_key=f"{tenant}/{key or f'{window_start}-{uuid.uuid4().hex[:8]}'}",
        tenant_id=tenant,
        cohort=schema.cohort,
        schema_version=schema.version,
        taxonomy_version=schema.taxonomy_version,
        window_start=window_start,
        window_end=window_start + schema.window_seconds,
        mechanism=dp.mechanism_to_proto(mechanism),
        noise_scale=scale,
        sensitivity=params.sensitivity,
        max_cells_per_unit=schema.max_cells_per_unit,
        max_count_per_cell=schema.max_count_per_cell,
        privacy_loss=loss.to_proto(),
        cells=[int(c) for c in cells],
        collector_version="test",
    )
