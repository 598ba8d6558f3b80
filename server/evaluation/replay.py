"""The replay gate: the candidate fixes its own category's incidents and breaks nothing else.

Every participating tenant replays its own failure cases through its own
agent harness, once with the stable artifacts and once with the candidate,
and releases the replayed turns as DP slices of its ordinary window report,
labelled ``replay-stable-<rollout>`` and ``replay-candidate-<rollout>``
(:func:`aggregation.rollout_plan.replay_label`). Nothing but those noisy,
k-suppressed merged slices reaches the server.

:func:`assess_replay` judges them with the confidence sequences of
:mod:`aggregation.sequential` (candidate arm against stable arm; the two arms
replay the same cases, so the unpaired variance is conservative):

* **fix** — the candidate's own category must drop by at least the stage's
  ``improvement``: the whole interval of (candidate − stable) lies below
  ``-improvement``;
* **no regression** — on every other measure (failure categories and gate
  measures; ``task_success`` counted the other way) the candidate may not be
  worse by more than the stage's ``margin``: the interval lying beyond it is
  a regression and rolls the candidate back;
* **evidence** — at least ``min_cases`` replayed cases per arm, merged over
  windows every one of which had at least ``max(k, min_tenants)`` tenants.

The level ``alpha`` of the plan is split evenly over the checks (Bonferroni).
The intervals are the always-valid sequences of the live gates (the
controller may look after every window), tuned for a large effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregation.rollout_plan import RolloutPlan, ValidationStage, replay_label
from aggregation.schema import OTHER, TURNS
from aggregation.sequential import Direction, Gate, Verdict, WindowEvidence
from server.evaluation.slices import (
    LabelledSlices,
    ValidationDecision,
    VerdictsJson,
    verdict_json,
    with_turns,
)

#: Effect size the replay's mixture is tuned for: the replay set holds exactly the failures of the
#: candidate's category, so the fix it should show is large (tens of points), unlike a live canary's.
REPLAY_MIXTURE_SCALE = 0.5
#: Measures where a higher rate is better (the rest are failures or counters where higher is worse).
POSITIVE_MEASURES = frozenset({"task_success"})



@dataclass
class ArmSummary:
    """One arm's merged replay totals (noisy counts) of one measure."""

    measure: str
    stable: float
    candidate: float
    stable_cases: float
    candidate_cases: float


@dataclass
class ReplayAssessment(VerdictsJson):
    decision: ValidationDecision
    reason: str
    category: str
    fix: Verdict | None
    verdicts: list[Verdict]
    tenants: int
    stable_cases: float
    candidate_cases: float
    windows: int
    summary: list[ArmSummary] = field(default_factory=list)
    #: WAIT because the stage's dwell, tenants or cases are not there yet (the controller may pause);
    #: False for a WAIT on evidence that is there but not yet conclusive (the stage keeps running).
    evidence_missing: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc = super().to_dict()
        doc["fix"] = verdict_json(self.fix) if self.fix else None
        return doc


def _evidence(slices: LabelledSlices, rollout_id: str, measure: str) -> list[WindowEvidence]:
    cand, stable = replay_label(rollout_id, "candidate"), replay_label(rollout_id, "stable")
    out = []
    for w in slices.windows:
        out.append(WindowEvidence(
            with_turns(slices.get(w, cand, measure), slices.get(w, cand, TURNS)),
            with_turns(slices.get(w, stable, measure), slices.get(w, stable, TURNS)),
        ))
    return out


def assess_replay(
    plan: RolloutPlan, stage: ValidationStage, category: str, rollout_id: str, slices: LabelledSlices,
    measures: Sequence[str], *, k: int, elapsed_windows: int,
) -> ReplayAssessment:
    """The replay gate's decision on the merged replay slices (see the module docstring)."""
    others = [m for m in measures if m not in (TURNS, OTHER, category)]
    alpha = plan.alpha / (1 + len(others))
    tau = max(plan.mixture_scale, REPLAY_MIXTURE_SCALE)
    cand, stable = replay_label(rollout_id, "candidate"), replay_label(rollout_id, "stable")
    cand_cases, stable_cases = slices.total(cand, TURNS).turns, slices.total(stable, TURNS).turns
    min_batch = max(1.0, min(stage.min_cases, 30.0))
    fix = Gate(category, "drop", stage.improvement, alpha, tau, min_batch).evaluate(
        _evidence(slices, rollout_id, category))
    verdicts = []
    for m in others:
        direction: Direction = "drop" if m in POSITIVE_MEASURES else "rise"
        verdicts.append(Gate(m, direction, stage.margin, alpha, tau, min_batch).evaluate(
            _evidence(slices, rollout_id, m)))
    summary = [ArmSummary(m, slices.total(stable, m).count, slices.total(cand, m).count, stable_cases, cand_cases)
               for m in [category, *others]]
    need_tenants = max(k, stage.min_tenants)

    def result(decision: ValidationDecision, reason: str, *, missing: bool = False) -> ReplayAssessment:
        return ReplayAssessment(decision, reason, category, fix, verdicts, slices.min_tenants, stable_cases,
                                cand_cases, len(slices.windows), summary, evidence_missing=missing)

    # A regression is decisive whenever it shows (always-valid intervals).
    regressions = [v for v in verdicts if v.verdict == "harm"]
    if regressions:
        return result(ValidationDecision.REGRESSION, "replay regression: " + "; ".join(
            f"{v.gate} worse by [{v.low:+.3f}, {v.high:+.3f}] (margin {v.margin:g})" for v in regressions))
    missing = []
    if elapsed_windows < stage.min_windows:
        missing.append(f"dwell {elapsed_windows}/{stage.min_windows} windows")
    if slices.min_tenants < need_tenants:
        missing.append(f"evidence from {slices.min_tenants} tenant(s) < {need_tenants} needed")
    if min(cand_cases, stable_cases) < stage.min_cases:
        missing.append(f"replayed cases {min(cand_cases, stable_cases):.0f} < {stage.min_cases:g} per arm")
    if missing:
        return result(ValidationDecision.WAIT, "replay evidence missing: " + "; ".join(missing), missing=True)
    if fix.verdict == "harm":  # the "drop" gate's "harm" is exactly the fix: the interval below -improvement
        return result(ValidationDecision.PASS, f"replay: {category} drops by [{-fix.high:.3f}, {-fix.low:.3f}] "
                              f"(>= {stage.improvement:g} required); no other measure worse beyond {stage.margin:g}")
    if fix.verdict != "insufficient" and fix.low > -stage.improvement:
        return result(ValidationDecision.NO_FIX, f"replay: the candidate does not fix {category}: change [{fix.low:+.3f}, "
                                f"{fix.high:+.3f}] excludes a drop of {stage.improvement:g}")
    return result(ValidationDecision.WAIT, f"replay: {category} change [{fix.low:+.3f}, {fix.high:+.3f}] does not yet show a drop "
                          f"of {stage.improvement:g}")
