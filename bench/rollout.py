"""Rollout gates on DP window reports: time to roll back, and false rollbacks.

Simulates a cohort at the level of the DP window reports the server merges:
every tenant releases its window table (canary and control slices of the
gate's measures and of turns) through ``aggregation.dp.release`` (OpenDP's
discrete Gaussian, scale calibrated to rho per release), the server sums them
and carries the declared noise variance, and the gate of
``aggregation.sequential`` looks after every window.

1. Degradations of 2, 5 and 10 points in task success: windows (and canary
   events) the sequential gate needs to roll back, against the windows a
   fixed-horizon z-test needs at the same alpha and a power of 0.9.
2. False-rollback rate over 200 simulated rollouts of a neutral artifact
   through the whole default plan (every gate, every stage; evidence
   accumulated over the rollout, as the controller does).
3. Outcomes of whole rollouts through the shipped low-risk plan driven by
   the controller's own decision (``server.rollout.evidence.assess``: dwell,
   minimum evidence, non-inferiority before promotion): how often a neutral
   artifact and 2 / 5-point task-success drops are promoted or rolled back.

4. Paired shadow vs unpaired canary at the same error rates: per window the
   same sessions either run the candidate in shadow beside their live turn
   (paired discordant counts, ``aggregation.sequential.PairedGate``) or are
   split 50/50 into canary and control (the unpaired ``Gate``); the same
   alpha, mixture and DP noise per released cell. Figures: false rollbacks
   of a neutral candidate, detection of a harmful one, and windows to
   detection.

The control is randomized: the non-canary sessions of the participating
tenants only (other tenants' sessions carry the stable label, not evidence).

Prints a table only. Usage: ``python bench/rollout.py [--quick] [--only-paired]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aggregation import dp
from aggregation.rollout_plan import participating_tenants, session_fraction, shipped_plans
from aggregation.sequential import (
    ArmCounts,
    Gate,
    PairedCounts,
    PairedGate,
    WindowEvidence,
    fixed_horizon_windows,
    rate_difference,
)
from server.rollout.evidence import StageEvidence, assess, plan_gates

BASE_RATES = {
    "task_success": 0.80,
    "escalated": 0.05,
    "human_correction": 0.03,
    "tool_error": 0.02,
    "timeout": 0.01,
    "safety_incident": 0.002,
}
RHO_PER_RELEASE = 0.5
L0, LINF = 16, 1


def discrete_gaussian_variance(sigma: float) -> float:
    """Exact variance of the discrete Gaussian with scale sigma (sum of its pmf)."""
    k = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11, dtype=float)
    w = np.exp(-(k**2) / (2 * sigma**2))
    return float((k**2 * w).sum() / w.sum())


@dataclass
class Cohort:
    tenants: int
    sessions: int
    params: dp.ReleaseParams
    noise_var: float

    def window(
        self, rng: np.random.Generator, canary: Sequence[bool], fraction: float, rates: dict[str, tuple[float, float]]
    ) -> dict[str, WindowEvidence]:
        """Merged evidence of one window per measure; rates[m] = (control rate, canary rate).

        Only participating tenants have sessions in the canary and control
        slices; every tenant still releases its (noisy) cells, so the merged
        noise variance covers all tenants.
        """
        measures = list(rates)
        merged = np.zeros(2 + 2 * len(measures))
        for takes_part in canary:
            n_c = int(rng.binomial(self.sessions, fraction)) if takes_part else 0
            n_k = self.sessions - n_c if takes_part else 0
            table = [n_c, n_k]
            for m in measures:
                p_k, p_c = rates[m]
                table += [int(rng.binomial(n_c, p_c)), int(rng.binomial(n_k, p_k))]
            merged += dp.release(np.asarray(table, dtype=np.int64), self.params)
        v = self.noise_var * len(canary)
        out = {}
        for i, m in enumerate(measures):
            out[m] = WindowEvidence(
                ArmCounts(merged[2 + 2 * i], v, merged[0], v), ArmCounts(merged[3 + 2 * i], v, merged[1], v)
            )
        return out


def assignment(tenants: int, percent: float, rollout_id: str) -> tuple[list[bool], float]:
    ids = [f"tenant-{i}" for i in range(tenants)]
    part = set(participating_tenants(rollout_id, ids, percent))
    return [t in part for t in ids], session_fraction(percent, tenants, len(part))


def time_to_rollback(
    cohort: Cohort, gate: Gate, drop: float, percent: float, runs: int, cap: int, seed: int
) -> tuple[list[int], list[float], int]:
    rng = np.random.default_rng(seed)
    windows, events, missed = [], [], 0
    p = BASE_RATES["task_success"]
    for r in range(runs):
        canary, fraction = assignment(cohort.tenants, percent, f"bench-{seed}-{r}")
        seen: list[WindowEvidence] = []
        canary_turns = 0.0
        for w in range(cap):
            ev = cohort.window(rng, canary, fraction, {"task_success": (p, p - drop)})["task_success"]
            seen.append(ev)
            canary_turns += ev.canary.turns
            if gate.evaluate(seen).verdict == "harm":
                windows.append(w + 1)
                events.append(canary_turns)
                break
        else:
            missed += 1
    return windows, events, missed


def window_variance(cohort: Cohort, percent: float, p: float) -> tuple[float, float]:
    """Variance of one window's rate difference at a stage, and the expected canary turns."""
    canary, fraction = assignment(cohort.tenants, percent, "bench-design")
    n_c = sum(canary) * cohort.sessions * fraction
    n_k = sum(canary) * cohort.sessions - n_c
    v = cohort.noise_var * cohort.tenants
    _, var = rate_difference(ArmCounts(p * n_c, v, n_c, v), ArmCounts(p * n_k, v, n_k, v))
    return var, n_c


def false_rollbacks(cohort: Cohort, runs: int, dwell: int, seed: int) -> tuple[int, int]:
    """Neutral artifact through every gated stage of the low-risk plan: (rollouts rolled back, runs).

    Evidence accumulates over the whole rollout (one confidence sequence per
    gate at alpha / gates), as the controller does.
    """
    plan = shipped_plans().for_risk_class("low")
    stages = [s for s in plan.stages if s.percent < 100]
    gates = plan_gates(plan)
    rates = {m: (p, p) for m, p in BASE_RATES.items()}
    rng = np.random.default_rng(seed)
    rolled_back = 0
    for r in range(runs):
        harmed = False
        seen: dict[str, list[WindowEvidence]] = {m: [] for m in rates}
        for stage in stages:
            canary, fraction = assignment(cohort.tenants, stage.percent, f"neutral-{seed}-{r}")
            for _ in range(dwell):
                for m, ev in cohort.window(rng, canary, fraction, rates).items():
                    seen[m].append(ev)
                if any(g.evaluate(seen[g.measure]).verdict == "harm" for g in gates):
                    harmed = True
                    break
            if harmed:
                break
        rolled_back += harmed
    return rolled_back, runs


def controlled_rollout(cohort: Cohort, drop: float, rollout_id: str, rng: np.random.Generator,
                       cap: int) -> tuple[str, int]:
    """One rollout through the shipped low plan, decided by ``assess`` after every window: (outcome, windows)."""
    plan = shipped_plans().for_risk_class("low")
    rates = {m: (p, p - drop if m == "task_success" else p) for m, p in BASE_RATES.items()}
    ev = StageEvidence(per_measure={m: [] for m in rates}, stage_window_start=0)
    stage = 0
    for w in range(cap):
        canary, fraction = assignment(cohort.tenants, plan.stages[stage].percent, rollout_id)
        window = cohort.window(rng, canary, fraction, rates)
        for m, e in window.items():
            ev.per_measure[m].append(e)
        turns = window["task_success"]
        ev.windows.append(w)
        ev.window_turns[w] = (turns.canary.turns, turns.control.turns)
        assert ev.stage_window_start is not None
        a = assess(plan, stage, ev, w + 1 - ev.stage_window_start)
        if a.decision == "rollback":
            return f"rolled back at {plan.stages[stage].percent:g} %", w + 1
        if a.decision == "promote":
            return "promoted", w + 1
        if a.decision == "advance":
            stage += 1
            ev.stage_window_start = w + 1
    return f"still at {plan.stages[stage].percent:g} %", cap


def paired_window(rng: np.random.Generator, cohort: Cohort, p_live: float, p_shadow: float) -> PairedCounts:
    """One window of shadow pairs: every session's live and shadow turn share their random draw.

    Two runs of one agent on one input fail together unless the artifact
    changes the odds: a common uniform per session decides both outcomes.
    Each tenant releases (pairs, worse, better) through the DP mechanism.
    """
    merged = np.zeros(3)
    for _ in range(cohort.tenants):
        u = rng.random(cohort.sessions)
        live, shadow = u < p_live, u < p_shadow
        table = [cohort.sessions, int(np.sum(shadow & ~live)), int(np.sum(live & ~shadow))]
        merged += dp.release(np.asarray(table, dtype=np.int64), cohort.params)
    v = cohort.noise_var * cohort.tenants
    return PairedCounts(merged[1], v, merged[2], v, merged[0], v)


def unpaired_window(rng: np.random.Generator, cohort: Cohort, p_control: float, p_canary: float) -> WindowEvidence:
    """One window of the same sessions split 50/50 into canary and control (the best unpaired split)."""
    merged = np.zeros(4)
    for _ in range(cohort.tenants):
        n_c = int(rng.binomial(cohort.sessions, 0.5))
        n_k = cohort.sessions - n_c
        table = [n_c, n_k, int(rng.binomial(n_c, p_canary)), int(rng.binomial(n_k, p_control))]
        merged += dp.release(np.asarray(table, dtype=np.int64), cohort.params)
    v = cohort.noise_var * cohort.tenants
    return WindowEvidence(ArmCounts(merged[2], v, merged[0], v), ArmCounts(merged[3], v, merged[1], v))


def paired_vs_unpaired(cohort: Cohort, p: float, harm: float, runs: int, cap: int, alpha: float, tau: float,
                       seed: int) -> dict[str, tuple[int, int, float]]:
    """Per design and effect: (rollbacks, runs, median windows to rollback) with at most ``cap`` windows."""
    out: dict[str, tuple[int, int, float]] = {}
    for design in ("paired", "unpaired"):
        for label, effect in (("neutral", 0.0), ("harmful", harm)):
            rng = np.random.default_rng([seed, int(effect * 1e4), design == "paired"])
            hits, when = 0, []
            for _ in range(runs):
                seen_p: list[PairedCounts] = []
                seen_u: list[WindowEvidence] = []
                for w in range(cap):
                    if design == "paired":
                        seen_p.append(paired_window(rng, cohort, p, p + effect))
                        verdict = PairedGate("m", "rise", 0.0, alpha, tau).evaluate(seen_p).verdict
                    else:
                        seen_u.append(unpaired_window(rng, cohort, p, p + effect))
                        verdict = Gate("m", "rise", 0.0, alpha, tau).evaluate(seen_u).verdict
                    if verdict == "harm":
                        hits += 1
                        when.append(w + 1)
                        break
            out[f"{design}/{label}"] = (hits, runs, statistics.median(when) if when else math.nan)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke run, noisier figures)")
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=400, help="sessions per tenant per window")
    ap.add_argument("--stage", type=float, default=10.0, help="stage percent during the degradation runs")
    ap.add_argument("--only-paired", action="store_true", help="only the paired-vs-unpaired comparison (4)")
    args = ap.parse_args(argv)
    runs = 15 if args.quick else 60
    neutral_runs = 40 if args.quick else 200

    scale = dp.calibrate_scale(dp.Mechanism.DISCRETE_GAUSSIAN, L0, LINF, rho=RHO_PER_RELEASE)
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, scale, L0, LINF)
    cohort = Cohort(args.tenants, args.sessions, params, discrete_gaussian_variance(scale))
    plan = shipped_plans().for_risk_class("low")
    gated_stages = sum(1 for s in plan.stages if s.percent < 100)
    alpha = plan_gates(plan)[0].alpha  # plan alpha / gates: one confidence sequence per gate per rollout
    gate = Gate("task_success", "drop", 0.0, alpha, plan.mixture_scale)
    var, canary_per_window = window_variance(cohort, args.stage, BASE_RATES["task_success"])
    if args.only_paired:
        print_paired(cohort, alpha, plan.mixture_scale, args.quick)
        return 0

    print(
        f"cohort: {args.tenants} tenants x {args.sessions} sessions/window; stage {args.stage:g} % "
        f"(~{canary_per_window:.0f} canary sessions/window); discrete Gaussian sigma={scale:g} per cell "
        f"(rho={RHO_PER_RELEASE} per release); task_success gate margin 0, alpha per test {alpha:.5f} "
        f"(plan alpha {plan.alpha} / {len(plan.gates)} gates); {runs} runs per row"
    )
    print()
    header = (
        f"{'drop':>6} | {'seq median win':>14} | {'seq p90 win':>11} | {'seq median events':>17} | "
        f"{'missed':>6} | {'fixed win (power .9)':>20} | {'fixed events':>12}"
    )
    print(header)
    print("-" * len(header))
    for points in (2, 5, 10):
        drop = points / 100
        cap = 400 if points == 2 else 120
        wins, events, missed = time_to_rollback(cohort, gate, drop, args.stage, runs, cap, seed=points)
        fixed = fixed_horizon_windows(drop, 0.0, var, alpha, 0.9)
        med = statistics.median(wins) if wins else math.nan
        p90 = float(np.percentile(wins, 90)) if wins else math.nan
        ev = statistics.median(events) if events else math.nan
        print(
            f"{points:>4} pt | {med:>14.1f} | {p90:>11.1f} | {ev:>17.0f} | {missed:>3}/{runs:<2} | "
            f"{fixed:>20d} | {fixed * canary_per_window:>12.0f}"
        )
    print()
    dwell = 4
    bad, total = false_rollbacks(cohort, neutral_runs, dwell, seed=99)
    print(
        f"neutral artifact, low-risk plan (6 gates, {gated_stages} stages x {dwell} windows): "
        f"false rollbacks {bad}/{total} = {bad / total:.3f} (bound: plan alpha {plan.alpha})"
    )
    print()
    whole = 20 if args.quick else 60
    cap = 150
    print(f"whole rollouts through the low-risk plan, decided by the controller's assess ({whole} runs, "
          f"at most {cap} windows):")
    for points in (0, 2, 5):
        rng = np.random.default_rng(1000 + points)
        runs_out = [controlled_rollout(cohort, points / 100, f"whole-{points}-{r}", rng, cap) for r in range(whole)]
        outcomes: dict[str, int] = {}
        for o, _ in runs_out:
            outcomes[o] = outcomes.get(o, 0) + 1
        med = statistics.median(w for _, w in runs_out)
        summary = ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items()))
        print(f"  task-success drop {points:>2} pt: {summary}; median windows {med:g}")
    print()
    print_paired(cohort, alpha, plan.mixture_scale, args.quick)
    return 0


def print_paired(cohort: Cohort, alpha: float, tau: float, quick: bool) -> None:
    p, harm = BASE_RATES["tool_error"] * 2.5, 0.01  # a 5 % failure rate; the harmful candidate adds 1 point
    runs, cap = (20, 40) if quick else (100, 60)
    res = paired_vs_unpaired(cohort, p, harm, runs, cap, alpha, tau, seed=7)
    print(f"paired shadow vs unpaired canary: {cohort.tenants} tenants x {cohort.sessions} sessions/window, failure "
          f"rate {p:.2f}, harmful +{harm:.2f}, margin 0, alpha {alpha:.5f} per gate, mixture {tau}, "
          f"{runs} runs of at most {cap} windows each")
    print(f"{'design':>9} | {'false rollbacks (neutral)':>25} | {'detected (harmful)':>18} | {'median windows':>14}")
    for design in ("paired", "unpaired"):
        fb, n, _ = res[f"{design}/neutral"]
        det, n2, med = res[f"{design}/harmful"]
        print(f"{design:>9} | {fb:>3}/{n:<3} = {fb / n:>5.3f}{'':>9} | {det:>3}/{n2:<3} = {det / n2:>5.3f} | {med:>14g}")


if __name__ == "__main__":
    sys.exit(main())
