"""The operator's switch of a cohort's aggregation mode: secure aggregation or per-tenant ("local").

A mode change is a new schema version (``server.signals.schemas.publish_aggregation``): rounds
and reports name the schema version they were made for, so a window already under way keeps
the mode it started with. Every change is an audit entry with the operator and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.errors import InvalidRequest, NotFound
from aggregation.schema import AGGREGATION_MODES
from server.audit import append_audit
from server.secagg.rounds import RoundError
from server.signals.models import SignalSchemaVersion
from server.signals.schemas import current_schema, publish_aggregation


class UnknownMode(RoundError, InvalidRequest):
    """An unknown mode, a bad noise scale or a missing reason."""


class UnknownCohort(RoundError, NotFound):
    pass


@dataclass(frozen=True)
class ModeChange:
    schema_version: int
    mode: str
    noise_scale: float
    changed: bool


def set_mode(session: Session, cohort: str, mode: str, noise_scale: float, actor: str, reason: str,
             now: datetime) -> ModeChange:
    """Publish ``mode`` for ``cohort`` (``noise_scale`` 0 keeps the schema's); inside the caller's transaction."""
    if mode not in AGGREGATION_MODES:
        raise UnknownMode(f"aggregation mode must be one of {AGGREGATION_MODES}, got {mode!r}")
    if not math.isfinite(noise_scale) or noise_scale < 0:
        raise UnknownMode(f"noise scale must be a non-negative finite number, got {noise_scale!r}")
    if not reason.strip():
        raise UnknownMode("a reason is required (it goes to the audit log)")
    known = session.scalars(select(SignalSchemaVersion.version).where(SignalSchemaVersion.cohort == cohort)).first()
    if known is None:
        raise UnknownCohort(f"cohort {cohort!r} has no schema")
    before = current_schema(session, cohort)
    scale = noise_scale or before.noise_scale
    if scale <= 0:
        raise UnknownMode(f"cohort {cohort!r} has no noise scale yet: pass one")
    after = publish_aggregation(session, cohort, mode, scale, clock=lambda: now)
    changed = after.version != before.version
    if changed:
        append_audit(session, actor, "cohort.aggregation_mode", {
            "cohort": cohort, "from_mode": before.aggregation_mode, "to_mode": mode,
            "from_noise_scale": before.noise_scale, "noise_scale": after.noise_scale,
            "schema_version": after.version, "reason": reason,
        }, at=now)
    return ModeChange(after.version, after.aggregation_mode, after.noise_scale, changed)
