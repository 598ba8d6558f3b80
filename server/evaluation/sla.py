"""Remediation SLAs: how long each hotspot has waited for a promoted fix, against its category's SLA.

A *hotspot* is one (cohort, failure category, artifact) the detector raised
a candidate for. Its clock starts at the first detection (the oldest
candidate for it) and runs through every stage its candidates go through:
``candidate`` (proposed, in review, bundled), ``replay``, ``shadow``,
``canary``; a promotion closes it (``promoted``), a rollback reopens it
(``rolled_back``, counted in ``reopened``) and the age keeps counting from
the first detection until a later candidate is promoted.

:func:`sync_hotspots` derives every hotspot's row from the candidates and
rollouts (idempotent; the ``sla`` server job runs it) and sets the
``fedsignal_hotspots_overdue`` gauge; :func:`open_hotspots` lists the open
ones, overdue first. The SLAs are data:
``server/evaluation/data/remediation_slas_v1.json`` (the intent-scoped artifact
kinds live with the rollout plans, ``aggregation/data/rollout_plans_v1.json``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.rollout_plan import RolloutPhase
from aggregation.typed import StrictModel, load_json
from server.context import ServerContext
from server.db import advisory_lock, locks, transaction
from server.evaluation.models import HotspotSla, HotspotStage, SlaState
from server.review.models import CandidateRecord
from server.review.workflow import CandidateState

SLA_RESOURCE = "data/remediation_slas_v1.json"
#: A rollout phase -> the hotspot stage it means.
PHASE_STAGE: dict[str, HotspotStage] = {RolloutPhase.REPLAY: HotspotStage.REPLAY, RolloutPhase.SHADOW: HotspotStage.SHADOW,
                                        RolloutPhase.LIVE: HotspotStage.CANARY}
ROLLOUT_STAGES = frozenset(PHASE_STAGE.values())
#: A candidate's final state -> the hotspot stage it means.
_FINAL_STAGE: dict[str, HotspotStage] = {CandidateState.PROMOTED: HotspotStage.PROMOTED,
                                         CandidateState.ROLLED_BACK: HotspotStage.ROLLED_BACK,
                                         CandidateState.REJECTED: HotspotStage.REJECTED}


class RemediationSlas(StrictModel):
    version: str
    description: str = ""
    default_sla_hours: float = Field(gt=0)
    categories: dict[str, float]

    def sla_seconds(self, category: str) -> int:
        return int(self.categories.get(category, self.default_sla_hours) * 3600)


@lru_cache(maxsize=1)
def shipped_slas() -> RemediationSlas:
    path = Path(str(resources.files("server.evaluation").joinpath(SLA_RESOURCE)))
    return load_json(RemediationSlas, path)


@dataclass(frozen=True)
class HotspotAge:
    hotspot_key: str
    cohort: str
    category: str
    stage: str
    candidate_id: str
    age_seconds: float
    sla_seconds: int
    reopened: int

    @property
    def overdue(self) -> bool:
        return self.age_seconds > self.sla_seconds

    def line(self) -> str:
        flag = "OVERDUE" if self.overdue else "within SLA"
        return (f"{self.cohort:<10} {self.category:<18} {self.stage:<11} age {_hours(self.age_seconds):>7} "
                f"SLA {_hours(self.sla_seconds):>7} {flag}{f' (reopened {self.reopened}x)' if self.reopened else ''}"
                f"  {self.candidate_id}")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _key(c: CandidateRecord) -> str:
    names = sorted(a["name"] for a in json.loads(c.artifacts_json))
    return f"{c.cohort}|{c.category}|{','.join(names)}"[:300]


def _stage(c: CandidateRecord, rollout_stage: str | None) -> HotspotStage:
    final = _FINAL_STAGE.get(c.state)
    if final is not None:
        return final
    if c.state == CandidateState.ROLLING_OUT:
        return HotspotStage(rollout_stage) if rollout_stage in ROLLOUT_STAGES else HotspotStage.REPLAY
    return HotspotStage.CANDIDATE


def sync_hotspots(session: Session, now: datetime, slas: RemediationSlas | None = None, *,
                  rollout_stages: dict[str, str] | None = None) -> list[HotspotSla]:
    """Bring every hotspot's row up to date with its candidates (inside the caller's transaction).

    ``rollout_stages`` maps a rolling-out candidate to the stage its rollout
    is in (the controller tells, see :func:`note_rollout_stage`); without it a
    row keeps the rollout stage it was last told.
    """
    slas = slas or shipped_slas()
    told = dict(rollout_stages or {})
    groups: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in session.scalars(select(CandidateRecord).order_by(CandidateRecord.created_at, CandidateRecord.id)):
        groups[_key(c)].append(c)
    stamp = now.isoformat(timespec="seconds")
    rows = []
    for key, cands in groups.items():
        first, latest = cands[0], cands[-1]
        row = session.get(HotspotSla, key)
        known = row.stage if row is not None and row.candidate_id == latest.id else None
        stage = _stage(latest, told.get(latest.id, known))
        if stage == HotspotStage.REJECTED and len(cands) > 1:  # a rejected retry does not undo an earlier promotion
            stage = _stage(cands[-2], None)
        if row is None:
            row = HotspotSla(hotspot_key=key, cohort=first.cohort, category=first.category,
                             detected_at=first.created_at, sla_seconds=slas.sla_seconds(first.category),
                             stage=stage, candidate_id=latest.id, state=SlaState.OPEN, closed_at=None, reopened=0,
                             updated_at=stamp)
            session.add(row)
        elif stage == HotspotStage.ROLLED_BACK and row.stage != HotspotStage.ROLLED_BACK:
            row.reopened += 1
        row.stage, row.candidate_id = stage, latest.id
        if stage == HotspotStage.PROMOTED:
            if row.state != SlaState.CLOSED:
                row.state, row.closed_at = SlaState.CLOSED, latest.updated_at
        else:
            row.state, row.closed_at = SlaState.OPEN, None
        row.sla_seconds = slas.sla_seconds(row.category)
        row.updated_at = stamp
        rows.append(row)
    session.flush()
    return rows


def note_rollout_stage(session: Session, candidate_id: str, phase_or_state: str, now: datetime) -> None:
    """The controller's hook: a rollout entered a phase (replay/shadow/live) or finished (promoted/rolled_back)."""
    stage = PHASE_STAGE.get(phase_or_state, phase_or_state)
    sync_hotspots(session, now, rollout_stages={candidate_id: stage} if stage in ROLLOUT_STAGES else None)


def age_of(row: HotspotSla, now: datetime) -> HotspotAge:
    end = datetime.fromisoformat(row.closed_at) if row.closed_at else now
    age = (end - datetime.fromisoformat(row.detected_at)).total_seconds()
    return HotspotAge(row.hotspot_key, row.cohort, row.category, row.stage, row.candidate_id, max(0.0, age),
                      row.sla_seconds, row.reopened)


def open_hotspots(session: Session, now: datetime, cohort: str = "") -> list[HotspotAge]:
    """Open hotspots with their age and SLA: overdue first, then the oldest."""
    stmt = select(HotspotSla).where(HotspotSla.state == SlaState.OPEN)
    if cohort:
        stmt = stmt.where(HotspotSla.cohort == cohort)
    ages = [age_of(r, now) for r in session.scalars(stmt)]
    return sorted(ages, key=lambda a: (not a.overdue, -a.age_seconds, a.hotspot_key))


def overdue_counts(ages: list[HotspotAge]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for a in ages:
        counts[(a.cohort, a.category)] += a.overdue
    return dict(counts)


def run_sla(ctx: ServerContext) -> None:
    """Server job: sync the hotspots and publish the overdue gauge (safe on any replica: idempotent)."""
    now = ctx.clock()
    with transaction(ctx.sessions) as session:
        advisory_lock(session, locks.SLA)
        rows = sync_hotspots(session, now)
        ages = open_hotspots(session, now)
    counts = {(r.cohort, r.category): 0 for r in rows}  # a category whose hotspots all closed goes back to 0
    counts.update(overdue_counts(ages))
    for (cohort, category), n in counts.items():
        ctx.metrics.set_hotspots_overdue(cohort, category, n)
