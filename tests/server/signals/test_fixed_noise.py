"""Every schema fixes its cohort's noise: no tenant declares its own scale (local mode included).

Schema versions of earlier releases fixed none (each tenant declared its scale, and one that declared
a tiny one outweighed every other in the merge). The upgrade publishes the next version with the scale
fixed (migration ``0005_fixed_noise``); a report naming a legacy version is accepted only for a window
that ended before that cut-over.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from aggregation import dp
from aggregation.schema import LOCAL, SECURE, SignalSchema, default_schema
from server.context import ServerContext
from server.db import make_engine, make_sessionmaker, transaction
from server.migrate import head_revision, upgrade
from server.servicer import status_for
from server.signals import refusals
from server.signals.ingest import IngestOutcome, ReportIngest, Submitter
from server.signals.models import SignalReport, SignalSchemaVersion
from server.signals.schemas import (
    NoiseScaleRequired,
    current_schema,
    fix_legacy_noise,
    fixed_noise_scale,
    get_schema,
    publish_aggregation,
)
from tests.server.signals.helpers import COHORT, NOW, WINDOW, make_report

TENANT = Submitter("acme", COHORT)
WINDOW_END = datetime.fromtimestamp(WINDOW + 3600, NOW.tzinfo)


def seed_legacy(ctx: ServerContext, cohort: str = COHORT, version: int = 1) -> SignalSchema:
    """A cohort whose newest version is an earlier release's: local mode, no noise scale."""
    legacy = default_schema(cohort, version=version)
    assert (legacy.aggregation_mode, legacy.noise_scale) == (LOCAL, 0.0)
    with transaction(ctx.sessions) as session:
        session.add(SignalSchemaVersion(cohort=cohort, version=version, document=legacy.to_json(),
                                        created_at=NOW - timedelta(days=30)))
    return legacy


def reports(ctx: ServerContext) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(SignalReport)) or 0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_publishing_a_schema_without_a_fixed_scale_is_refused(ctx: ServerContext, scale: float) -> None:
    with transaction(ctx.sessions) as session:
        before = current_schema(session, COHORT)
    with pytest.raises(NoiseScaleRequired, match="must be positive and finite"), \
            transaction(ctx.sessions) as session:
        publish_aggregation(session, COHORT, LOCAL, scale)
    with ctx.sessions() as session:
        assert current_schema(session, COHORT) == before


def test_the_cut_over_fixes_each_legacy_cohort_once_and_leaves_fixed_cohorts_alone(ctx: ServerContext) -> None:
    legacy = seed_legacy(ctx)
    with transaction(ctx.sessions) as session:
        fixed_before = current_schema(session, "already-fixed")  # a new cohort: secure, scale fixed
        published = fix_legacy_noise(session, NOW)
    [fixed] = published
    assert (fixed.cohort, fixed.version, fixed.aggregation_mode) == (COHORT, 2, LOCAL)
    assert fixed.noise_scale == fixed_noise_scale(legacy) > 0
    # The scale is the one that gives one release of the schema's bounds the default rho.
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, fixed.noise_scale, fixed.max_cells_per_unit,
                              fixed.max_count_per_cell)
    assert dp.privacy_loss(params).rho == pytest.approx(0.01, rel=1e-6)
    assert (fixed.dimensions, fixed.window_seconds, fixed.taxonomy_version) == (
        legacy.dimensions, legacy.window_seconds, legacy.taxonomy_version)
    with transaction(ctx.sessions) as session:
        assert fix_legacy_noise(session, NOW) == []  # idempotent
        assert current_schema(session, "already-fixed") == fixed_before
        assert get_schema(session, COHORT, 1) == legacy  # versions stay immutable


def test_a_legacy_version_without_a_cut_over_is_refused_whatever_its_scale(ctx: ServerContext) -> None:
    legacy = seed_legacy(ctx)
    for mechanism, scale in [(dp.Mechanism.DISCRETE_GAUSSIAN, 4.0), (dp.Mechanism.DISCRETE_GAUSSIAN, 0.5),
                             (dp.Mechanism.DISCRETE_LAPLACE, 20.0)]:
        report = make_report(legacy, TENANT.tenant_id, mechanism=mechanism, scale=scale)
        with pytest.raises(refusals.NoiseScaleUnfixed) as refused:
            ReportIngest(ctx).submit(TENANT, report)
        assert status_for(refused.value) == grpc.StatusCode.FAILED_PRECONDITION
        assert "fixes no noise scale" in str(refused.value)
    assert reports(ctx) == 0


def test_a_legacy_report_for_a_window_before_the_cut_over_is_kept(ctx: ServerContext) -> None:
    """What sat in an outbox across the upgrade is not lost: it was made before any scale was fixed."""
    legacy = seed_legacy(ctx)
    with transaction(ctx.sessions) as session:
        fix_legacy_noise(session, WINDOW_END)  # the window ended exactly at the cut-over
    report = make_report(legacy, TENANT.tenant_id, mechanism=dp.Mechanism.DISCRETE_LAPLACE, scale=20.0)
    assert ReportIngest(ctx).submit(TENANT, report).outcome is IngestOutcome.ACCEPTED
    assert reports(ctx) == 1


def test_a_legacy_report_for_a_window_after_the_cut_over_is_refused(ctx: ServerContext) -> None:
    """The attack: name the legacy version to declare a tiny scale (and outweigh everyone) in a new window."""
    legacy = seed_legacy(ctx)
    with transaction(ctx.sessions) as session:
        fix_legacy_noise(session, WINDOW_END - timedelta(seconds=1))
    tiny = make_report(legacy, TENANT.tenant_id, scale=0.5)
    with pytest.raises(refusals.NoiseScaleUnfixed):
        ReportIngest(ctx).submit(TENANT, tiny)
    assert reports(ctx) == 0


def test_the_fixed_version_takes_its_scale_only(ctx: ServerContext) -> None:
    seed_legacy(ctx)
    with transaction(ctx.sessions) as session:
        [fixed] = fix_legacy_noise(session, NOW)
    ingest = ReportIngest(ctx)
    for mechanism, scale, error in [(dp.Mechanism.DISCRETE_GAUSSIAN, fixed.noise_scale / 10, refusals.NoiseScaleInvalid),
                                    (dp.Mechanism.DISCRETE_LAPLACE, fixed.noise_scale, refusals.MechanismMismatch)]:
        with pytest.raises(error) as refused:
            ingest.submit(TENANT, make_report(fixed, TENANT.tenant_id, mechanism=mechanism, scale=scale))
        assert status_for(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert reports(ctx) == 0
    accepted = ingest.submit(TENANT, make_report(fixed, TENANT.tenant_id, scale=fixed.noise_scale))
    assert accepted.outcome is IngestOutcome.ACCEPTED


def test_switching_a_cohort_to_local_keeps_a_fixed_scale(ctx: ServerContext) -> None:
    with transaction(ctx.sessions) as session:
        secure = current_schema(session, COHORT)
        assert secure.aggregation_mode == SECURE and secure.noise_scale > 0
        local = publish_aggregation(session, COHORT, LOCAL, secure.noise_scale)
    with pytest.raises(refusals.NoiseScaleInvalid):
        ReportIngest(ctx).submit(TENANT, make_report(local, TENANT.tenant_id, scale=secure.noise_scale / 4))


def test_the_migration_publishes_the_cut_over(database_url: str, tmp_path: Path) -> None:
    """An earlier release's store (schema at ``secagg01``, a legacy version) upgraded to head."""
    engine = make_engine(database_url)
    try:
        upgrade(engine, "secagg01")
        sessions = make_sessionmaker(engine)
        legacy = default_schema("upgraded", version=3)
        with transaction(sessions) as session:
            session.add(SignalSchemaVersion(cohort="upgraded", version=3, document=legacy.to_json(),
                                            created_at=NOW))
        upgrade(engine)
        with sessions() as session:
            newest = current_schema(session, "upgraded")
            assert get_schema(session, "upgraded", 3) == legacy
        assert (newest.version, newest.aggregation_mode) == (4, LOCAL)
        assert newest.noise_scale == fixed_noise_scale(legacy)
        assert head_revision() == "0005_fixed_noise"
    finally:
        engine.dispose()
