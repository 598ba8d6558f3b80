"""Releases: OpenDP noise of the calibrated variance, exact privacy accounting.

Noise comes from OpenDP's CSPRNG, which cannot be seeded, so the variance
checks are interval tests whose false-failure probability is negligible: each
uses a two-sided level of 2e-9 (z = 6), about 1e-8 for the whole module.
"""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as opendp
import pytest
from fedsignal.v1 import common_pb2

from aggregation import dp
from aggregation.schema import default_schema
from aggregation.stats import noise_variance

DRAWS = 10_000
Z_FALSE_FAILURE = 6.0  # two-sided P(|Z| > 6) ~ 2e-9


def _pmf(mechanism: dp.Mechanism, scale: float) -> tuple[np.ndarray, np.ndarray]:
    half = int(math.ceil(40 * scale)) + 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    if mechanism is dp.Mechanism.DISCRETE_GAUSSIAN:
        w = np.exp(-(x * x) / (2 * scale * scale))
    else:
        w = np.exp(-np.abs(x) / scale)
    return x, w / w.sum()


def _chi_square_quantile(nu: float, z: float) -> float:
    # Wilson-Hilferty: accurate to ~1e-4 relative for nu in the thousands.
    h = 2.0 / (9.0 * nu)
    return nu * (1.0 - h + z * math.sqrt(h)) ** 3


def _variance_interval(mechanism: dp.Mechanism, scale: float) -> tuple[float, float]:
    """Interval for sum(x^2) over DRAWS zero-mean draws, in units of the variance.

    sum(x^2)/var has mean N and variance N (kappa - 1), kappa = mu4/var^2. For
    a normal law that is chi-square(N); the discrete laws here are not normal
    (the Laplace has kappa ~ 6), so we use the moment-matched scaled
    chi-square g * chi2(nu), g = (kappa - 1)/2, nu = 2N/(kappa - 1).
    """
    x, p = _pmf(mechanism, scale)
    var = float((p * x**2).sum())
    kappa = float((p * x**4).sum()) / var**2
    g, nu = (kappa - 1) / 2, 2 * DRAWS / (kappa - 1)
    return g * _chi_square_quantile(nu, -Z_FALSE_FAILURE), g * _chi_square_quantile(nu, Z_FALSE_FAILURE)


NOISE_CASES = [
    (dp.Mechanism.DISCRETE_GAUSSIAN, 0.5),  # discreteness matters: variance 0.215, not 0.25
    (dp.Mechanism.DISCRETE_GAUSSIAN, 3.0),
    (dp.Mechanism.DISCRETE_GAUSSIAN, 12.649110640673518),  # rho = 0.05 at L0 = 16, Linf = 1
    (dp.Mechanism.DISCRETE_LAPLACE, 0.5),  # variance 0.362, not 2 b^2 = 0.5
    (dp.Mechanism.DISCRETE_LAPLACE, 16.0),  # epsilon = 1 at L1 = 16
]


@pytest.mark.parametrize(("mechanism", "scale"), NOISE_CASES)
def test_released_noise_has_the_calibrated_variance(mechanism: dp.Mechanism, scale: float) -> None:
    table = np.random.default_rng(7).integers(0, 50, size=DRAWS, dtype=np.int64)
    noisy = dp.release(table, dp.ReleaseParams(mechanism, scale, l0=16, linf=1))
    noise = (noisy - table).astype(np.float64)
    variance = noise_variance(mechanism, scale)
    low, high = _variance_interval(mechanism, scale)
    statistic = float((noise**2).sum()) / variance
    assert low <= statistic <= high, (statistic, low, high)
    # Unbiased: the mean noise is zero within 6 standard errors.
    assert abs(noise.mean()) <= Z_FALSE_FAILURE * math.sqrt(variance / DRAWS)


def test_variance_interval_rejects_the_continuous_formula_at_small_scale() -> None:
    # The test above can fail: at sigma = 0.5 the continuous variance is 16 %
    # off, far outside the interval.
    low, high = _variance_interval(dp.Mechanism.DISCRETE_GAUSSIAN, 0.5)
    wrong = DRAWS * noise_variance(dp.Mechanism.DISCRETE_GAUSSIAN, 0.5) / 0.25
    assert not low <= wrong <= high


@pytest.mark.parametrize("mechanism", list(dp.Mechanism))
def test_released_vector_has_the_schema_length_and_int64(mechanism: dp.Mechanism) -> None:
    schema = default_schema("cohort-a")
    table = np.zeros(schema.size, dtype=np.int64)
    params = dp.ReleaseParams(mechanism, 2.0, schema.max_cells_per_unit, schema.max_count_per_cell)
    noisy = dp.release(table, params)
    assert noisy.shape == (schema.size,)
    assert noisy.dtype == np.int64


def test_release_is_not_clamped() -> None:
    noisy = dp.release(np.zeros(2_000, dtype=np.int64), dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 5.0, 1, 1))
    # P(no negative among 2000 draws) is (0.54)^2000: zero.
    assert (noisy < 0).any()


def test_release_refuses_tables_that_are_not_integer_vectors() -> None:
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_LAPLACE, 2.0, 1, 1)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.release(np.zeros((2, 2), dtype=np.int64), params)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.release(np.zeros(3, dtype=np.float64), params)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.release(np.zeros(0, dtype=np.int64), params)


def test_gaussian_privacy_loss_is_opendps_map() -> None:
    space = opendp.vector_domain(opendp.atom_domain(T=opendp.i64)), opendp.l2_distance(T=opendp.f64)
    meas = opendp.m.make_gaussian(*space, scale=7.5)
    loss = dp.privacy_loss(dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 7.5, l0=9, linf=2))
    assert loss.rho == meas.map(6.0)  # L2 = Linf * sqrt(L0) = 6
    assert loss.epsilon == opendp.c.make_zCDP_to_approxDP(meas).map(6.0).epsilon(1e-6)
    assert loss.delta == 1e-6


def test_laplace_privacy_loss_is_opendps_map() -> None:
    space = opendp.vector_domain(opendp.atom_domain(T=opendp.i64)), opendp.l1_distance(T=opendp.i64)
    meas = opendp.m.make_laplace(*space, scale=7.5)
    loss = dp.privacy_loss(dp.ReleaseParams(dp.Mechanism.DISCRETE_LAPLACE, 7.5, l0=9, linf=2))
    assert loss.epsilon == meas.map(18)  # L1 = L0 * Linf = 18
    assert loss.rho == opendp.c.make_pureDP_to_zCDP(meas).map(18)
    assert loss.delta == 0.0


def test_sensitivity_is_l2_for_gaussian_and_l1_for_laplace() -> None:
    assert dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 1.0, 9, 2).sensitivity == 6.0
    assert dp.ReleaseParams(dp.Mechanism.DISCRETE_LAPLACE, 1.0, 9, 2).sensitivity == 18.0


@pytest.mark.parametrize(
    ("mechanism", "target", "field", "rtol"),
    [
        ("discrete_gaussian", {"rho": 0.05}, "rho", 1e-12),
        ("discrete_gaussian", {"epsilon": 1.0}, "epsilon", 1e-9),
        ("discrete_laplace", {"epsilon": 0.5}, "epsilon", 1e-12),
        ("discrete_laplace", {"rho": 0.05}, "rho", 1e-12),
    ],
)
def test_calibrated_scale_meets_the_target_tightly(
    mechanism: str, target: dict[str, float], field: str, rtol: float
) -> None:
    goal = next(iter(target.values()))
    scale = dp.calibrate_scale(mechanism, 16, 1, **target)
    loss = getattr(dp.privacy_loss(dp.ReleaseParams(dp.Mechanism(mechanism), scale, 16, 1)), field)
    assert loss <= goal
    assert goal - loss <= rtol * goal
    # Any visibly smaller scale overshoots: the search found the boundary.
    tighter = getattr(dp.privacy_loss(dp.ReleaseParams(dp.Mechanism(mechanism), scale * (1 - 1e-7), 16, 1)), field)
    assert tighter > goal


def test_calibration_needs_exactly_one_target() -> None:
    with pytest.raises(dp.InvalidReleaseParams):
        dp.calibrate_scale("discrete_gaussian", 16, 1)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.calibrate_scale("discrete_gaussian", 16, 1, rho=0.1, epsilon=1.0)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.calibrate_scale("discrete_gaussian", 16, 1, rho=-0.1)


def _honest(mechanism: dp.Mechanism, scale: float = 9.0) -> tuple[float, float]:
    loss = dp.privacy_loss(dp.ReleaseParams(mechanism, scale, 16, 1))
    return loss.rho, loss.epsilon


@pytest.mark.parametrize("mechanism", list(dp.Mechanism))
def test_check_declared_accepts_an_honest_report(mechanism: dp.Mechanism) -> None:
    rho, epsilon = _honest(mechanism)
    dp.check_declared(mechanism, 9.0, 16, 1, rho, epsilon)
    # Float formatting noise far below the tolerance is accepted.
    dp.check_declared(mechanism, 9.0, 16, 1, rho * (1 + 1e-12), epsilon * (1 - 1e-12))


@pytest.mark.parametrize("mechanism", list(dp.Mechanism))
@pytest.mark.parametrize(
    ("rho_factor", "eps_factor", "reason"),
    [
        (1.001, 1.0, "rho_mismatch"),
        (0.999, 1.0, "rho_mismatch"),
        (1.0, 1.000001, "epsilon_mismatch"),
        (1.0, 0.5, "epsilon_mismatch"),
    ],
)
def test_check_declared_rejects_inflated_and_deflated_claims(
    mechanism: dp.Mechanism, rho_factor: float, eps_factor: float, reason: str
) -> None:
    rho, epsilon = _honest(mechanism)
    with pytest.raises(dp.DeclaredLossMismatch) as err:
        dp.check_declared(mechanism, 9.0, 16, 1, rho * rho_factor, epsilon * eps_factor)
    assert err.value.reason == reason


def test_check_declared_rejects_a_scale_that_does_not_match_the_claim() -> None:
    rho, epsilon = _honest(dp.Mechanism.DISCRETE_GAUSSIAN, scale=9.0)
    with pytest.raises(dp.DeclaredLossMismatch):
        dp.check_declared("discrete_gaussian", 18.0, 16, 1, rho, epsilon)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0, float("inf"), -float("inf")])
def test_check_declared_rejects_nan_and_non_positive_claims(bad: float) -> None:
    rho, epsilon = _honest(dp.Mechanism.DISCRETE_GAUSSIAN)
    with pytest.raises(dp.DeclaredLossMismatch) as err:
        dp.check_declared("discrete_gaussian", 9.0, 16, 1, bad, epsilon)
    assert err.value.reason == "invalid_declared"
    with pytest.raises(dp.DeclaredLossMismatch) as err:
        dp.check_declared("discrete_gaussian", 9.0, 16, 1, rho, bad)
    assert err.value.reason == "invalid_declared"


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("nan"), float("inf"), 1e-9, 1e15])
def test_check_declared_rejects_absurd_scales(scale: float) -> None:
    with pytest.raises(dp.DeclaredLossMismatch) as err:
        dp.check_declared("discrete_laplace", scale, 16, 1, 0.5, 1.0)
    assert err.value.reason == "invalid_scale"
    with pytest.raises(dp.InvalidNoiseScale):
        dp.ReleaseParams(dp.Mechanism.DISCRETE_LAPLACE, scale, 16, 1)


@pytest.mark.parametrize(("l0", "linf"), [(0, 1), (16, 0), (-3, 1), (1.5, 1)])
def test_check_declared_rejects_unusable_bounds(l0: int, linf: int) -> None:
    with pytest.raises(dp.DeclaredLossMismatch) as err:
        dp.check_declared("discrete_laplace", 9.0, l0, linf, 0.5, 1.0)
    assert err.value.reason == "invalid_params"


def test_mechanism_round_trips_through_the_wire_enum() -> None:
    for mechanism in dp.Mechanism:
        assert dp.mechanism_from_proto(dp.mechanism_to_proto(mechanism)) is mechanism
    assert dp.mechanism_to_proto("discrete_gaussian") == common_pb2.DISCRETE_GAUSSIAN
    with pytest.raises(dp.InvalidReleaseParams):
        dp.mechanism_from_proto(common_pb2.MECHANISM_UNSPECIFIED)
    with pytest.raises(dp.InvalidReleaseParams):
        dp.ReleaseParams("laplace", 1.0, 1, 1)  # type: ignore[arg-type]


def test_privacy_loss_converts_to_the_wire_message() -> None:
    loss = dp.privacy_loss(dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 9.0, 16, 1))
    msg = loss.to_proto()
    assert (msg.rho, msg.epsilon, msg.delta) == (loss.rho, loss.epsilon, loss.delta)


def test_measurement_construction_is_cached_per_parameters() -> None:
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_LAPLACE, 3.25, 4, 1)
    dp.release(np.zeros(4, dtype=np.int64), params)
    hits = dp._measurement.cache_info().hits
    dp.release(np.zeros(4, dtype=np.int64), params)
    assert dp._measurement.cache_info().hits == hits + 1
