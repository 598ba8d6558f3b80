"""What the server sees of one tenant looks uniform; the summed noise has the planned variance.

The masks come from fixed seeds (keys, self-mask seed), so the uniformity
tests are deterministic up to the noise share, which OpenDP draws from its own
CSPRNG (it cannot be seeded) and which moves each value by a few units only.
Every test's false-failure probability is at most 1e-6 (thresholds below);
about 6e-6 for the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregation.secagg import MaskedInput

from .cohort import make_cohort

Z_ONE_SIDED_1E6 = 4.753  # P[Z > 4.753] = 1e-6
Z_TWO_SIDED_1E6 = 4.892  # P[|Z| > 4.892] = 1e-6
BINS = 64


def _chi_square_critical(df: int, z: float = Z_ONE_SIDED_1E6) -> float:
    # Wilson-Hilferty approximation of the chi-square upper quantile (relative error ~1e-3 at df = 63).
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def _masked_values(bits: int, table: np.ndarray) -> np.ndarray:
    cohort = make_cohort(3, length=table.size, threshold=2, bits=bits, seed=bits)
    msg: MaskedInput = cohort.clients[cohort.ids[0]].submit(table)
    return msg.vector().astype(np.float64)


@pytest.mark.parametrize("bits", [20, 32, 64])
@pytest.mark.parametrize("kind", ["zeros", "counts"])
def test_masked_vector_is_uniform_over_the_modulus(bits: int, kind: str) -> None:
    length = 64 * 1024
    table = np.zeros(length, dtype=np.int64) if kind == "zeros" else np.arange(length, dtype=np.int64) % 97
    values = _masked_values(bits, table)
    assert values.max() < 2.0**bits
    counts = np.bincount(np.floor(values / 2.0**bits * BINS).astype(np.int64), minlength=BINS)
    expected = length / BINS
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < _chi_square_critical(BINS - 1), f"chi-square {chi2:.1f} over {BINS} bins"


def test_masked_vector_is_uncorrelated_with_the_table() -> None:
    length = 64 * 1024
    table = np.random.default_rng(5).integers(0, 1000, size=length).astype(np.int64)
    values = _masked_values(32, table)
    r = float(np.corrcoef(values, table.astype(np.float64))[0, 1])
    # Under independence sqrt(n) r is ~ N(0, 1).
    assert abs(r) * math.sqrt(length) < Z_TWO_SIDED_1E6, f"correlation {r:.5f}"


def _dg_moments(sigma: float) -> tuple[float, float]:
    x = np.arange(-int(60 * sigma) - 5, int(60 * sigma) + 6, dtype=np.float64)
    w = np.exp(-(x * x) / (2 * sigma * sigma))
    p = w / w.sum()
    var = float((p * x**2).sum())
    mu4 = float((p * x**4).sum())
    return var, mu4 - 3 * var**2  # variance and fourth cumulant


@pytest.mark.parametrize(("n", "survivors"), [(6, 4), (6, 6)])
def test_summed_noise_has_the_planned_variance(n: int, survivors: int) -> None:
    length = 20_000
    cohort = make_cohort(n, length=length, threshold=4, sigma_central=4.0, seed=11)
    senders = cohort.ids[:survivors]
    result = cohort.run(senders)
    noise = (result - sum(cohort.tables[t] for t in senders)).astype(np.float64)
    var1, kappa4 = _dg_moments(cohort.plan.sigma_share)
    var = survivors * var1
    mu4 = survivors * kappa4 + 3 * var**2
    sample = float(noise.var(ddof=1))
    z = (sample - var) / math.sqrt((mu4 - var**2) / length)
    assert abs(z) < Z_TWO_SIDED_1E6, f"sample variance {sample:.3f}, planned {var:.3f} (z = {z:.2f})"
    # The plan's sigma is the continuous parameter; the discrete Gaussian's variance is within 1e-6 of it here.
    assert var1 == pytest.approx(cohort.plan.sigma_share**2, rel=1e-6)
    if survivors == cohort.ctx.threshold:
        # Exactly t survivors carry the central variance (in scaled units).
        assert var == pytest.approx((cohort.plan.scale_factor * cohort.plan.sigma_central) ** 2, rel=1e-6)
