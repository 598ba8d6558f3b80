"""Canary-vs-control evidence of a rollout stage, and the decision it supports.

The canary and the control are two slices of the same merged DP reports:
``artifact_version`` = the candidate's label vs the rollout's control label
(:func:`aggregation.rollout_plan.control_label`), which only the *other*
sessions of participating tenants carry: a randomized control, not the rest
of the cohort. For each
gate measure and window since the stage began, the intents are summed
(counts, turns and their DP noise variances add up) into one
:class:`~aggregation.sequential.WindowEvidence`. Windows whose cells are
k-suppressed (fewer than ``min_tenants`` tenants reported) are not evidence.

:func:`assess` turns the plan, the stage and that evidence into one
decision: ``rollback`` as soon as any gate shows harm; ``wait`` during the
dwell; ``pause`` when evidence is still missing one window after the dwell;
``advance`` (or ``promote`` into the 100 % stage) otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from aggregation.rollout_plan import RolloutPlan
from aggregation.sequential import ZERO, ArmCounts, Gate, Verdict, WindowEvidence
from server.context import ServerSettings
from server.signals_view import merged_cells

ARTIFACT_VERSION = "artifact_version"
#: Windows of grace after the dwell before missing evidence pauses the rollout
#: (reports of the last window may still be in outboxes or not merged yet).
EVIDENCE_GRACE_WINDOWS = 1

Decision = Literal["advance", "promote", "rollback", "pause", "wait"]


@dataclass
class StageEvidence:
    """Per gate measure, the windows (in time order) with canary and control counts."""

    per_measure: dict[str, list[WindowEvidence]]
    windows: list[int] = field(default_factory=list)
    suppressed_windows: list[int] = field(default_factory=list)
    canary_turns: float = 0.0
    control_turns: float = 0.0


def read_stage_evidence(
    session: Session,
    settings: ServerSettings,
    cohort: str,
    measures: Sequence[str],
    candidate_label: str,
    control_label: str,
    from_window: int,
) -> StageEvidence:
    """Merged evidence of ``cohort`` from ``from_window`` on (window starts, unix seconds).

    ``control_label`` is the rollout's control slice (participating tenants'
    non-canary sessions).
    """
    arms = {candidate_label: 0, control_label: 1}
    wanted = set(measures)
    counts: dict[tuple[int, str], list[ArmCounts]] = defaultdict(lambda: [ZERO, ZERO])
    turns: dict[int, list[ArmCounts]] = defaultdict(lambda: [ZERO, ZERO])
    turns_seen: set[tuple[int, str, tuple[tuple[str, str], ...]]] = set()
    suppressed: set[int] = set()
    windows: set[int] = set()
    for cell in merged_cells(session, cohort, settings, window_start_from=from_window):
        arm = arms.get(cell.slice.get(ARTIFACT_VERSION, ""))
        if arm is None or cell.measure not in wanted:
            continue
        windows.add(cell.window_start)
        if cell.suppressed:
            suppressed.add(cell.window_start)
            continue
        key = (cell.window_start, cell.measure)
        pair = counts[key]
        pair[arm] = pair[arm] + ArmCounts(cell.estimate, cell.variance, 0.0, 0.0)
        # Every measure's cell repeats its slice's turns: count each slice once.
        slice_id = (cell.window_start, str(arm), tuple(sorted(cell.slice.items())))
        if slice_id not in turns_seen:
            turns_seen.add(slice_id)
            t = turns[cell.window_start]
            t[arm] = t[arm] + ArmCounts(0.0, 0.0, cell.turns_estimate, cell.turns_variance)
    usable = sorted(w for w in windows if w not in suppressed)
    evidence = StageEvidence(per_measure={m: [] for m in measures}, windows=usable,
                             suppressed_windows=sorted(suppressed))
    for w in usable:
        canary_turns, control_turns = turns[w]
        evidence.canary_turns += canary_turns.turns
        evidence.control_turns += control_turns.turns
        for m in measures:
            canary, control = counts[(w, m)]
            evidence.per_measure[m].append(WindowEvidence(
                ArmCounts(canary.count, canary.count_variance, canary_turns.turns, canary_turns.turns_variance),
                ArmCounts(control.count, control.count_variance, control_turns.turns, control_turns.turns_variance),
            ))
    return evidence


def plan_gates(plan: RolloutPlan) -> list[Gate]:
    """The plan's gates, each at ``alpha / (gates x gated stages)`` (Bonferroni over the rollout)."""
    gated_stages = max(1, sum(1 for s in plan.stages if s.percent < 100.0))
    alpha = plan.alpha / (len(plan.gates) * gated_stages)
    return [Gate(g.measure, g.direction, g.margin, alpha, plan.mixture_scale) for g in plan.gates]


@dataclass
class Assessment:
    decision: Decision
    reason: str
    verdicts: list[Verdict]
    elapsed_windows: int
    evidence_windows: int
    suppressed_windows: int
    canary_turns: float
    control_turns: float

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["verdicts"] = [_finite_verdict(v) for v in self.verdicts]
        return doc


def _finite_verdict(v: Verdict) -> dict[str, Any]:
    d = asdict(v)
    for k in ("estimate", "low", "high"):
        x = d[k]
        d[k] = None if x in (float("inf"), float("-inf")) else round(x, 6)
    return d


def assess(plan: RolloutPlan, stage_index: int, evidence: StageEvidence, elapsed_windows: int) -> Assessment:
    """What the controller should do now (see the module docstring)."""
    verdicts = [g.evaluate(evidence.per_measure.get(g.measure, [])) for g in plan_gates(plan)]
    stage_index = min(max(stage_index, 0), len(plan.stages) - 1)
    stage = plan.stages[stage_index]

    def result(decision: Decision, reason: str) -> Assessment:
        return Assessment(decision, reason, verdicts, elapsed_windows, len(evidence.windows),
                          len(evidence.suppressed_windows), evidence.canary_turns, evidence.control_turns)

    harm = [v for v in verdicts if v.verdict == "harm"]
    if harm:
        return result("rollback", "; ".join(v.reason for v in harm))
    if elapsed_windows < stage.min_windows:
        return result("wait", f"dwell: {elapsed_windows}/{stage.min_windows} windows of stage {stage.percent:g} %")
    missing = []
    if len(evidence.windows) < max(1, stage.min_windows):
        missing.append(f"{len(evidence.windows)}/{max(1, stage.min_windows)} windows with reports")
    if evidence.suppressed_windows:
        missing.append(f"{len(evidence.suppressed_windows)} window(s) below k tenants")
    if evidence.canary_turns < stage.min_canary_turns:
        missing.append(f"canary turns {evidence.canary_turns:.0f} < {stage.min_canary_turns:g}")
    if evidence.control_turns < stage.min_control_turns:
        missing.append(f"control turns {evidence.control_turns:.0f} < {stage.min_control_turns:g}")
    thin = [v.gate for v in verdicts if v.verdict == "insufficient"]
    if thin:
        missing.append(f"no usable batch yet for {', '.join(thin)}")
    if missing:
        reason = "evidence missing: " + "; ".join(missing)
        if elapsed_windows >= stage.min_windows + EVIDENCE_GRACE_WINDOWS:
            return result("pause", reason)
        return result("wait", reason)
    # A plan whose current stage is the last one (already 100 %) has nothing left but promotion.
    nxt = plan.stages[stage_index + 1] if stage_index + 1 < len(plan.stages) else stage
    decision: Decision = "promote" if nxt.percent >= 100.0 else "advance"
    return result(decision, f"stage {stage.percent:g} % passed every gate; next {nxt.percent:g} %")
