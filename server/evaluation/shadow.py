"""The shadow gate: a paired (McNemar-style) always-valid test on (live, shadow) pairs.

In the shadow stage the resolve API hands a sticky share of sessions the
candidate to run beside the live path (its output discarded). Each
collector pairs every shadow turn with its live turn and releases, per
window and measure, the discordant pairs as two slices of its window report:
``shadow-worse-<rollout>`` (the shadow is worse on the measure than its live
twin) and ``shadow-better-<rollout>`` (the reverse); each complete pair counts
one turn under both (see :func:`aggregation.rollout_plan.shadow_label`).

:func:`assess_shadow` runs one :class:`aggregation.sequential.PairedGate`
per plan gate at ``alpha / gates`` (the live gates' framework), with the
stage's margin (a gate's own margin when smaller, so safety stays 0):
harm rolls back; moving on into the live stages needs ``min_cases`` pairs,
the dwell, a usable batch for every gate and no harm shown — the rule the
live stages advance by (non-inferiority is asked for at promotion, where
the live gates' intervals must exclude harm beyond every margin).
Shadow sessions are never canary exposure: their live turns carry the
stable label, and the shadow turns never enter the live slices.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregation.rollout_plan import RolloutPlan, ValidationStage, shadow_label
from aggregation.schema import TURNS
from aggregation.sequential import PairedCounts, PairedGate, Verdict
from server.evaluation.slices import LabelledSlices, ValidationDecision, VerdictsJson


@dataclass
class ShadowAssessment(VerdictsJson):
    decision: ValidationDecision
    reason: str
    verdicts: list[Verdict]
    pairs: float
    tenants: int
    windows: int
    #: WAIT because dwell, tenants, pairs or a usable batch are missing (see ReplayAssessment's).
    evidence_missing: bool = False


def paired_evidence(slices: LabelledSlices, rollout_id: str, measure: str) -> list[PairedCounts]:
    worse, better = shadow_label(rollout_id, "worse"), shadow_label(rollout_id, "better")
    out = []
    for w in slices.windows:
        wc, bc = slices.get(w, worse, measure), slices.get(w, better, measure)
        wt, bt = slices.get(w, worse, TURNS), slices.get(w, better, TURNS)
        # Both labels count every pair once: their mean is the pair count, with a quarter of the summed noise.
        out.append(PairedCounts(wc.count, wc.count_variance, bc.count, bc.count_variance,
                                (wt.turns + bt.turns) / 2.0, (wt.turns_variance + bt.turns_variance) / 4.0))
    return out


def assess_shadow(
    plan: RolloutPlan, stage: ValidationStage, rollout_id: str, slices: LabelledSlices, *, k: int,
    elapsed_windows: int,
) -> ShadowAssessment:
    gates = [PairedGate(g.measure, g.direction, min(g.margin, stage.margin), plan.alpha_per_gate,
                        plan.mixture_scale, max(1.0, min(stage.min_cases, 30.0))) for g in plan.gates]
    verdicts = [g.evaluate(paired_evidence(slices, rollout_id, g.measure)) for g in gates]
    pairs = sum(p.pairs for p in paired_evidence(slices, rollout_id, TURNS))

    def result(decision: ValidationDecision, reason: str, *, missing: bool = False) -> ShadowAssessment:
        return ShadowAssessment(decision, reason, verdicts, pairs, slices.min_tenants, len(slices.windows),
                                evidence_missing=missing)

    harm = [v for v in verdicts if v.verdict == "harm"]
    if harm:
        return result(ValidationDecision.HARM, "shadow: " + "; ".join(v.reason for v in harm))
    missing = []
    if elapsed_windows < stage.min_windows:
        missing.append(f"dwell {elapsed_windows}/{stage.min_windows} windows")
    need = max(k, stage.min_tenants)
    if slices.min_tenants < need:
        missing.append(f"pairs from {slices.min_tenants} tenant(s) < {need} needed")
    if pairs < stage.min_cases:
        missing.append(f"{pairs:.0f} < {stage.min_cases:g} pairs")
    thin = [v.gate for v in verdicts if v.verdict == "insufficient"]
    if thin:
        missing.append(f"no usable batch of pairs yet for {', '.join(thin)}")
    if missing:
        return result(ValidationDecision.WAIT, "shadow evidence missing: " + "; ".join(missing), missing=True)
    return result(ValidationDecision.PASS, f"shadow: {pairs:.0f} pairs, the paired test shows no gate worse beyond its margin")
