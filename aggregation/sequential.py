"""Always-valid canary-vs-control gates on DP window reports.

Method
------
Each window, the merged DP signals give, for the canary slice and the
control slice (``artifact_version`` = candidate label vs stable label), a
noisy count ``X`` of the gate's measure and a noisy count ``N`` of turns,
with the DP noise variances the reports declared. Consecutive windows are
grouped into *batches* until both arms hold enough turns for a rate to be
meaningful (the grouping looks only at ``N``, whose noise is independent of
the measure's). Batch ``i`` yields the difference of rates
``d_i = X_c/N_c - X_k/N_k`` with variance (delta method + binomial sampling)

    v_i = sum over arms of  p(1-p)/N  +  (var X + p^2 var N) / N^2

where ``p`` is the pooled rate of the batch: sampling variance *and* the DP
noise variance of numerator and denominator both enter.

For a true difference ``delta`` the inverse-variance weighted sum
``S = sum (d_i - delta)/v_i`` with intrinsic time ``V = sum 1/v_i`` is, under
the Gaussian approximation of each batch, a martingale with
``exp(lambda S - lambda^2 V / 2)`` a martingale for every ``lambda``. Mixing
``lambda ~ N(0, tau^2)`` (Robbins' normal mixture; the mSPRT of Johari,
Pekelis & Walsh 2017; Howard, Ramdas, McAuliffe & Sekhon 2021, eq. 3.7) gives
the test martingale ``M = (1 + tau^2 V)^(-1/2) exp(tau^2 S^2 / (2 (1 + tau^2 V)))``
and by Ville's inequality ``P(exists t: M_t >= 1/alpha) <= alpha``. Inverting:

    delta_hat = (sum d_i / v_i) / V
    radius    = sqrt((1 + tau^2 V) / tau^2 * (log(1 + tau^2 V) + 2 log(1/alpha))) / V

and ``[delta_hat - radius, delta_hat + radius]`` is a confidence *sequence*:
with probability at least ``1 - alpha`` it contains ``delta`` at every batch
simultaneously, however often it is looked at and whenever the look stops.
``tau`` (the plan's ``mixture_scale``) is the effect size the boundary is
tightest for.

Decisions and guarantees
------------------------
A gate shows *harm* when the whole interval lies beyond its margin: for a
``drop`` gate ``high < -margin``, for a ``rise`` gate ``low > margin``
(safety incidents: margin 0, any significant rise). If the canary is no
worse than the margin, the probability that the gate *ever* shows harm is at
most ``alpha`` (in fact about ``alpha/2``: one side of a symmetric mixture).
The controller runs one sequence per gate over the whole rollout (evidence
accumulates across stages; the sequence is valid at any stopping time) and
gives each gate ``alpha / gates``, so the probability of any false rollback
over a whole rollout is at most the plan's ``alpha`` (Bonferroni over the
gates). The same sequence bounds the other side: before promotion the
controller asks every gate with a positive margin for non-inferiority (the
interval excludes harm beyond the margin), so a candidate worse than a
margin is promoted with probability at most ``alpha / gates`` per gate. A real harm of size
``h > margin`` is detected with probability one as evidence grows; the time
needed scales as ``log(1/alpha) / (h - margin)^2`` in units of 1/v.

The guarantee is exact for Gaussian batch statistics with known variances;
for DP counts it rests on the per-batch normal approximation (discrete
Gaussian noise is near-Gaussian; the batching rule keeps ``N`` large enough
that the ratio is near-normal), which the type-I simulation in
``tests/rollout/test_sequential.py`` checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Direction = Literal["drop", "rise"]
VerdictKind = Literal["ok", "harm", "insufficient"]

#: Minimum turns per arm before a batch of windows is closed.
MIN_BATCH_TURNS = 30.0
#: And the denominator's DP noise must be small against it (relative SD).
MAX_TURNS_RELATIVE_SD = 0.25


@dataclass(frozen=True)
class ArmCounts:
    """One arm's merged counts for one window: the measure and the turns, with DP noise variances."""

    count: float
    count_variance: float
    turns: float
    turns_variance: float

    def __add__(self, other: ArmCounts) -> ArmCounts:
        return ArmCounts(
            self.count + other.count,
            self.count_variance + other.count_variance,
            self.turns + other.turns,
            self.turns_variance + other.turns_variance,
        )


ZERO = ArmCounts(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class WindowEvidence:
    """Canary and control counts of one window (time order is the caller's list order)."""

    canary: ArmCounts
    control: ArmCounts


@dataclass(frozen=True)
class Verdict:
    gate: str
    direction: Direction
    margin: float
    verdict: VerdictKind
    #: canary rate - control rate (weighted over batches); 0 when insufficient.
    estimate: float
    low: float
    high: float
    batches: int
    canary_turns: float
    control_turns: float
    reason: str


def mixture_radius(intrinsic_time: float, alpha: float, tau: float) -> float:
    """Half-width of the normal-mixture confidence sequence for the weighted mean at intrinsic time V."""
    if intrinsic_time <= 0:
        return math.inf
    t2v = tau * tau * intrinsic_time
    return math.sqrt((1.0 + t2v) / (tau * tau) * (math.log1p(t2v) + 2.0 * math.log(1.0 / alpha))) / intrinsic_time


def confidence_sequence(batch_stats: Sequence[tuple[float, float]], alpha: float, tau: float) -> tuple[float, float, float]:
    """(estimate, low, high) of the normal-mixture confidence sequence over ``(d_i, v_i)`` batches.

    The inverse-variance weighted mean of the batch differences and the
    radius of :func:`mixture_radius`; the same sequence every gate uses
    (unpaired canary, paired shadow, replay).
    """
    if not batch_stats:
        return 0.0, -math.inf, math.inf
    weighted = sum(d / v for d, v in batch_stats)
    info = sum(1.0 / v for _, v in batch_stats)
    estimate = weighted / info
    radius = mixture_radius(info, alpha, tau)
    return estimate, estimate - radius, estimate + radius


def rate_difference(canary: ArmCounts, control: ArmCounts) -> tuple[float, float]:
    """(canary rate - control rate, its variance incl. DP noise and sampling)."""
    nc, nk = max(canary.turns, 1.0), max(control.turns, 1.0)
    rc, rk = canary.count / nc, control.count / nk
    pooled = min(1.0, max(0.0, (canary.count + control.count) / (nc + nk)))
    # A floor of half a count keeps a batch that observed no events from
    # claiming zero sampling variance.
    p_c = min(1.0, max(pooled, 0.5 / nc))
    p_k = min(1.0, max(pooled, 0.5 / nk))
    var = (
        p_c * (1 - p_c) / nc
        + (canary.count_variance + p_c * p_c * canary.turns_variance) / (nc * nc)
        + p_k * (1 - p_k) / nk
        + (control.count_variance + p_k * p_k * control.turns_variance) / (nk * nk)
    )
    return rc - rk, var


def batches(evidence: Sequence[WindowEvidence], min_turns: float = MIN_BATCH_TURNS) -> list[WindowEvidence]:
    """Group consecutive windows until each arm has enough, not-too-noisy turns.

    A trailing group that is still too thin is left out (it joins the next
    window once that arrives).
    """
    out: list[WindowEvidence] = []
    canary, control = ZERO, ZERO
    for w in evidence:
        canary, control = canary + w.canary, control + w.control
        if _thick(canary, min_turns) and _thick(control, min_turns):
            out.append(WindowEvidence(canary, control))
            canary, control = ZERO, ZERO
    return out


def _thick(arm: ArmCounts, min_turns: float) -> bool:
    return arm.turns >= min_turns and math.sqrt(max(arm.turns_variance, 0.0)) <= MAX_TURNS_RELATIVE_SD * arm.turns


@dataclass(frozen=True)
class Gate:
    """A pre-declared gate: ``measure`` must not ``direction`` by more than ``margin``."""

    measure: str
    direction: Direction
    margin: float
    alpha: float
    mixture_scale: float = 0.05
    min_batch_turns: float = MIN_BATCH_TURNS

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if self.mixture_scale <= 0:
            raise ValueError("mixture_scale must be positive")
        if self.direction not in ("drop", "rise"):
            raise ValueError("direction must be 'drop' or 'rise'")

    def evaluate(self, evidence: Sequence[WindowEvidence]) -> Verdict:
        """The gate's verdict on the windows seen so far (always valid: may be called after every window)."""
        canary_turns = sum(w.canary.turns for w in evidence)
        control_turns = sum(w.control.turns for w in evidence)
        groups = batches(evidence, self.min_batch_turns)
        if not groups:
            return Verdict(
                self.measure, self.direction, self.margin, "insufficient", 0.0, -math.inf, math.inf, 0,
                canary_turns, control_turns,
                f"no batch with {self.min_batch_turns:g}+ turns in both canary and control yet",
            )
        estimate, low, high = confidence_sequence(
            [rate_difference(g.canary, g.control) for g in groups], self.alpha, self.mixture_scale
        )
        if self.direction == "drop":
            harm = high < -self.margin
            bound = f"upper bound {high:+.4f} < -{self.margin:g}"
        else:
            harm = low > self.margin
            bound = f"lower bound {low:+.4f} > {self.margin:g}"
        kind: VerdictKind = "harm" if harm else "ok"
        reason = (
            f"{self.measure} {self.direction}: {bound}" if harm
            else f"{self.measure}: no significant {self.direction} beyond {self.margin:g}"
        )
        return Verdict(
            self.measure, self.direction, self.margin, kind, estimate, low, high, len(groups),
            canary_turns, control_turns, reason,
        )


def fixed_horizon_windows(
    effect: float, margin: float, window_variance: float, alpha: float, power: float
) -> int:
    """Windows a fixed-horizon z-test needs to show ``effect`` beyond ``margin``.

    Same convention as the gate: the two-sided interval at level ``alpha``
    must exclude the margin, with probability ``power`` when the true
    difference is ``effect``; each window contributes ``1/window_variance``.
    """
    from statistics import NormalDist

    gap = abs(effect) - margin
    if gap <= 0:
        return 0
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(1, math.ceil((z / gap) ** 2 * window_variance))


# -- paired (shadow) evidence -----------------------------------------------------------------
#
# In shadow mode every complete pair is one live turn and the candidate's turn
# on the same input. Per gate measure the collector releases, per window, the
# number of pairs ``N`` and the discordant counts: ``W`` pairs where the
# shadow is worse on the measure, ``B`` where it is better (McNemar's b and
# c). The paired difference of rates is ``d = (W - B) / N`` with per-pair
# values in {-1, 0, 1}: its sampling variance ``((W + B)/N - d^2) / N`` only
# counts discordant pairs, which is where the paired test's power comes from
# (an unpaired canary pays for the full binomial variance of both arms). The
# DP noise of W, B and N enters as in :func:`rate_difference`. Batches feed
# the same normal-mixture confidence sequence as the unpaired gates, so the
# guarantees of the module docstring carry over (always valid, alpha per gate).


@dataclass(frozen=True)
class PairedCounts:
    """One window's paired outcomes of a measure: discordant pair counts and the number of pairs."""

    worse: float
    worse_variance: float
    better: float
    better_variance: float
    pairs: float
    pairs_variance: float

    def __add__(self, other: PairedCounts) -> PairedCounts:
        return PairedCounts(
            self.worse + other.worse, self.worse_variance + other.worse_variance,
            self.better + other.better, self.better_variance + other.better_variance,
            self.pairs + other.pairs, self.pairs_variance + other.pairs_variance,
        )


PAIRED_ZERO = PairedCounts(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def paired_difference(c: PairedCounts) -> tuple[float, float]:
    """(shadow-minus-live rate of harm, its variance incl. DP noise), ``harm`` = worse minus better pairs."""
    n = max(c.pairs, 1.0)
    d = (c.worse - c.better) / n
    # Half a discordant pair as a floor: a batch without discordance is not certainty.
    discordant = max(c.worse + c.better, 0.5) / n
    sampling = max(discordant - d * d, 0.5 / n) / n
    noise = (c.worse_variance + c.better_variance + d * d * c.pairs_variance) / (n * n)
    return d, sampling + noise


def paired_batches(evidence: Sequence[PairedCounts], min_pairs: float = MIN_BATCH_TURNS) -> list[PairedCounts]:
    """Consecutive windows grouped until a batch holds enough, not-too-noisy pairs."""
    out: list[PairedCounts] = []
    acc = PAIRED_ZERO
    for w in evidence:
        acc = acc + w
        if acc.pairs >= min_pairs and math.sqrt(max(acc.pairs_variance, 0.0)) <= MAX_TURNS_RELATIVE_SD * acc.pairs:
            out.append(acc)
            acc = PAIRED_ZERO
    return out


@dataclass(frozen=True)
class PairedGate:
    """A gate judged on paired (live, shadow) outcomes: harm when the shadow is worse by more than ``margin``.

    ``direction`` only names the measure's bad direction (``drop`` for
    task_success, ``rise`` for failures); the collector already oriented
    ``worse``/``better`` by it, so the test is one-sided on ``W - B`` alike.
    """

    measure: str
    direction: Direction
    margin: float
    alpha: float
    mixture_scale: float = 0.05
    min_batch_pairs: float = MIN_BATCH_TURNS

    def evaluate(self, evidence: Sequence[PairedCounts]) -> Verdict:
        pairs = sum(w.pairs for w in evidence)
        groups = paired_batches(evidence, self.min_batch_pairs)
        if not groups:
            return Verdict(self.measure, self.direction, self.margin, "insufficient", 0.0, -math.inf, math.inf, 0,
                           pairs, pairs, f"no batch with {self.min_batch_pairs:g}+ shadow pairs yet")
        estimate, low, high = confidence_sequence([paired_difference(g) for g in groups], self.alpha,
                                                  self.mixture_scale)
        harm = low > self.margin
        reason = (f"{self.measure}: shadow worse than live, paired lower bound {low:+.4f} > {self.margin:g}" if harm
                  else f"{self.measure}: paired test shows no harm beyond {self.margin:g}")
        return Verdict(self.measure, self.direction, self.margin, "harm" if harm else "ok", estimate, low, high,
                       len(groups), pairs, pairs, reason)
