"""The noise plan's privacy figures, checked against exact Renyi divergences computed here.

For small parameters the pmf of a sum of t discrete Gaussians is computed
exactly (log-space convolution of truncated pmfs; the truncated mass is below
1e-300), shifted by the sensitivity, and its Renyi divergence D_alpha
evaluated on a grid of alpha (up to 60: the support reaches far enough past
alpha * shift that truncation does not touch the dominant terms). zCDP with rho means D_alpha <= alpha * rho for
every alpha > 1, so the reported rho must bound every D_alpha / alpha, and
should not be much larger than their maximum.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregation import dp
from aggregation.secagg import InvalidRoundParams, kls_rho, kls_tau, plan_noise

ALPHAS = [1.25, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 35.0, 60.0]
TIGHTNESS = 1.5


def _log_dg(sigma: float, half: int) -> np.ndarray:
    x = np.arange(-half, half + 1, dtype=np.float64)
    logw = -(x * x) / (2 * sigma * sigma)
    return logw - np.logaddexp.reduce(logw)


def _log_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # out[k] = logsumexp_i a[i] + b[k - i]
    out = np.full(a.size + b.size - 1, -np.inf)
    for i, ai in enumerate(a):
        out[i : i + b.size] = np.logaddexp(out[i : i + b.size], ai + b)
    return out


def _log_sum_pmf(sigma: float, t: int, shift: int) -> np.ndarray:
    # D_alpha's sum is dominated near x ~ alpha * shift: the support must reach well past it,
    # or the truncated edges (where the convolution of truncated pmfs is wrong) leak in.
    half = int(math.ceil(40 * sigma + max(ALPHAS) * shift)) + 2
    single = _log_dg(sigma, half)
    total = single
    for _ in range(t - 1):
        total = _log_convolve(total, single)
    return total  # support -t*half .. t*half


def _renyi(log_p: np.ndarray, shift: int, alpha: float) -> float:
    # D_alpha(P + shift || P) over the common support (the cut edges carry < 1e-300 of either).
    lp = log_p[shift:]
    lq = log_p[: log_p.size - shift]
    return float(np.logaddexp.reduce(alpha * lp + (1 - alpha) * lq) / (alpha - 1))


def _max_ratio(log_p: np.ndarray, shift: int, coords: int = 1) -> float:
    return max(coords * _renyi(log_p, shift, a) / a for a in ALPHAS)


@pytest.mark.parametrize(
    ("sigma_central", "l0", "linf", "t"),
    [(3.0, 1, 1, 4), (2.0, 1, 1, 3), (6.0, 2, 2, 5), (1.0, 1, 1, 2)],
)
def test_cohort_loss_bounds_the_exact_divergence_and_is_tight(sigma_central: float, l0: int, linf: int, t: int) -> None:
    plan = plan_noise(sigma_central, l0, linf, roster_size=t + 2, threshold=t)
    shift = plan.scale_factor * linf  # per touched coordinate, in scaled units
    log_p = _log_sum_pmf(plan.sigma_share, t, shift)
    # l0 touched coordinates, independent: divergences add.
    worst = _max_ratio(log_p, shift, coords=l0)
    assert worst <= plan.cohort_loss.rho * (1 + 1e-9)
    assert plan.cohort_loss.rho <= TIGHTNESS * worst
    assert plan.cohort_loss.rho >= plan.central_loss.rho
    assert plan.cohort_loss.epsilon == pytest.approx(dp.epsilon_at_delta(plan.cohort_loss.rho, plan.delta))


@pytest.mark.parametrize(("sigma", "n"), [(0.5, 2), (0.6, 3), (0.8, 4), (1.0, 3)])
def test_kls_bound_holds_where_tau_matters(sigma: float, n: int) -> None:
    # Below sigma ~ 1.5 the sum is visibly not a discrete Gaussian; the tau terms must still cover it.
    for shift in (1, 2):
        log_p = _log_sum_pmf(sigma, n, shift)
        rho = kls_rho(sigma, n, l2=float(shift), l1=float(shift), dims=1)
        assert _max_ratio(log_p, shift) <= rho * (1 + 1e-9)
    assert kls_tau(sigma, n) > 1e-6


def test_own_worst_case_loss_is_opendps_map_of_the_single_share() -> None:
    plan = plan_noise(3.0, 1, 1, roster_size=6, threshold=4)
    log_p = _log_sum_pmf(plan.sigma_share, 1, plan.scale_factor)
    worst = _max_ratio(log_p, plan.scale_factor)
    assert worst <= plan.own_worst_case_loss.rho * (1 + 1e-9)
    assert plan.own_worst_case_loss.rho <= TIGHTNESS * worst
    expected = dp.privacy_loss(
        dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, plan.sigma_share, 1, plan.scale_factor, plan.delta)
    )
    assert plan.own_worst_case_loss == expected
    # The threshold is what makes the cohort's loss t times smaller than one share's.
    assert plan.own_worst_case_loss.rho == pytest.approx(4 * plan.central_loss.rho, rel=1e-9)


def test_colluders_weaken_the_cohort_guarantee_as_computed() -> None:
    plan = plan_noise(8.0, 2, 1, roster_size=10, threshold=6)
    assert plan.loss_with_honest_shares(6) == plan.cohort_loss
    assert plan.loss_with_honest_shares(1) == plan.own_worst_case_loss
    rhos = [plan.loss_with_honest_shares(h).rho for h in range(2, 7)]
    assert rhos == sorted(rhos, reverse=True)  # fewer honest shares, more loss
    honest = 3
    log_p = _log_sum_pmf(plan.sigma_share, honest, plan.scale_factor)
    worst = _max_ratio(log_p, plan.scale_factor, coords=2)
    assert worst <= plan.loss_with_honest_shares(honest).rho * (1 + 1e-9) <= TIGHTNESS * worst
    with pytest.raises(InvalidRoundParams):
        plan.loss_with_honest_shares(0)


def test_share_calibration_and_scaling() -> None:
    plan = plan_noise(10.0, 4, 1, roster_size=100, threshold=25)
    assert plan.scale_factor == 1
    assert plan.sigma_share == pytest.approx(2.0)
    small = plan_noise(10.0, 4, 1, roster_size=100, threshold=50)  # 10 / sqrt(50) = 1.41 < 1.5
    assert small.scale_factor == 2
    assert small.sigma_share >= 1.5
    assert small.tau < 1e-8
    # Scaling keeps the privacy ratio: the same central loss as the unscaled central mechanism.
    unscaled = dp.privacy_loss(dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 10.0, 4, 1))
    assert small.central_loss.rho == pytest.approx(unscaled.rho, rel=1e-9)
    assert small.sigma_sum(50) == pytest.approx(2 * 10.0, rel=1e-12)
    table = np.array([0, 3, -1], dtype=np.int64)
    np.testing.assert_array_equal(small.scale_table(table), 2 * table)
    np.testing.assert_array_equal(small.unscale(small.scale_table(table)), table.astype(np.float64))


@pytest.mark.parametrize(
    "args",
    [(0.0, 1, 1, 5, 3), (3.0, 0, 1, 5, 3), (3.0, 1, 1, 5, 6), (3.0, 1, 1, 5, 1), (float("nan"), 1, 1, 5, 3)],
)
def test_plan_refuses_unusable_parameters(args: tuple[float, int, int, int, int]) -> None:
    with pytest.raises((InvalidRoundParams, dp.InvalidReleaseParams)):
        plan_noise(*args)
