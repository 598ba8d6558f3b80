"""Versioned signal schemas of each cohort.

A cohort's first schema version is made from the shipped template
(:func:`aggregation.schema.default_schema`) the first time anyone asks for
it. Versions are immutable; a new one is published when the artifact
versions under rollout change. Creation is serialized per cohort (an
advisory lock on PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite),
so two replicas asking at once create version 1 once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.clock import Clock, system_clock
from aggregation.dp import Mechanism, calibrate_scale
from aggregation.errors import InvalidRequest
from aggregation.schema import DEFAULT_AGGREGATION_MODE, SignalSchema, default_schema
from server.db import advisory_lock, locks
from server.signals.models import SignalSchemaVersion

ARTIFACT_VERSION = "artifact_version"
#: zCDP rho of one cohort window release a new cohort's schema fixes its noise for (secure: the
#: central mechanism's; local: each tenant's).
DEFAULT_COHORT_RHO = 0.01


class UnknownCohortSchema(InvalidRequest):
    """A cohort name that cannot carry a schema."""


class NoiseScaleRequired(InvalidRequest):
    """A schema version must fix its cohort's noise scale (a positive, finite sigma)."""


def fixed_noise_scale(schema: SignalSchema, rho: float = DEFAULT_COHORT_RHO) -> float:
    """The discrete Gaussian sigma that gives one release of ``schema``'s bounds zCDP ``rho``."""
    return calibrate_scale(Mechanism.DISCRETE_GAUSSIAN, schema.max_cells_per_unit, schema.max_count_per_cell,
                           rho=rho)


def _latest(session: Session, cohort: str) -> SignalSchemaVersion | None:
    stmt = (
        select(SignalSchemaVersion)
        .where(SignalSchemaVersion.cohort == cohort)
        .order_by(SignalSchemaVersion.version.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def _store(session: Session, schema: SignalSchema, now: datetime) -> None:
    session.add(
        SignalSchemaVersion(
            cohort=schema.cohort,
            version=schema.version,
            document=schema.to_json(),
            created_at=now,
        )
    )
    session.flush()


def current_schema(session: Session, cohort: str, *, clock: Clock = system_clock) -> SignalSchema:
    """The newest schema version of ``cohort``; version 1 is created on first use.

    Runs inside the caller's transaction; the caller commits.
    """
    if not cohort:
        raise UnknownCohortSchema("a cohort name is required to look up its signal schema")
    row = _latest(session, cohort)
    if row is not None:
        return SignalSchema.from_json(row.document)
    advisory_lock(session, locks.schema(cohort))
    row = _latest(session, cohort)  # another replica may have created it meanwhile
    if row is not None:
        return SignalSchema.from_json(row.document)
    # Secure aggregation is every new cohort's mode; the noise is the cohort's, not each tenant's.
    template = default_schema(cohort, version=1)
    sigma = template.noise_scale or fixed_noise_scale(template)
    schema = default_schema(cohort, version=1, aggregation_mode=DEFAULT_AGGREGATION_MODE, noise_scale=sigma)
    _store(session, schema, clock())
    return schema


def get_schema(session: Session, cohort: str, version: int) -> SignalSchema | None:
    """Schema ``version`` of ``cohort``, or None when it was never published."""
    row = session.scalars(
        select(SignalSchemaVersion).where(
            SignalSchemaVersion.cohort == cohort, SignalSchemaVersion.version == version
        )
    ).first()
    return SignalSchema.from_json(row.document) if row is not None else None


def publish_artifact_versions(
    session: Session, cohort: str, labels: Sequence[str], *, clock: Clock = system_clock
) -> SignalSchema:
    """Publish a schema version whose artifact_version domain is ``labels + ["other"]``.

    Returns the current schema unchanged when its domain already is exactly
    that. Runs inside the caller's transaction; the caller commits.
    """
    advisory_lock(session, locks.schema(cohort))
    current = current_schema(session, cohort, clock=clock)  # read under the lock: the newest version
    updated = current.with_values(ARTIFACT_VERSION, list(labels))
    if updated is current:
        return current
    _store(session, updated, clock())
    return updated


def publish_aggregation(session: Session, cohort: str, mode: str, noise_scale: float, *,
                        clock: Clock = system_clock) -> SignalSchema:
    """Publish a schema version with the cohort's aggregation mode ("secure" or "local") and noise scale.

    The operator's switch between secure aggregation and per-tenant ("local") releases, and
    the noise every tenant of the cohort uses. Returns the current schema unchanged when it
    already says exactly that. Runs inside the caller's transaction; the caller commits.
    """
    if not (math.isfinite(noise_scale) and noise_scale > 0):
        raise NoiseScaleRequired(
            f"cohort {cohort!r}: a schema fixes the noise every tenant uses; noise scale {noise_scale!r} "
            "must be positive and finite"
        )
    advisory_lock(session, locks.schema(cohort))
    current = current_schema(session, cohort, clock=clock)
    if current.aggregation_mode == mode and current.noise_scale == noise_scale:
        return current
    updated = SignalSchema.from_dict({**current.to_dict(), "version": current.version + 1,
                                      "aggregation_mode": mode, "noise_scale": float(noise_scale)})
    _store(session, updated, clock())
    return updated


def fix_legacy_noise(session: Session, now: datetime) -> list[SignalSchema]:
    """Publish, for every cohort whose newest schema version fixes no noise scale, the next version
    with the scale fixed (same mode, sigma for ``DEFAULT_COHORT_RHO`` per window); the versions published.

    Schema versions of earlier releases have ``noise_scale`` 0: each tenant of a local-mode cohort
    declared its own scale, and one that declared a tiny one outweighed every other tenant. This is
    the upgrade's cut-over (migration ``0005_fixed_noise``): collectors adopt the new version at their
    next schema refresh and release at its scale; a report for a legacy version is accepted only for a
    window that ended before the cut-over (see :func:`noise_fixed_at`). Runs inside the caller's
    transaction; the caller commits.
    """
    cohorts = session.scalars(select(SignalSchemaVersion.cohort).distinct()).all()
    published = []
    for cohort in sorted(cohorts):
        advisory_lock(session, locks.schema(cohort))
        row = _latest(session, cohort)
        if row is None:
            continue
        current = SignalSchema.from_json(row.document)
        if current.noise_scale > 0:
            continue
        updated = SignalSchema.from_dict({**current.to_dict(), "version": current.version + 1,
                                          "noise_scale": fixed_noise_scale(current)})
        _store(session, updated, now)
        published.append(updated)
    return published


def noise_fixed_at(session: Session, cohort: str) -> datetime | None:
    """When ``cohort``'s first schema version with a fixed noise scale was published (None: never)."""
    rows = session.execute(
        select(SignalSchemaVersion.document, SignalSchemaVersion.created_at)
        .where(SignalSchemaVersion.cohort == cohort)
        .order_by(SignalSchemaVersion.version)
    )
    for document, created_at in rows:
        if SignalSchema.from_json(document).noise_scale > 0:
            return created_at  # type: ignore[no-any-return]
    return None
