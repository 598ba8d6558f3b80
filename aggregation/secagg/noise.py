"""Distributed discrete Gaussian noise and its accounting.

Each tenant adds a discrete Gaussian share N_Z(0, sigma_share^2), drawn by
OpenDP's exact sampler through ``aggregation.dp.release``. The shares are
calibrated so that ANY t of them carry the central mechanism's variance:

    sigma_share^2 = sigma_central^2 / t.

Why t and not the survivor count: the kernel cannot know in advance who will
drop, and the shares of tenants that collude with the server are known to it
and subtract out; the guarantee we state is for the worst honest case, t
honest survivors. With all n tenants surviving and honest the sum carries
n/t times the central variance (the price of dropout and collusion
tolerance). Dordis (Jiang et al. 2024) removes the excess noise of
survivors after the fact with extra rounds of secret-shared noise
components; we keep the one-round protocol and pay the n/t factor.

A sum of discrete Gaussians is not itself a discrete Gaussian; Kairouz, Liu
and Steinke 2021 (Proposition 14, the distributed discrete Gaussian) bound
its Renyi divergence with the penalty

    tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)),

negligible once sigma >= ~1.5 (tau ~ 2e-9 there) and large below. When
sigma_share would fall under ``MIN_SIGMA_SHARE`` the plan scales counts by an
integer factor s (the integrator multiplies tables by s before masking and
divides the decoded sum by s): the sensitivity and every sigma scale with s,
so the ratio that sets the privacy loss is unchanged while tau becomes
negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from aggregation import dp
from aggregation.dp import PrivacyLoss
from aggregation.secagg.errors import InvalidRoundParams

MIN_SIGMA_SHARE = 1.5


def kls_tau(sigma: float, n: int) -> float:
    """tau of Kairouz-Liu-Steinke 2021 for a sum of n discrete Gaussians of parameter sigma."""
    return 10.0 * sum(math.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))


def kls_rho(sigma: float, n: int, l2: float, l1: float, dims: int) -> float:
    """zCDP rho of the sum of n i.i.d. N_Z(0, sigma^2) vectors for a change of L2 norm ``l2``, L1 norm ``l1``.

    Kairouz, Liu, Steinke 2021, Proposition 14: for every alpha >= 1,
    D_alpha(Z + Delta || Z) is at most each of

        alpha/2 * l2^2/(n sigma^2) + tau d,
        alpha/2 * (l2^2/(n sigma^2) + 2 l1 tau / (sqrt(n) sigma) + tau^2 d),
        alpha/2 * (l2 / (sqrt(n) sigma) + tau sqrt(d))^2,

    with d the number of coordinates the change touches (coordinates it does
    not touch are identically distributed under both and drop out of the
    divergence). Since alpha >= 1, tau d <= alpha tau d, so each bound is
    alpha * rho_i; the result is the smallest rho_i. Requires sigma >= 1/2.
    """
    if sigma < 0.5:
        raise InvalidRoundParams(f"the KLS bound needs sigma >= 1/2, got {sigma}")
    tau = kls_tau(sigma, n)
    base = l2**2 / (n * sigma**2)
    rho1 = base / 2 + tau * dims
    rho2 = (base + 2 * l1 * tau / (math.sqrt(n) * sigma) + tau**2 * dims) / 2
    rho3 = (l2 / (math.sqrt(n) * sigma) + tau * math.sqrt(dims)) ** 2 / 2
    return min(rho1, rho2, rho3)


@dataclass(frozen=True)
class NoisePlan:
    """How much noise each tenant adds, in which units, and what it buys.

    ``sigma_share`` is in scaled units (the tables are multiplied by
    ``scale_factor``). ``cohort_loss``: the released sum, assuming at least
    ``threshold`` honest survivors (the KLS bound on their shares' sum, never
    below OpenDP's map of the central mechanism). ``own_worst_case_loss``: a
    tenant's loss if every other party colluded with the server, so that only
    its own share protects it (OpenDP's map of its share's discrete Gaussian).
    """

    sigma_central: float
    sigma_share: float
    scale_factor: int
    tau: float
    l0: int
    linf: int
    threshold: int
    roster_size: int
    delta: float
    cohort_loss: PrivacyLoss
    central_loss: PrivacyLoss
    own_worst_case_loss: PrivacyLoss

    @property
    def share_params(self) -> dp.ReleaseParams:
        """The OpenDP release parameters of one share (scaled sensitivity)."""
        return dp.ReleaseParams(
            dp.Mechanism.DISCRETE_GAUSSIAN, self.sigma_share, self.l0, self.linf * self.scale_factor, self.delta
        )

    def sigma_sum(self, survivors: int | None = None) -> float:
        """Standard deviation (scaled units) of the summed noise of ``survivors`` shares (default: the roster)."""
        count = self.roster_size if survivors is None else survivors
        return math.sqrt(count) * self.sigma_share

    def loss_with_honest_shares(self, honest: int) -> PrivacyLoss:
        """The released sum's loss when only ``honest`` shares are unknown to the adversary.

        ``cohort_loss`` is this at ``threshold``; with c colluding tenants among
        t survivors the guarantee is this at t - c (KLS bound; at 1 share it is
        OpenDP's map of one share, ``own_worst_case_loss``).
        """
        if isinstance(honest, bool) or not isinstance(honest, int) or not 1 <= honest <= self.roster_size:
            raise InvalidRoundParams(f"honest shares must lie in [1, {self.roster_size}], got {honest!r}")
        if honest == 1:
            return self.own_worst_case_loss
        return _sum_loss(self.sigma_share, honest, self.scale_factor, self.l0, self.linf, self.delta)

    def scale_table(self, table: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
        """A bounded window table in the plan's units (counts times ``scale_factor``), ready for ``submit``."""
        return np.asarray(table, dtype=np.int64) * self.scale_factor

    def unscale(self, total: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """A decoded sum back in count units (its noise then has sigma <= sigma_central * sqrt(survivors / t))."""
        return np.asarray(total, dtype=np.float64) / self.scale_factor

    def sample_share(self, length: int) -> npt.NDArray[np.int64]:
        """One tenant's noise share: ``length`` draws of OpenDP's discrete Gaussian (its own CSPRNG)."""
        return dp.release(np.zeros(length, dtype=np.int64), self.share_params)


def _sum_loss(sigma_share: float, shares: int, scale: int, l0: int, linf: int, delta: float) -> PrivacyLoss:
    # The KLS bound for the sum of `shares` honest shares, never below OpenDP's map of the single
    # discrete Gaussian with the same total variance (the central mechanism, for shares = t).
    l2 = scale * linf * math.sqrt(l0)
    l1 = float(scale * linf * l0)
    single = dp.privacy_loss(
        dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, math.sqrt(shares) * sigma_share, l0, scale * linf, delta)
    )
    rho = max(kls_rho(sigma_share, shares, l2, l1, l0), single.rho)
    return PrivacyLoss(rho=rho, epsilon=dp.epsilon_at_delta(rho, delta), delta=delta)


@lru_cache(maxsize=256)
def plan_noise(
    sigma_central: float, l0: int, linf: int, roster_size: int, threshold: int, delta: float = dp.DEFAULT_DELTA
) -> NoisePlan:
    """Noise shares whose any-``threshold`` sum carries the central discrete Gaussian's variance.

    ``sigma_central`` is the central mechanism's sigma in count units (e.g.
    from ``aggregation.dp.calibrate_scale``); the bounds are the cohort's
    contribution bounds. See the module doc for the calibration and
    ``NoisePlan`` for the two losses.
    """
    sigma_central = dp.validate_scale(sigma_central)
    for name, value in (("l0", l0), ("linf", linf), ("roster_size", roster_size), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRoundParams(f"{name} must be a positive integer, got {value!r}")
    if not 2 <= threshold <= roster_size:
        raise InvalidRoundParams(f"threshold must lie in [2, roster_size={roster_size}], got {threshold}")
    if not 0.0 < delta < 1.0:
        raise InvalidRoundParams(f"delta must lie in (0, 1), got {delta!r}")
    unscaled_share = sigma_central / math.sqrt(threshold)
    scale = 1 if unscaled_share >= MIN_SIGMA_SHARE else math.ceil(MIN_SIGMA_SHARE / unscaled_share)
    sigma_share = scale * unscaled_share
    tau = kls_tau(sigma_share, threshold)
    central = dp.privacy_loss(
        dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, scale * sigma_central, l0, scale * linf, delta)
    )
    cohort = _sum_loss(sigma_share, threshold, scale, l0, linf, delta)
    own = dp.privacy_loss(
        dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, sigma_share, l0, scale * linf, delta)
    )
    return NoisePlan(
        sigma_central=sigma_central,
        sigma_share=sigma_share,
        scale_factor=scale,
        tau=tau,
        l0=l0,
        linf=linf,
        threshold=threshold,
        roster_size=roster_size,
        delta=delta,
        cohort_loss=cohort,
        central_loss=central,
        own_worst_case_loss=own,
    )
