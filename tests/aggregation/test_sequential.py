"""The always-valid canary-vs-control gate.

Windows are simulated at the level of merged DP window reports: binomial
counts per arm plus the merged noise of ``TENANTS`` discrete-Gaussian
releases (approximated by a rounded normal with the same variance, so the
simulation can be seeded; OpenDP's sampler cannot).
"""

from __future__ import annotations

import math

import numpy as np

from aggregation.sequential import (
    ArmCounts,
    Gate,
    WindowEvidence,
    batches,
    fixed_horizon_windows,
    mixture_radius,
    rate_difference,
)

TENANTS = 5
SIGMA = 2.0  # per-tenant noise scale per cell
NOISE_VAR = TENANTS * SIGMA**2


def _arm(rng: np.random.Generator, n: int, p: float, noise_var: float = NOISE_VAR) -> ArmCounts:
    sd = math.sqrt(noise_var)
    count = rng.binomial(n, p) + round(rng.normal(0, sd))
    turns = n + round(rng.normal(0, sd))
    return ArmCounts(float(count), noise_var, float(turns), noise_var)


def _window(rng: np.random.Generator, p_control: float, p_canary: float, n_canary: int = 60, n_control: int = 600):
    return WindowEvidence(_arm(rng, n_canary, p_canary), _arm(rng, n_control, p_control))


def _first_harm(gate: Gate, rng: np.random.Generator, p_control: float, p_canary: float, windows: int) -> int | None:
    seen: list[WindowEvidence] = []
    for w in range(windows):
        seen.append(_window(rng, p_control, p_canary))
        if gate.evaluate(seen).verdict == "harm":
            return w + 1
    return None


def test_no_data_is_insufficient_not_ok() -> None:
    gate = Gate("task_success", "drop", 0.02, alpha=0.05)
    v = gate.evaluate([])
    assert v.verdict == "insufficient"
    thin = WindowEvidence(ArmCounts(3, 20, 4, 20), ArmCounts(300, 20, 400, 20))
    assert gate.evaluate([thin]).verdict == "insufficient"


def test_thin_windows_are_pooled_into_one_batch() -> None:
    thin = WindowEvidence(ArmCounts(8, 1, 10, 1), ArmCounts(80, 1, 100, 1))
    assert len(batches([thin] * 2)) == 0
    grouped = batches([thin] * 7)
    assert len(grouped) == 2
    assert grouped[0].canary.turns == 30


def test_dp_noise_variance_widens_the_interval() -> None:
    quiet = [WindowEvidence(ArmCounts(80, 1, 100, 1), ArmCounts(800, 1, 1000, 1))] * 5
    noisy = [WindowEvidence(ArmCounts(80, 400, 100, 400), ArmCounts(800, 400, 1000, 400))] * 5
    gate = Gate("task_success", "drop", 0.02, alpha=0.05)
    q, n = gate.evaluate(quiet), gate.evaluate(noisy)
    assert q.estimate == n.estimate == 0.0
    assert (n.high - n.low) > 1.5 * (q.high - q.low)
    _, var_quiet = rate_difference(quiet[0].canary, quiet[0].control)
    _, var_noisy = rate_difference(noisy[0].canary, noisy[0].control)
    assert var_noisy > var_quiet


def test_confidence_sequence_is_wider_than_a_fixed_horizon_interval_but_shrinks() -> None:
    z = 1.959963984540054
    for v in (10.0, 1e3, 1e5):
        assert mixture_radius(v, 0.05, 0.05) > z / math.sqrt(v)
    assert mixture_radius(1e5, 0.05, 0.05) < mixture_radius(1e3, 0.05, 0.05) < mixture_radius(10.0, 0.05, 0.05)
    assert mixture_radius(0.0, 0.05, 0.05) == math.inf


def test_type_one_error_is_controlled_under_continuous_monitoring() -> None:
    """A neutral canary, looked at after every window for 30 windows, 300 times."""
    rng = np.random.default_rng(20261125)
    alpha = 0.05
    gate = Gate("task_success", "drop", 0.0, alpha=alpha)
    false_harm = sum(_first_harm(gate, rng, 0.8, 0.8, 30) is not None for _ in range(300))
    assert false_harm / 300 <= alpha

    # The naive fixed-horizon interval, peeked at every window, is not valid:
    # the same data rejects far more often.
    rng = np.random.default_rng(20261125)
    naive = 0
    for _ in range(300):
        seen: list[WindowEvidence] = []
        for _w in range(30):
            seen.append(_window(rng, 0.8, 0.8))
            d, v = zip(*(rate_difference(b.canary, b.control) for b in batches(seen)), strict=True)
            info = sum(1 / x for x in v)
            est = sum(di / vi for di, vi in zip(d, v, strict=True)) / info
            if est + 1.959963984540054 / math.sqrt(info) < 0.0:
                naive += 1
                break
    assert naive > false_harm


def test_a_real_drop_in_task_success_is_detected() -> None:
    rng = np.random.default_rng(7)
    gate = Gate("task_success", "drop", 0.02, alpha=0.05 / 30)
    hits = [_first_harm(gate, rng, 0.8, 0.65, 20) for _ in range(40)]
    assert sum(h is not None for h in hits) >= 38
    # And a drop within the margin is not called harm.
    rng = np.random.default_rng(8)
    inside = [_first_harm(gate, rng, 0.8, 0.79, 20) for _ in range(40)]
    assert sum(h is not None for h in inside) <= 1


def test_safety_gate_has_no_margin_and_catches_a_rise() -> None:
    rng = np.random.default_rng(11)
    gate = Gate("safety_incident", "rise", 0.0, alpha=0.05 / 30)
    seen = [_window(rng, 0.002, 0.08, n_canary=200, n_control=2000) for _ in range(10)]
    v = gate.evaluate(seen)
    assert v.verdict == "harm"
    assert v.low > 0.0
    assert 0.04 < v.estimate < 0.12


def test_fixed_horizon_sample_size_matches_the_normal_formula() -> None:
    assert fixed_horizon_windows(0.01, 0.02, 1e-3, 0.05, 0.8) == 0
    n = fixed_horizon_windows(0.07, 0.02, 0.004, 0.05, 0.8)
    assert n == math.ceil((1.959963984540054 + 0.8416212335729143) ** 2 / 0.05**2 * 0.004)
