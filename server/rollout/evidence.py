"""Canary-vs-control evidence of a rollout, and the decision it supports.

The canary and the control are two slices of the same merged DP reports:
``artifact_version`` = the candidate's label vs the rollout's control label
(:func:`aggregation.rollout_plan.control_label`), which only the *other*
sessions of participating tenants carry: a randomized control, not the rest
of the cohort. For each gate measure and window since the rollout began
(evidence accumulates over stages: the labels do not change between stages
and each gate's confidence sequence is valid at any stopping time), the
intents are summed (counts, turns and their DP noise variances add up) into
one :class:`~aggregation.sequential.WindowEvidence`. Windows whose cells are
k-suppressed (fewer than ``min_tenants`` tenants reported) are not evidence.

:func:`assess` turns the plan, the stage and that evidence into one
decision: ``rollback`` as soon as any gate shows harm; ``wait`` during the
stage's dwell; ``pause`` when the stage's evidence is still missing one
window after the dwell; ``advance`` otherwise, and ``promote`` into the
100 % stage only once every gate with a positive margin shows
non-inferiority (the interval excludes harm beyond the margin) — until then
``wait`` ("evidence for promotion").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.orm import Session

from aggregation.rollout_plan import RolloutPlan
from aggregation.sequential import ZERO, ArmCounts, Gate, Verdict, WindowEvidence
from server.context import ServerSettings
from server.evaluation.slices import VerdictsJson
from server.signals.views import merged_cells

ARTIFACT_VERSION = "artifact_version"
#: Windows of grace after the dwell before missing evidence pauses the rollout
#: (reports of the last window may still be in outboxes or not merged yet).
EVIDENCE_GRACE_WINDOWS = 1

class Decision(StrEnum):
    """What the controller does with a rollout after an assessment (stored as the string value)."""

    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    WAIT = "wait"
    #: A step over a rollout that is no longer active.
    NONE = "none"


@dataclass
class StageEvidence:
    """Per gate measure, the windows (in time order) with canary and control counts.

    ``per_measure`` holds the evidence the gates judge (from the rollout's
    first window on). When ``stage_window_start`` is set, the stage's dwell
    and minimum evidence are judged on the windows from that start only
    (``window_turns`` gives each window's canary and control turns);
    otherwise every window counts as the stage's.
    """

    per_measure: dict[str, list[WindowEvidence]]
    windows: list[int] = field(default_factory=list)
    suppressed_windows: list[int] = field(default_factory=list)
    canary_turns: float = 0.0
    control_turns: float = 0.0
    stage_window_start: int | None = None
    window_turns: dict[int, tuple[float, float]] = field(default_factory=dict)

    def stage_view(self) -> StageView:
        """The current stage's share of the evidence (its dwell and minimum evidence are judged on it)."""
        start = self.stage_window_start
        if start is None:
            return StageView(self.windows, self.suppressed_windows, self.canary_turns, self.control_turns)
        windows = [w for w in self.windows if w >= start]
        suppressed = [w for w in self.suppressed_windows if w >= start]
        canary = sum(self.window_turns.get(w, (0.0, 0.0))[0] for w in windows)
        control = sum(self.window_turns.get(w, (0.0, 0.0))[1] for w in windows)
        return StageView(windows, suppressed, canary, control)


@dataclass(frozen=True)
class StageView:
    """The current stage's usable and suppressed windows and its canary and control turns."""

    windows: list[int]
    suppressed_windows: list[int]
    canary_turns: float
    control_turns: float


def read_stage_evidence(
    session: Session,
    settings: ServerSettings,
    cohort: str,
    measures: Sequence[str],
    candidate_label: str,
    control_label: str,
    from_window: int,
    stage_window_start: int | None = None,
    intents: Sequence[str] = (),
) -> StageEvidence:
    """Merged evidence of ``cohort`` from ``from_window`` on (window starts, unix seconds).

    ``control_label`` is the rollout's control slice (participating tenants'
    non-canary sessions); ``stage_window_start`` marks where the current
    stage's windows begin (see :class:`StageEvidence`). ``intents`` scopes
    the evidence to those intents' slices (a per-intent canary); empty: all.
    """
    scope = set(intents)
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
        if scope and cell.slice.get("intent", "") not in scope:
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
                             suppressed_windows=sorted(suppressed), stage_window_start=stage_window_start)
    for w in usable:
        canary_turns, control_turns = turns[w]
        evidence.canary_turns += canary_turns.turns
        evidence.control_turns += control_turns.turns
        evidence.window_turns[w] = (canary_turns.turns, control_turns.turns)
        for m in measures:
            canary, control = counts[(w, m)]
            evidence.per_measure[m].append(WindowEvidence(
                ArmCounts(canary.count, canary.count_variance, canary_turns.turns, canary_turns.turns_variance),
                ArmCounts(control.count, control.count_variance, control_turns.turns, control_turns.turns_variance),
            ))
    return evidence


def plan_gates(plan: RolloutPlan) -> list[Gate]:
    """The plan's gates, each at ``alpha / gates`` (Bonferroni over the gates).

    Each gate runs one confidence sequence over the whole rollout (evidence
    accumulates across stages), valid at every look and any stopping time,
    so no split over stages is needed.
    """
    alpha = plan.alpha_per_gate
    return [Gate(g.measure, g.direction, g.margin, alpha, plan.mixture_scale) for g in plan.gates]


@dataclass
class Assessment(VerdictsJson):
    decision: Decision
    reason: str
    verdicts: list[Verdict]
    elapsed_windows: int
    evidence_windows: int
    suppressed_windows: int
    canary_turns: float
    control_turns: float


def non_inferior(v: Verdict) -> bool:
    """Whether the interval excludes harm beyond the gate's margin (margin 0: only "no harm shown")."""
    if v.margin <= 0.0:
        return v.verdict != "harm"
    if v.verdict == "insufficient":
        return False
    return v.low > -v.margin if v.direction == "drop" else v.high < v.margin


def assess(plan: RolloutPlan, stage_index: int, evidence: StageEvidence, elapsed_windows: int) -> Assessment:
    """What the controller should do now (see the module docstring)."""
    verdicts = [g.evaluate(evidence.per_measure.get(g.measure, [])) for g in plan_gates(plan)]
    stage_index = min(max(stage_index, 0), len(plan.stages) - 1)
    stage = plan.stages[stage_index]
    view = evidence.stage_view()
    windows, suppressed = view.windows, view.suppressed_windows
    canary_turns, control_turns = view.canary_turns, view.control_turns

    def result(decision: Decision, reason: str) -> Assessment:
        return Assessment(decision, reason, verdicts, elapsed_windows, len(windows),
                          len(suppressed), canary_turns, control_turns)

    harm = [v for v in verdicts if v.verdict == "harm"]
    if harm:
        return result(Decision.ROLLBACK, "; ".join(v.reason for v in harm))
    if elapsed_windows < stage.min_windows:
        return result(Decision.WAIT, f"dwell: {elapsed_windows}/{stage.min_windows} windows of stage {stage.percent:g} %")
    missing = []
    if len(windows) < max(1, stage.min_windows):
        missing.append(f"{len(windows)}/{max(1, stage.min_windows)} windows with reports")
    if suppressed:
        missing.append(f"{len(suppressed)} window(s) below k tenants")
    if canary_turns < stage.min_canary_turns:
        missing.append(f"canary turns {canary_turns:.0f} < {stage.min_canary_turns:g}")
    if control_turns < stage.min_control_turns:
        missing.append(f"control turns {control_turns:.0f} < {stage.min_control_turns:g}")
    thin = [v.gate for v in verdicts if v.verdict == "insufficient"]
    if thin:
        missing.append(f"no usable batch yet for {', '.join(thin)}")
    if missing:
        reason = "evidence missing: " + "; ".join(missing)
        if elapsed_windows >= stage.min_windows + EVIDENCE_GRACE_WINDOWS:
            return result(Decision.PAUSE, reason)
        return result(Decision.WAIT, reason)
    # A plan whose current stage is the last one (already 100 %) has nothing left but promotion.
    nxt = plan.stages[stage_index + 1] if stage_index + 1 < len(plan.stages) else stage
    if nxt.percent < 100.0:
        return result(Decision.ADVANCE, f"stage {stage.percent:g} % passed every gate; next {nxt.percent:g} %")
    unproven = [v for v in verdicts if not non_inferior(v)]
    if unproven:
        return result(Decision.WAIT, "evidence for promotion: " + "; ".join(
            f"{v.gate} interval [{v.low:+.4f}, {v.high:+.4f}] does not yet exclude a "
            f"{v.direction} beyond {v.margin:g}" for v in unproven))
    return result(Decision.PROMOTE, f"stage {stage.percent:g} % passed every gate and every margin is shown; "
                             f"next {nxt.percent:g} % (promotion)")
