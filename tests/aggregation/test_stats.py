"""Noise variances and rate intervals.

The coverage simulations draw from numpy's generator with a fixed seed (the
noise from the exact discrete pmfs), so they are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregation import dp
from aggregation.stats import noise_variance, ratio_interval, z_value

SEED = 20261125


def _support_variance(mechanism: str, scale: float) -> float:
    # Independent of the implementation: plain Python over the support.
    half = int(60 * scale) + 5
    if mechanism == "discrete_gaussian":
        weights = {x: math.exp(-x * x / (2 * scale * scale)) for x in range(-half, half + 1)}
    else:
        weights = {x: math.exp(-abs(x) / scale) for x in range(-half, half + 1)}
    mass = math.fsum(weights.values())
    return math.fsum(x * x * w for x, w in weights.items()) / mass


@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 3.0, 12.649110640673518])
def test_gaussian_variance_is_the_support_sum(scale: float) -> None:
    assert noise_variance("discrete_gaussian", scale) == pytest.approx(
        _support_variance("discrete_gaussian", scale), rel=1e-12
    )


def test_gaussian_variance_differs_from_sigma_squared_only_at_small_scale() -> None:
    assert noise_variance("discrete_gaussian", 0.5) == pytest.approx(0.2150126750881, rel=1e-10)
    # Beyond the summation limit sigma^2 is returned; the sum agrees there.
    assert noise_variance("discrete_gaussian", 999.0) == pytest.approx(999.0**2, rel=1e-12)
    assert noise_variance("discrete_gaussian", 5000.0) == 5000.0**2


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0, 16.0])
def test_laplace_variance_closed_form_matches_the_support_sum(scale: float) -> None:
    assert noise_variance("discrete_laplace", scale) == pytest.approx(
        _support_variance("discrete_laplace", scale), rel=1e-12
    )


def test_laplace_variance_is_accurate_at_large_scale() -> None:
    # 2 b^2 - 1/6 + O(1/b^2): the expm1 form keeps this without cancellation.
    assert noise_variance("discrete_laplace", 1e6) == pytest.approx(2e12 - 1 / 6, abs=1e-3)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_variance_refuses_invalid_scales(scale: float) -> None:
    with pytest.raises(dp.InvalidNoiseScale):
        noise_variance("discrete_gaussian", scale)


def test_z_value() -> None:
    assert z_value(0.95) == pytest.approx(1.959963984540054, rel=1e-12)
    assert z_value(0.99) == pytest.approx(2.5758293035489, rel=1e-12)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            z_value(bad)


def test_without_noise_the_interval_is_wilsons() -> None:
    n, k, z = 200, 30, z_value(0.95)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    rate, low, high = ratio_interval(k, 0.0, n, 0.0)
    assert rate == p
    assert low == pytest.approx(centre - half, rel=1e-12)
    assert high == pytest.approx(centre + half, rel=1e-12)


def test_noise_widens_the_interval() -> None:
    _, low0, high0 = ratio_interval(30, 0.0, 200, 0.0)
    _, low1, high1 = ratio_interval(30, 100.0, 200, 100.0)
    assert low1 < low0 and high1 > high0


def test_an_insignificant_denominator_gives_the_uninformative_interval() -> None:
    assert ratio_interval(3, 25.0, 0, 25.0) == (0.0, 0.0, 1.0)
    assert ratio_interval(3, 25.0, 5, 25.0)[1:] == (0.0, 1.0)


def test_interval_stays_within_zero_and_one() -> None:
    for num, den in [(-4, 100), (104, 100), (0, 50), (50, 50)]:
        rate, low, high = ratio_interval(num, 9.0, den, 9.0)
        assert 0.0 <= low <= rate <= high <= 1.0


def test_ratio_interval_refuses_negative_variance() -> None:
    with pytest.raises(ValueError):
        ratio_interval(1, -1.0, 10, 0.0)


def _pmf(mechanism: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    half = int(math.ceil(40 * scale)) + 2
    x = np.arange(-half, half + 1)
    if mechanism == "discrete_gaussian":
        w = np.exp(-(x * x) / (2 * scale * scale))
    else:
        w = np.exp(-np.abs(x) / scale)
    return x, w / w.sum()


def _coverage(
    mechanism: str, scale: float, tenants: int, turns: int, p: float, reps: int, *, declare_noise: bool = True
) -> float:
    """Share of merged-cohort intervals covering the true rate p."""
    rng = np.random.default_rng(SEED)
    support, pmf = _pmf(mechanism, scale)
    variance = tenants * noise_variance(mechanism, scale) if declare_noise else 0.0
    covered = 0
    for _ in range(reps):
        num = rng.binomial(turns, p, size=tenants).sum() + rng.choice(support, size=tenants, p=pmf).sum()
        den = turns * tenants + rng.choice(support, size=tenants, p=pmf).sum()
        _, low, high = ratio_interval(float(num), variance, float(den), variance)
        covered += low <= p <= high
    return covered / reps


COVERAGE_CASES = [
    ("discrete_gaussian", 5.0, 5, 40, 0.1),
    ("discrete_gaussian", 12.649110640673518, 20, 50, 0.05),
    ("discrete_laplace", 4.0, 20, 10, 0.3),
    ("discrete_laplace", 2.0, 5, 200, 0.02),
]


@pytest.mark.parametrize(("mechanism", "scale", "tenants", "turns", "p"), COVERAGE_CASES)
def test_ratio_interval_covers_at_the_nominal_rate(
    mechanism: str, scale: float, tenants: int, turns: int, p: float
) -> None:
    # 4000 replications: the Monte Carlo standard error of the coverage is 0.0034.
    assert 0.935 <= _coverage(mechanism, scale, tenants, turns, p, 4000) <= 0.965


def test_coverage_check_detects_an_interval_that_ignores_the_noise() -> None:
    assert _coverage("discrete_gaussian", 5.0, 5, 40, 0.1, 1000, declare_noise=False) < 0.8
