"""Utility of per-tenant DP against central DP, and release cost.

For each epsilon and cohort size n, the per-cell RMSE of the merged cohort
count when every tenant adds its own noise with the full epsilon (what
fedsignal ships: local-per-tenant DP, the noise of n releases adds up) and
when one trusted curator adds noise once to the sum with the same epsilon
(central DP: a privacy unit belongs to one tenant, so the sum has the same
sensitivity as one tenant's table). Analytic figures come from the exact
noise variance; empirical ones from OpenDP releases. Gaussian epsilons are
(epsilon, delta = 1e-6) through OpenDP's zCDP-to-approxDP conversion; the rho
that achieves them is printed.

Secure aggregation (the default mode): each tenant adds a discrete-Gaussian share with
sigma_central^2 / t (t = max(2, ceil(0.7 n)), what the server ships), so any t shares carry the
central noise. "secure" is every tenant online (n shares), "secure@t" the shipped dropout
tolerance used up (only t survivors); their per-cell RMSE is printed beside central and
local, with the cohort loss the ledger spends (KLS bound, tau included) against the target.

Run: .venv/bin/python bench/utility.py [--cells N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregation import dp  # noqa: E402
from aggregation.schema import default_schema  # noqa: E402
from aggregation.secagg import NoisePlan, plan_noise  # noqa: E402
from aggregation.stats import noise_variance  # noqa: E402

EPSILONS = (0.1, 0.5, 1.0, 2.0)
COHORTS = (5, 20, 100)
DELTA = 1e-6


def merged_rmse_per_tenant(table: np.ndarray, tenants: int, params: dp.ReleaseParams) -> float:
    """Every tenant releases its own table; the server sums the noisy tables."""
    error = np.zeros(table.size, dtype=np.float64)
    for _ in range(tenants):
        error += dp.release(table, params) - table
    return float(np.sqrt(np.mean(error**2)))


def merged_rmse_central(table: np.ndarray, tenants: int, params: dp.ReleaseParams) -> float:
    """A trusted curator releases the cohort sum once."""
    total = table * tenants
    error = (dp.release(total, params) - total).astype(np.float64)
    return float(np.sqrt(np.mean(error**2)))


def utility_table(cells: int, l0: int, linf: int) -> None:
    rng = np.random.default_rng(1)
    table = rng.integers(0, 40, size=cells, dtype=np.int64)
    print(f"per-cell RMSE of the merged cohort count; L0={l0}, Linf={linf}, {cells} cells per estimate")
    header = (
        f"{'mechanism':<18} {'eps':>5} {'rho':>9} {'scale':>9} {'n':>4} | "
        f"{'per-tenant emp':>14} {'analytic':>9} | {'central emp':>11} {'analytic':>9} | "
        f"{'ratio emp':>9} {'analytic':>8}"
    )
    for mechanism in dp.Mechanism:
        print()
        print(header)
        print("-" * len(header))
        for epsilon in EPSILONS:
            scale = dp.calibrate_scale(mechanism, l0, linf, epsilon=epsilon, delta=DELTA)
            params = dp.ReleaseParams(mechanism, scale, l0, linf, DELTA)
            loss = dp.privacy_loss(params)
            sd = math.sqrt(noise_variance(mechanism, scale))
            for tenants in COHORTS:
                local = merged_rmse_per_tenant(table, tenants, params)
                central = merged_rmse_central(table, tenants, params)
                print(
                    f"{mechanism.value:<18} {epsilon:>5g} {loss.rho:>9.5f} {scale:>9.3f} {tenants:>4} | "
                    f"{local:>14.2f} {sd * math.sqrt(tenants):>9.2f} | {central:>11.2f} {sd:>9.2f} | "
                    f"{local / central:>9.2f} {math.sqrt(tenants):>8.2f}"
                )


def secure_threshold(n: int) -> int:
    return max(2, math.ceil(0.7 * n - 1e-9))  # server.secagg.rounds.threshold_for at the shipped fraction


def secure_rmse(table_size: int, shares: int, plan: NoisePlan) -> float:
    """RMSE (count units) of the sum of ``shares`` noise shares, unscaled and rounded as the server does."""
    total = np.zeros(table_size, dtype=np.int64)
    for _ in range(shares):
        total += plan.sample_share(table_size)
    error = np.rint(total / plan.scale_factor) if plan.scale_factor > 1 else total.astype(np.float64)
    return float(np.sqrt(np.mean(error**2)))


def secure_table(cells: int, l0: int, linf: int) -> None:
    rng = np.random.default_rng(2)
    table = rng.integers(0, 40, size=cells, dtype=np.int64)
    print()
    print(f"secure aggregation (discrete Gaussian shares); L0={l0}, Linf={linf}, {cells} cells per estimate")
    header = (f"{'eps':>5} {'n':>4} {'t':>4} {'s':>3} | {'central':>8} {'secure':>8} {'secure@t':>8} {'local':>8} | "
              f"{'sec/cen':>7} {'analytic':>8} {'@t/cen':>6} {'loc/cen':>7} | {'ledger eps':>10} {'own eps':>8}")
    print(header)
    print("-" * len(header))
    for epsilon in EPSILONS:
        sigma = dp.calibrate_scale(dp.Mechanism.DISCRETE_GAUSSIAN, l0, linf, epsilon=epsilon, delta=DELTA)
        params = dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, sigma, l0, linf, DELTA)
        for n in COHORTS:
            t = secure_threshold(n)
            plan = plan_noise(sigma, l0, linf, n, t, DELTA)
            central = merged_rmse_central(table, n, params)
            secure = secure_rmse(cells, n, plan)
            at_t = secure_rmse(cells, t, plan)
            local = merged_rmse_per_tenant(table, n, params)
            print(f"{epsilon:>5g} {n:>4} {t:>4} {plan.scale_factor:>3} | {central:>8.2f} {secure:>8.2f} {at_t:>8.2f} "
                  f"{local:>8.2f} | {secure / central:>7.2f} {math.sqrt(n / t):>8.2f} {at_t / central:>6.2f} "
                  f"{local / central:>7.2f} | {plan.cohort_loss.epsilon:>10.4f} {plan.own_worst_case_loss.epsilon:>8.3f}")


def release_timing(l0: int, linf: int) -> None:
    scale = dp.calibrate_scale(dp.Mechanism.DISCRETE_GAUSSIAN, l0, linf, rho=0.05)
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, scale, l0, linf)
    print()
    print(f"discrete Gaussian release time (scale {scale:.3f}), median of repeats")
    for cells, repeats in ((1_000, 20), (100_000, 3)):
        table = np.zeros(cells, dtype=np.int64)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            dp.release(table, params)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{cells:>8} cells: {median * 1e3:9.1f} ms  ({median / cells * 1e6:.1f} us per cell)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cells", type=int, default=4000, help="cells per RMSE estimate (default 4000)")
    args = parser.parse_args(argv)
    schema = default_schema("bench")
    started = time.perf_counter()
    utility_table(args.cells, schema.max_cells_per_unit, schema.max_count_per_cell)
    secure_table(args.cells, schema.max_cells_per_unit, schema.max_count_per_cell)
    release_timing(schema.max_cells_per_unit, schema.max_count_per_cell)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
