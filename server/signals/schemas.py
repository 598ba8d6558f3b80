"""Versioned signal schemas of each cohort.

A cohort's first schema version is made from the shipped template
(:func:`aggregation.schema.default_schema`) the first time anyone asks for
it. Versions are immutable; a new one is published when the artifact
versions under rollout change. Creation is serialized per cohort (an
advisory lock on PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite),
so two replicas asking at once create version 1 once.
"""

from __future__ import annotations

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
    sigma = template.noise_scale or calibrate_scale(
        Mechanism.DISCRETE_GAUSSIAN, template.max_cells_per_unit, template.max_count_per_cell, rho=DEFAULT_COHORT_RHO
    )
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
    advisory_lock(session, locks.schema(cohort))
    current = current_schema(session, cohort, clock=clock)
    if current.aggregation_mode == mode and current.noise_scale == noise_scale:
        return current
    updated = SignalSchema.from_dict({**current.to_dict(), "version": current.version + 1,
                                      "aggregation_mode": mode, "noise_scale": float(noise_scale)})
    _store(session, updated, clock())
    return updated
