"""From merged signals to candidate artifacts: hotspot rules and the remediation map.

Hotspot rules are small objects with one method, ``find(cell, history)``,
over SERVER-SIGNALS' merged cells (never tenant-level data):

* :class:`AboveThreshold` — the rate's whole interval lies above the
  category's absolute threshold;
* :class:`RiseOverPreviousWindows` — the interval lies above the pooled
  interval of the same slice over the previous windows;
* :class:`RiseOverOtherVersions` — the interval lies above the pooled
  interval of the same measure and intent under the other artifact versions.

No rule sees a cell below the evidence floor
(:class:`~server.signals.views.EvidenceFloor`, its bounds from the map's
``rules``): a slice whose noisy turns are within a few noise standard
deviations, or whose interval is wide, proposes nothing, however high its rate.

The remediation map (``server/review/data/remediation_v1.json``, data with a
version) turns a hotspot into a candidate: artifact kind, template, risk
class, rollout plan. Detection is idempotent across runs and replicas: it
runs under an advisory lock, keeps one open candidate per cohort and
artifact name, and keys each candidate by (cohort, artifact, window).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation.rollout_plan import plan_for_candidate, with_default_intents
from aggregation.stats import ratio_interval
from server.context import ServerContext
from server.db import advisory_lock, locks, transaction
from server.review.models import CandidateRecord
from server.review.remediation import RemediationMap
from server.review.workflow import CandidateState, create_candidate
from server.signals.views import EvidenceFloor, MergedCellView, merged_cells

OPEN_STATES = (CandidateState.PROPOSED, CandidateState.EDITED, CandidateState.APPROVED, CandidateState.BUNDLED,
               CandidateState.ROLLING_OUT)
@dataclass(frozen=True)
class Hotspot:
    rule: str
    cell: MergedCellView
    reference: dict[str, float]


class HotspotRule(Protocol):
    @property
    def name(self) -> str: ...

    def find(self, cell: MergedCellView, history: CellHistory) -> Hotspot | None: ...


class CellHistory:
    """Merged cells indexed for the rules' comparisons (non-suppressed only)."""

    def __init__(self, cells: Sequence[MergedCellView]) -> None:
        self.cells = [c for c in cells if not c.suppressed]
        self._by_slice: dict[tuple[Any, ...], list[MergedCellView]] = defaultdict(list)
        self._by_window: dict[tuple[Any, ...], list[MergedCellView]] = defaultdict(list)
        for c in self.cells:
            self._by_slice[(c.cohort, c.measure, tuple(sorted(c.slice.items())))].append(c)
            self._by_window[(c.cohort, c.measure, c.window_start, c.slice.get("intent"))].append(c)

    def previous(self, cell: MergedCellView, n: int) -> list[MergedCellView]:
        same = self._by_slice[(cell.cohort, cell.measure, tuple(sorted(cell.slice.items())))]
        return sorted((c for c in same if c.window_start < cell.window_start), key=lambda c: -c.window_start)[:n]

    def other_versions(self, cell: MergedCellView) -> list[MergedCellView]:
        same = self._by_window[(cell.cohort, cell.measure, cell.window_start, cell.slice.get("intent"))]
        return [c for c in same if c.slice.get("artifact_version") != cell.slice.get("artifact_version")]


def _pooled(cells: Sequence[MergedCellView], confidence: float) -> tuple[float, float, float]:
    num = sum(c.estimate for c in cells)
    den = sum(c.turns_estimate for c in cells)
    return ratio_interval(num, sum(c.variance for c in cells), den, sum(c.turns_variance for c in cells), confidence)


@dataclass(frozen=True)
class AboveThreshold:
    thresholds: Mapping[str, float]
    name: str = "above_threshold"

    def find(self, cell: MergedCellView, history: CellHistory) -> Hotspot | None:
        t = self.thresholds.get(cell.measure)
        if t is None or cell.rate_low <= t:
            return None
        return Hotspot(self.name, cell, {"threshold": t})


@dataclass(frozen=True)
class RiseOverPreviousWindows:
    lookback: int
    min_windows: int
    confidence: float
    name: str = "rise_over_previous_windows"

    def find(self, cell: MergedCellView, history: CellHistory) -> Hotspot | None:
        prev = history.previous(cell, self.lookback)
        if len(prev) < self.min_windows:
            return None
        rate, low, high = _pooled(prev, self.confidence)
        if cell.rate_low <= high:
            return None
        return Hotspot(self.name, cell, {"previous_rate": rate, "previous_low": low, "previous_high": high,
                                         "previous_windows": float(len(prev))})


@dataclass(frozen=True)
class RiseOverOtherVersions:
    confidence: float
    name: str = "rise_over_other_versions"

    def find(self, cell: MergedCellView, history: CellHistory) -> Hotspot | None:
        others = history.other_versions(cell)
        if not others:
            return None
        rate, low, high = _pooled(others, self.confidence)
        if cell.rate_low <= high:
            return None
        return Hotspot(self.name, cell, {"other_versions_rate": rate, "other_versions_low": low,
                                         "other_versions_high": high})


def default_rules(remedies: RemediationMap, confidence: float) -> list[HotspotRule]:
    thresholds = {c: r.threshold for c, r in remedies.remedies.items()}
    return [
        AboveThreshold(thresholds),
        RiseOverPreviousWindows(remedies.lookback_windows, remedies.min_previous_windows, confidence),
        RiseOverOtherVersions(confidence),
    ]


def evidence_floor(remedies: RemediationMap) -> EvidenceFloor:
    """The evidence floor the map's ``rules`` set for proposing candidates."""
    r = remedies.rules
    return EvidenceFloor(r.min_turns_sigmas, r.min_turns, r.max_interval_width)


def _evidence(hot: Hotspot, remedies: RemediationMap) -> dict[str, Any]:
    c = hot.cell
    return {
        "rule": hot.rule,
        "remediation_map_version": remedies.version,
        "cells": [{
            "cohort": c.cohort, "window_start": c.window_start, "window_end": c.window_end, "measure": c.measure,
            "slice": dict(c.slice), "estimate": round(c.estimate, 3), "rate": round(c.rate, 6),
            "rate_low": round(c.rate_low, 6), "rate_high": round(c.rate_high, 6), "tenants": c.tenants,
            "turns": round(c.turns_estimate, 3), "noise_sd": round(math.sqrt(max(c.turns_variance, 0.0)), 3),
        }],
        "reference": {k: round(v, 6) for k, v in hot.reference.items()},
    }


def detect(session: Session, ctx: ServerContext, remedies: RemediationMap | None = None,
           rules: Sequence[HotspotRule] | None = None) -> list[CandidateRecord]:
    """Create candidates for new hotspots (inside the caller's transaction); returns the new ones."""
    # The audit lock first, always: every writer here appends audit entries, and one global
    # order (audit, then ours) keeps concurrent transactions from deadlocking.
    advisory_lock(session, locks.AUDIT)
    advisory_lock(session, locks.DETECT)
    remedies = remedies or RemediationMap.load()
    rules = list(rules) if rules is not None else default_rules(remedies, ctx.settings.confidence)
    floor = evidence_floor(remedies)
    history = CellHistory(merged_cells(session, None, ctx.settings))
    latest: dict[str, int] = {}
    for c in history.cells:
        latest[c.cohort] = max(latest.get(c.cohort, c.window_start), c.window_start)
    open_names = {
        (r.cohort, r.kind, json.loads(r.evidence_json).get("artifact_name"))
        for r in session.scalars(select(CandidateRecord).where(CandidateRecord.state.in_(OPEN_STATES)))
    }
    created: list[CandidateRecord] = []
    for cell in sorted(history.cells, key=lambda c: (c.cohort, c.window_start, c.measure, sorted(c.slice.items()))):
        remedy = remedies.remedies.get(cell.measure)
        if remedy is None or cell.window_start != latest[cell.cohort]:
            continue  # only the newest window of a cohort proposes; older ones are history
        if not floor.admits(cell):
            continue  # noise over noise: not evidence of anything
        intent = cell.slice.get("intent", "other")
        name, content = remedies.render(remedy, intent)
        if (cell.cohort, remedy.kind, name) in open_names:
            continue
        hot = next((h for r in rules if (h := r.find(cell, history)) is not None), None)
        if hot is None:
            continue
        evidence = _evidence(hot, remedies) | {"artifact_name": name}
        # The kind's highest class in the map, not just this category's (e.g. a guardrail is critical).
        risk_class = remedies.required_risk_class([remedy.kind], at_least=remedy.risk_class)
        plan = with_default_intents(plan_for_candidate(risk_class, None), remedy.kind, intent)  # per-intent canary
        rec = create_candidate(
            session, cohort=cell.cohort, category=cell.measure, kind=remedy.kind, risk_class=risk_class,
            artifacts=[(name, remedy.kind, content)], evidence=evidence, rollout_plan_json=plan.to_json(),
            dedupe_key=f"{cell.cohort}|{name}|{cell.window_start}"[:200], now=ctx.clock(), remedies=remedies,
        )
        if rec is not None:
            created.append(rec)
            open_names.add((cell.cohort, remedy.kind, name))
    return created


def run_detection(ctx: ServerContext) -> None:
    """Periodic job: detect hotspots in the merged signals and propose candidates."""
    with transaction(ctx.sessions) as session:
        detect(session, ctx)
