"""Statistics of noisy counts: exact noise variances and rate intervals.

``noise_variance`` is exact for OpenDP's discrete distributions:

* discrete Gaussian with scale sigma, P(x) proportional to exp(-x^2 / 2 sigma^2)
  on the integers: the variance is the support sum
  sum x^2 exp(-x^2/2s^2) / sum exp(-x^2/2s^2), evaluated over |x| <= 40 sigma + 2
  (the tail beyond is below exp(-800) relative: zero in double precision).
  For sigma > 1000 the sum is not evaluated: by Poisson summation the variance
  differs from sigma^2 by a relative amount of order sigma^2 exp(-2 pi^2 sigma^2),
  already below 1e-70 at sigma = 3, so sigma^2 is the exact double.
* discrete Laplace with scale b, P(x) proportional to exp(-|x| / b): the closed
  form 2 t / (1 - t)^2 with t = exp(-1/b).

``ratio_interval`` gives a confidence interval for a rate num/den where both
counts are DP-noisy sums (independent noise of known variance) and the
numerator is, given the true denominator D, binomial: num = Bin(D, p) + noise.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from aggregation.dp import Mechanism, validate_scale

#: Above this sigma the discrete Gaussian's variance is sigma^2 to double precision.
_GAUSSIAN_SUM_LIMIT = 1000.0


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile: P(|Z| <= z) = confidence."""
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + c / 2.0)


@lru_cache(maxsize=256)
def _discrete_gaussian_variance(sigma: float) -> float:
    if sigma > _GAUSSIAN_SUM_LIMIT:
        return sigma * sigma
    half_width = int(math.ceil(40.0 * sigma)) + 2
    x = np.arange(1, half_width + 1, dtype=np.float64)
    weights = np.exp(-(x * x) / (2.0 * sigma * sigma))
    # Symmetric support: x and -x carry the same weight; x = 0 has weight 1.
    mass = 1.0 + 2.0 * math.fsum(weights.tolist())
    second_moment = 2.0 * math.fsum((x * x * weights).tolist())
    return second_moment / mass


def _discrete_laplace_variance(b: float) -> float:
    t = math.exp(-1.0 / b)
    one_minus_t = -math.expm1(-1.0 / b)  # 1 - t without cancellation for large b
    return 2.0 * t / (one_minus_t * one_minus_t)


def noise_variance(mechanism: Mechanism | str, scale: float) -> float:
    """Exact variance of the per-cell noise OpenDP adds with ``scale``."""
    mech = Mechanism(mechanism)
    value = validate_scale(scale)
    if mech is Mechanism.DISCRETE_GAUSSIAN:
        return _discrete_gaussian_variance(value)
    return _discrete_laplace_variance(value)


def _check_variance(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a non-negative finite variance, got {value!r}")
    return v


def ratio_interval(
    num: float,
    num_var: float,
    den: float,
    den_var: float,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Rate num/den with a confidence interval for the true proportion p.

    ``num`` and ``den`` are noisy counts (e.g. merged over tenants);
    ``num_var`` and ``den_var`` the variances of their DP noise (sums of
    ``noise_variance`` over the contributing releases). Model:
    den = D + e_d, num = p D + s + e_n, with s the binomial sampling error
    (variance D p (1 - p)) and e_n, e_d independent DP noise.

    Method: Fieller's theorem, with the binomial term kept as a function of p
    (as Wilson's score interval does). p is in the interval when

        (num - p den)^2 <= z^2 (num_var + p^2 den_var + den p (1 - p)),

    a quadratic inequality in p; its solution set is the interval. Without
    DP noise it is exactly Wilson's interval; without sampling it is Fieller's
    interval for a ratio of normal means. Unlike the delta method it stays
    honest when the noisy denominator is small.

    Returns ``(rate, low, high)`` within [0, 1], ``rate`` = num/den clipped.
    When the denominator is not significantly positive (the quadratic opens
    downward, or den <= 0) the data say nothing about p: the interval is
    [0, 1] (rate 0.0 when den <= 0). When no p in [0, 1] satisfies the
    inequality (num significantly outside [0, den]: a sign that the variances
    were understated) the delta-method interval is returned, clipped.
    """
    x = float(num)
    y = float(den)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"num and den must be finite, got {num!r} and {den!r}")
    vn = _check_variance("num_var", num_var)
    vd = _check_variance("den_var", den_var)
    z = z_value(confidence)
    if y <= 0:
        return 0.0, 0.0, 1.0
    rate = min(1.0, max(0.0, x / y))
    z2 = z * z
    a = y * y + z2 * y - z2 * vd
    b = -(2.0 * x * y + z2 * y)
    c = x * x - z2 * vn
    if a <= 0:
        return rate, 0.0, 1.0
    disc = b * b - 4.0 * a * c
    if disc >= 0:
        root = math.sqrt(disc)
        low, high = (-b - root) / (2.0 * a), (-b + root) / (2.0 * a)
        low, high = max(0.0, low), min(1.0, high)
        if low <= high:
            return rate, low, high
    # Empty solution set within [0, 1]: delta method at the clipped rate.
    half = z * math.sqrt(vn + y * rate * (1.0 - rate) + rate * rate * vd) / y
    return rate, max(0.0, min(1.0, x / y - half)), min(1.0, max(0.0, x / y + half))
