"""Evidence accumulates over the whole rollout, and promotion needs every margin shown.

Regression for a harmful canary promoted under the shipped low-risk plan: with
evidence restarting at every stage and a dwell of one window, a 5-point drop in
task success (margin 2 points) was promoted in 39 of 40 simulated rollouts.
The simulation drives :func:`server.rollout.evidence.assess` the way the
controller does: every window since the rollout began is evidence for the
gates, the stage's own windows decide its dwell and minimum evidence, and the
next stage starts with the next window.
"""

from __future__ import annotations

import numpy as np

from aggregation.rollout_plan import shipped_plans
from aggregation.sequential import ArmCounts, WindowEvidence
from server.rollout.evidence import StageEvidence, assess, non_inferior, plan_gates

PLAN = shipped_plans().for_risk_class("low")
MEASURES = [g.measure for g in PLAN.gates]
BASE = {"task_success": 0.80, "escalated": 0.05, "human_correction": 0.05, "tool_error": 0.05,
        "timeout": 0.03, "safety_incident": 0.0}
NOISE_VAR = 10 * 16.0  # 10 tenants' discrete Gaussian noise, sigma 4 per cell
TURNS_PER_WINDOW = 4000


def _arm(rng: np.random.Generator, n: int, rates: dict[str, float]) -> dict[str, ArmCounts]:
    sd = NOISE_VAR ** 0.5
    turns = n + rng.normal(0, sd)
    return {m: ArmCounts(float(rng.binomial(n, rates[m])) + rng.normal(0, sd), NOISE_VAR, turns, NOISE_VAR)
            for m in MEASURES}


def simulate(rng: np.random.Generator, canary_rates: dict[str, float], max_windows: int = 150) -> tuple[str, int]:
    """(outcome, windows) of one rollout through the shipped low plan."""
    ev = StageEvidence(per_measure={m: [] for m in MEASURES}, stage_window_start=0)
    stage = 0
    for w in range(max_windows):
        share = PLAN.stages[stage].percent / 100.0
        nc = int(TURNS_PER_WINDOW * share)
        c, k = _arm(rng, nc, canary_rates), _arm(rng, TURNS_PER_WINDOW - nc, BASE)
        for m in MEASURES:
            ev.per_measure[m].append(WindowEvidence(c[m], k[m]))
        ev.windows.append(w)
        ev.window_turns[w] = (c[MEASURES[0]].turns, k[MEASURES[0]].turns)
        ev.canary_turns += c[MEASURES[0]].turns
        ev.control_turns += k[MEASURES[0]].turns
        assert ev.stage_window_start is not None
        a = assess(PLAN, stage, ev, elapsed_windows=w + 1 - ev.stage_window_start)
        if a.decision == "rollback":
            return f"rolled_back@{PLAN.stages[stage].percent:g}%", w + 1
        if a.decision == "promote":
            return "promoted", w + 1
        if a.decision == "advance":
            stage += 1
            ev.stage_window_start = w + 1
        # "pause" (thin evidence at the 1 % stage) resumes by itself once evidence is back: keep going.
    return f"waiting@{PLAN.stages[stage].percent:g}%", max_windows


def test_a_five_point_task_success_drop_is_never_promoted() -> None:
    rng = np.random.default_rng(7)
    outcomes = [simulate(rng, dict(BASE, task_success=0.75))[0] for _ in range(40)]
    assert outcomes.count("promoted") == 0, outcomes
    assert sum(o.startswith("rolled_back") for o in outcomes) >= 36, outcomes


def test_a_neutral_candidate_is_promoted_without_false_rollbacks() -> None:
    rng = np.random.default_rng(11)
    runs = [simulate(rng, BASE) for _ in range(40)]
    outcomes = [o for o, _ in runs]
    assert not any(o.startswith("rolled_back") for o in outcomes), outcomes
    assert outcomes.count("promoted") >= 38, outcomes
    assert float(np.median([w for o, w in runs if o == "promoted"])) <= 30


def test_promotion_waits_until_the_intervals_exclude_harm_beyond_each_positive_margin() -> None:
    rng = np.random.default_rng(3)
    ev = StageEvidence(per_measure={m: [] for m in MEASURES})
    for w in range(2):  # two windows at 50 %: dwell and evidence met, intervals still wide
        c, k = _arm(rng, 2000, BASE), _arm(rng, 2000, BASE)
        for m in MEASURES:
            ev.per_measure[m].append(WindowEvidence(c[m], k[m]))
        ev.windows.append(w)
        ev.canary_turns += 2000
        ev.control_turns += 2000
    a = assess(PLAN, len(PLAN.stages) - 2, ev, elapsed_windows=2)
    assert a.decision == "wait" and a.reason.startswith("evidence for promotion")
    assert any(v.gate == "task_success" and not non_inferior(v) for v in a.verdicts)
    # An earlier stage advances on the same evidence: non-inferiority is asked only before promotion.
    assert assess(PLAN, 0, ev, elapsed_windows=2).decision == "advance"


def test_alpha_is_split_over_gates_only() -> None:
    assert {g.alpha for g in plan_gates(PLAN)} == {PLAN.alpha / len(PLAN.gates)}
