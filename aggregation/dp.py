"""Differentially private release of a bounded window table, with OpenDP.

A window table is a dense vector of integer counts, one per schema cell, to
which the collector has already applied the contribution bounds: one privacy
unit touches at most ``l0`` cells and adds at most ``linf`` to each. Over that
bounded domain the sensitivities are

* L1 = l0 * linf          (discrete Laplace, pure epsilon-DP)
* L2 = linf * sqrt(l0)    (discrete Gaussian, zero-concentrated DP, rho)

Every release is an OpenDP measurement built from that domain and metric, and
every privacy figure in here (rho, epsilon, the (epsilon, delta) equivalent)
is what OpenDP's privacy map returns for that measurement -- never a formula
of ours. That figure is what the budget ledger spends.

OpenDP gates its noise mechanisms and measure combinators behind the
``contrib`` feature flag (they are vetted by proof documents rather than the
full OpenDP review); importing this module enables it process-wide. See
``docs/privacy.md``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import opendp.prelude as opendp
from fedsignal.v1 import common_pb2

from aggregation.errors import FedsignalError

# Required by make_gaussian, make_laplace, make_zCDP_to_approxDP,
# make_pureDP_to_zCDP and make_fix_delta in OpenDP 0.16 ("Required features:
# contrib" in their docs). Nothing else in OpenDP needs to be enabled here.
opendp.enable_features("contrib")

#: delta at which a zCDP rho is reported as (epsilon, delta).
DEFAULT_DELTA = 1e-6
#: Smallest and largest noise scale we accept. Below the floor the privacy loss
#: of any realistic bound is astronomically large; above the ceiling the counts
#: are pure noise. Either way a report declaring such a scale is not honest use.
MIN_SCALE = 1e-3
MAX_SCALE = 1e9
#: Relative tolerance when comparing a declared loss with OpenDP's map: the
#: figures come from the same deterministic map, so only float formatting may
#: differ.
DECLARED_LOSS_RTOL = 1e-9


class Mechanism(enum.StrEnum):
    DISCRETE_GAUSSIAN = "discrete_gaussian"
    DISCRETE_LAPLACE = "discrete_laplace"


class DpError(FedsignalError):
    """Base of the errors of this module."""


class InvalidReleaseParams(DpError, ValueError):
    """Bounds, delta or mechanism of a release are unusable."""


class InvalidNoiseScale(InvalidReleaseParams):
    """A noise scale that is negative, zero, NaN, infinite or absurd."""


class DeclaredLossMismatch(DpError):
    """A report's declared privacy loss is not what its parameters produce.

    ``reason`` names the cause: ``"invalid_scale"``, ``"invalid_params"``,
    ``"invalid_declared"``, ``"rho_mismatch"`` or ``"epsilon_mismatch"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_TO_PROTO = {
    Mechanism.DISCRETE_GAUSSIAN: common_pb2.DISCRETE_GAUSSIAN,
    Mechanism.DISCRETE_LAPLACE: common_pb2.DISCRETE_LAPLACE,
}
_FROM_PROTO: dict[int, Mechanism] = {int(v): k for k, v in _TO_PROTO.items()}


def mechanism_to_proto(mechanism: Mechanism | str) -> common_pb2.Mechanism:
    """The ``fedsignal.v1.Mechanism`` enum value of ``mechanism``."""
    return _TO_PROTO[_coerce_mechanism(mechanism)]


def mechanism_from_proto(value: int | common_pb2.Mechanism) -> Mechanism:
    """The mechanism of a wire enum value; UNSPECIFIED or unknown values are refused."""
    try:
        return _FROM_PROTO[int(value)]
    except KeyError:
        raise InvalidReleaseParams(
            f"unknown or unspecified mechanism {value!r} on the wire; "
            "expected DISCRETE_GAUSSIAN or DISCRETE_LAPLACE"
        ) from None


def _coerce_mechanism(mechanism: Mechanism | str) -> Mechanism:
    try:
        return Mechanism(mechanism)
    except ValueError:
        choices = ", ".join(m.value for m in Mechanism)
        raise InvalidReleaseParams(f"unknown mechanism {mechanism!r}; choose one of {choices}") from None


def validate_scale(scale: Any) -> float:
    """``scale`` as a float, or ``InvalidNoiseScale`` naming what is wrong with it."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise InvalidNoiseScale(f"noise scale {scale!r} is not a number") from None
    if math.isnan(value):
        raise InvalidNoiseScale("noise scale is NaN")
    if math.isinf(value):
        raise InvalidNoiseScale("noise scale is infinite")
    if value < 0:
        raise InvalidNoiseScale(f"noise scale {value!r} is negative")
    if value == 0:
        raise InvalidNoiseScale("noise scale is zero: that would release exact counts")
    if value < MIN_SCALE or value > MAX_SCALE:
        raise InvalidNoiseScale(
            f"noise scale {value!r} is outside the accepted range [{MIN_SCALE}, {MAX_SCALE}]"
        )
    return value


def _check_bound(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidReleaseParams(f"contribution bound {name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ReleaseParams:
    """What fully determines a release's noise and privacy loss.

    ``scale`` is the OpenDP scale argument: sigma of the discrete Gaussian, b of
    the discrete Laplace. ``delta`` is only used to express a Gaussian's rho as
    (epsilon, delta). Construction validates every field.
    """

    mechanism: Mechanism
    scale: float
    l0: int
    linf: int
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        object.__setattr__(self, "mechanism", _coerce_mechanism(self.mechanism))
        object.__setattr__(self, "scale", validate_scale(self.scale))
        object.__setattr__(self, "l0", _check_bound("l0", self.l0))
        object.__setattr__(self, "linf", _check_bound("linf", self.linf))
        delta = float(self.delta)
        if not 0.0 < delta < 1.0:
            raise InvalidReleaseParams(f"delta must lie in (0, 1), got {self.delta!r}")
        object.__setattr__(self, "delta", delta)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity for the Gaussian, L1 for the Laplace (the OpenDP d_in)."""
        return float(_d_in(self.mechanism, self.l0, self.linf))


def _d_in(mechanism: Mechanism, l0: int, linf: int) -> float | int:
    if mechanism is Mechanism.DISCRETE_GAUSSIAN:
        return linf * math.sqrt(l0)
    return l0 * linf


@dataclass(frozen=True)
class PrivacyLoss:
    """rho (zCDP), epsilon and delta of one release, as OpenDP's map gives them.

    Gaussian: rho from the map, epsilon the zCDP-to-approxDP epsilon at delta.
    Laplace: epsilon from the map (pure DP, delta = 0), rho from OpenDP's
    pure-DP-to-zCDP conversion, so one rho ledger covers both mechanisms.
    """

    rho: float
    epsilon: float
    delta: float

    def to_proto(self) -> common_pb2.PrivacyLoss:
        return common_pb2.PrivacyLoss(rho=self.rho, epsilon=self.epsilon, delta=self.delta)


def _build_measurement(mechanism: Mechanism, scale: float) -> Any:
    # The contribution bounds do not change the measurement: they enter as the
    # d_in of its privacy map.
    element = opendp.atom_domain(T=opendp.i64)
    if mechanism is Mechanism.DISCRETE_GAUSSIAN:
        space = opendp.vector_domain(element), opendp.l2_distance(T=opendp.f64)
        return opendp.m.make_gaussian(*space, scale=scale)
    space = opendp.vector_domain(element), opendp.l1_distance(T=opendp.i64)
    return opendp.m.make_laplace(*space, scale=scale)


# Constructing a measurement is an FFI round trip; the collector and the
# server reuse a handful of parameter sets.
_measurement = lru_cache(maxsize=256)(_build_measurement)


@lru_cache(maxsize=1024)
def _privacy_loss(params: ReleaseParams) -> PrivacyLoss:
    meas = _measurement(params.mechanism, params.scale)
    d_in = _d_in(params.mechanism, params.l0, params.linf)
    if params.mechanism is Mechanism.DISCRETE_GAUSSIAN:
        rho = float(meas.map(d_in))
        epsilon = float(opendp.c.make_zCDP_to_approxDP(meas).map(d_in).epsilon(params.delta))
        loss = PrivacyLoss(rho=rho, epsilon=epsilon, delta=params.delta)
    else:
        epsilon = float(meas.map(d_in))
        rho = float(opendp.c.make_pureDP_to_zCDP(meas).map(d_in))
        loss = PrivacyLoss(rho=rho, epsilon=epsilon, delta=0.0)
    if not (math.isfinite(loss.rho) and math.isfinite(loss.epsilon)):
        raise InvalidNoiseScale(
            f"noise scale {params.scale!r} gives an unbounded privacy loss for "
            f"L0={params.l0}, Linf={params.linf}"
        )
    return loss


def privacy_loss(params: ReleaseParams) -> PrivacyLoss:
    """The privacy loss of releasing with ``params``, from OpenDP's privacy map."""
    return _privacy_loss(params)


def epsilon_at_delta(rho: float, delta: float = DEFAULT_DELTA) -> float:
    """epsilon at ``delta`` of a total zCDP loss ``rho`` (e.g. a ledger's spend), via OpenDP.

    Uses OpenDP's zCDP-to-approxDP conversion on a Gaussian measurement whose
    map returns exactly ``rho`` (scale 1, d_in = sqrt(2 rho)), so the figure is
    OpenDP's, not a textbook bound.
    """
    if rho <= 0:
        return 0.0
    meas = _measurement(Mechanism.DISCRETE_GAUSSIAN, 1.0)
    return float(opendp.c.make_zCDP_to_approxDP(meas).map(math.sqrt(2.0 * rho)).epsilon(delta))


def calibrate_scale(
    mechanism: Mechanism | str,
    l0: int,
    linf: int,
    *,
    rho: float | None = None,
    epsilon: float | None = None,
    delta: float = DEFAULT_DELTA,
) -> float:
    """The smallest scale whose OpenDP privacy map stays within the target.

    Give exactly one of ``rho`` (zCDP; for the Laplace, through OpenDP's
    pure-DP-to-zCDP conversion) or ``epsilon`` (pure epsilon for the Laplace;
    epsilon at ``delta`` for the Gaussian). Uses OpenDP's ``binary_search``
    over ``measurement.check(d_in, d_out)`` (what ``binary_search_param``
    does), which returns the passing value nearest the decision boundary, so
    ``privacy_loss`` of the result is <= the target and tight to float
    precision.
    """
    mech = _coerce_mechanism(mechanism)
    l0 = _check_bound("l0", l0)
    linf = _check_bound("linf", linf)
    if not 0.0 < float(delta) < 1.0:
        raise InvalidReleaseParams(f"delta must lie in (0, 1), got {delta!r}")
    return _calibrate(mech, l0, linf, rho, epsilon, float(delta))


@lru_cache(maxsize=256)
def _calibrate(
    mech: Mechanism, l0: int, linf: int, rho: float | None, epsilon: float | None, delta: float
) -> float:
    # An epsilon-at-delta search evaluates OpenDP's zCDP-to-approxDP
    # conversion ~130 times (a few ms each): worth remembering.
    if (rho is None) == (epsilon is None):
        raise InvalidReleaseParams("give exactly one of rho or epsilon as the calibration target")
    target = float(rho) if rho is not None else float(epsilon or 0.0)
    if not (math.isfinite(target) and target > 0):
        raise InvalidReleaseParams(f"privacy target must be a positive finite number, got {target!r}")
    d_in = _d_in(mech, l0, linf)
    chain: Any
    d_out: Any = target
    if mech is Mechanism.DISCRETE_GAUSSIAN and rho is not None:
        def chain(s: float) -> Any:
            return _build_measurement(mech, s)
    elif mech is Mechanism.DISCRETE_GAUSSIAN:
        d_out = (target, float(delta))

        def chain(s: float) -> Any:
            return opendp.c.make_fix_delta(opendp.c.make_zCDP_to_approxDP(_build_measurement(mech, s)), delta)
    elif rho is not None:
        def chain(s: float) -> Any:
            return opendp.c.make_pureDP_to_zCDP(_build_measurement(mech, s))
    else:
        def chain(s: float) -> Any:
            return _build_measurement(mech, s)

    def passes(scale: float) -> bool:
        # The same predicate binary_search_param uses, except that a map which
        # overflows (tiny scales under an epsilon-at-delta target) counts as
        # failing instead of aborting the search.
        try:
            return bool(chain(scale).check(d_in, d_out))
        except opendp.OpenDPException:
            return False

    try:
        scale = float(opendp.binary_search(passes, bounds=(MIN_SCALE, MAX_SCALE), T=float))
    except ValueError as exc:
        raise InvalidReleaseParams(
            f"no noise scale in [{MIN_SCALE}, {MAX_SCALE}] meets the target {target!r} "
            f"for L0={l0}, Linf={linf}: {exc}"
        ) from exc
    return scale


def release(table: npt.NDArray[np.int64], params: ReleaseParams) -> npt.NDArray[np.int64]:
    """Noisy copy of a bounded window table, drawn by OpenDP's measurement.

    The caller guarantees the contribution bounds ``params.l0``/``params.linf``.
    Noise comes from OpenDP's own CSPRNG (it cannot be seeded). The result has
    the input's length and dtype int64 and is neither clamped nor rounded:
    negative counts are expected and keep merged sums unbiased.
    """
    values = np.asarray(table)
    if values.ndim != 1:
        raise InvalidReleaseParams(f"a window table is one-dimensional, got shape {values.shape}")
    if values.size == 0:
        raise InvalidReleaseParams("a window table has at least one cell")
    if not np.issubdtype(values.dtype, np.integer):
        raise InvalidReleaseParams(f"a window table holds integer counts, got dtype {values.dtype}")
    meas = _measurement(params.mechanism, params.scale)
    noisy = meas(values.astype(np.int64, copy=False))
    return np.asarray(noisy, dtype=np.int64)


def check_declared(
    mechanism: Mechanism | str,
    scale: float,
    l0: int,
    linf: int,
    declared_rho: float,
    declared_epsilon: float,
    *,
    delta: float = DEFAULT_DELTA,
) -> None:
    """Verify that (mechanism, scale, bounds) produce the declared rho and epsilon.

    Raises ``DeclaredLossMismatch`` (with a ``reason``) when the scale or
    bounds are unusable, a declared figure is not a positive finite number, or
    either figure differs from OpenDP's map by more than a relative 1e-9 --
    overstated and understated claims alike.
    """
    try:
        params = ReleaseParams(mechanism, scale, l0, linf, delta)  # type: ignore[arg-type]
        actual = privacy_loss(params)
    except InvalidNoiseScale as exc:
        raise DeclaredLossMismatch(f"report refused: {exc}", "invalid_scale") from exc
    except InvalidReleaseParams as exc:
        raise DeclaredLossMismatch(f"report refused: {exc}", "invalid_params") from exc
    for name, declared, true in (
        ("rho", declared_rho, actual.rho),
        ("epsilon", declared_epsilon, actual.epsilon),
    ):
        try:
            value = float(declared)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise DeclaredLossMismatch(
                f"report refused: declared {name} {declared!r} is not a positive finite number",
                "invalid_declared",
            )
        if not math.isclose(value, true, rel_tol=DECLARED_LOSS_RTOL, abs_tol=0.0):
            raise DeclaredLossMismatch(
                f"report refused: declared {name}={value!r} but {params.mechanism.value} with "
                f"scale={params.scale!r}, L0={params.l0}, Linf={params.linf} has {name}={true!r} "
                "according to OpenDP's privacy map",
                f"{name}_mismatch",
            )
