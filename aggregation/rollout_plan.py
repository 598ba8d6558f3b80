"""Rollout plans (data) and sticky canary assignment (hashes).

A :class:`RolloutPlan` lists the stages a candidate goes through (percent of
the cohort's traffic), the dwell and evidence each stage needs, and the gates
the canary must pass against the control. Plans per risk class ship as a
versioned data file (``aggregation/data/rollout_plans_v1.json``), loaded and
validated once; a reviewer may override a candidate's plan before approval
(the plan JSON on the candidate), and the plan is frozen when the rollout
starts: the server stores it with the rollout and records its digest in the
audit log, so gates cannot be loosened mid-rollout.

Assignment is sticky and needs no coordination: the server and every
tenant's resolver compute the same SHA-256 based fractions.

* Tenants: :func:`participating_tenants` ranks the cohort's tenants by
  ``sticky_fraction(rollout_id, "tenant", tenant_id)`` and takes the first
  ``ceil(p * n / MAX_CANARY_SHARE)`` (at least one, at most n), so a cohort
  smaller than 1/stage still has a canary tenant, the participating tenants
  keep at least half their sessions as the control whenever the cohort
  allows it (below 100 %), and a tenant that took part keeps taking part as
  the stage grows.
* Sessions: inside a participating tenant, :func:`session_in_canary` puts a
  session in the canary when ``sticky_fraction(rollout_id, "session",
  session_id) < fraction``; :func:`session_fraction` chooses the fraction so
  that the overall exposure is about the stage percent. A session in the
  canary at fraction f stays in it at every fraction above f. The other
  sessions of a participating tenant are the *control*: they get the stable
  content but carry :func:`control_label` on their telemetry, so canary and
  control are a randomized split of the same tenants' sessions (sessions of
  non-participating tenants keep the stable label and are not evidence).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from aggregation.errors import InvalidRequest
from aggregation.risk import RISK_ORDER

PLANS_RESOURCE = "data/rollout_plans_v1.json"
GATE_MEASURES = ("task_success", "escalated", "human_correction", "tool_error", "timeout", "safety_incident")
SAFETY_MEASURE = "safety_incident"
RISK_CLASSES = RISK_ORDER  # the one risk-class order (aggregation.risk.RiskClass)

Direction = Literal["drop", "rise"]
#: Largest share of a participating tenant's sessions on the candidate before the 100 % stage
#: (when the cohort has enough tenants): the rest is the randomized control.
MAX_CANARY_SHARE = 0.5


class RolloutPlanError(InvalidRequest):
    """A rollout plan document that cannot be used (the message says which field)."""


# -- sticky assignment ------------------------------------------------------------------------


def sticky_fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) from ``parts`` (SHA-256, length-prefixed parts).

    Length prefixes keep ("ab", "c") and ("a", "bc") apart. 53 bits of the
    digest are used, so the result is an exact float.
    """
    h = hashlib.sha256(b"fedsignal-sticky-v1")
    for part in parts:
        raw = part.encode("utf-8")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return (int.from_bytes(h.digest()[:8], "big") >> 11) / float(1 << 53)


def tenant_rank(rollout_id: str, tenant_id: str) -> float:
    return sticky_fraction(rollout_id, "tenant", tenant_id)


def canary_tenant_count(n_tenants: int, stage_percent: float) -> int:
    """``ceil(p * n / MAX_CANARY_SHARE)``, at least one when the cohort is not empty, at most ``n``.

    Enough tenants that each puts at most ``MAX_CANARY_SHARE`` of its
    sessions on the candidate: the others are the control, randomized
    within the same tenants (with ``ceil(p * n)`` tenants the fraction would
    be 1 whenever ``p * n`` is whole, leaving no control at all).
    """
    _check_percent(stage_percent)
    if n_tenants <= 0:
        return 0
    # round() guards against 0.1 * 30 == 3.0000000000000004 -> 4.
    wanted = math.ceil(round(stage_percent / 100.0 * n_tenants / MAX_CANARY_SHARE, 9))
    return min(n_tenants, max(1, wanted))


def participating_tenants(rollout_id: str, tenants: Iterable[str], stage_percent: float) -> list[str]:
    """The tenants taking part at ``stage_percent`` (sorted by id).

    The first :func:`canary_tenant_count` tenants by sticky rank; the set
    for a larger percent always contains the set for a smaller one.
    """
    unique = sorted(set(tenants))
    count = canary_tenant_count(len(unique), stage_percent)
    ranked = sorted(unique, key=lambda t: (tenant_rank(rollout_id, t), t))
    return sorted(ranked[:count])


def session_fraction(stage_percent: float, n_tenants: int, n_participating: int) -> float:
    """Share of a participating tenant's sessions that get the candidate.

    Chosen so that ``n_participating * fraction / n_tenants`` (the overall
    exposure when tenants carry similar traffic) equals the stage percent,
    capped at 1.
    """
    _check_percent(stage_percent)
    if n_participating <= 0 or n_tenants <= 0:
        return 0.0
    if n_participating > n_tenants:
        raise ValueError("more participating tenants than tenants")
    return min(1.0, stage_percent / 100.0 * n_tenants / n_participating)


def control_label(rollout_id: str) -> str:
    """The ``artifact_version`` label of a rollout's control sessions (participating tenants only).

    Deterministic from the rollout id, so the server (which publishes it in the
    cohort schema and reads that slice) and every resolver agree without coordination.
    """
    return f"control-{rollout_id}"


def session_in_canary(rollout_id: str, session_id: str, fraction: float) -> bool:
    """Whether a session of a participating tenant gets the candidate."""
    return sticky_fraction(rollout_id, "session", session_id) < fraction


def _check_percent(stage_percent: float) -> None:
    if not 0.0 < stage_percent <= 100.0 or math.isnan(stage_percent):
        raise ValueError(f"stage percent must be in (0, 100], got {stage_percent}")


# -- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    percent: float
    #: Dwell: full windows the stage must have been observed for before advancing.
    min_windows: int
    #: Minimum evidence: merged (noisy) turns in the canary / control slice since the stage started.
    min_canary_turns: float
    min_control_turns: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "min_windows": self.min_windows,
            "min_canary_turns": self.min_canary_turns,
            "min_control_turns": self.min_control_turns,
        }


@dataclass(frozen=True)
class GateSpec:
    """One pre-declared gate: ``measure`` must not ``direction`` by more than ``margin``."""

    measure: str
    direction: Direction
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "direction": self.direction, "margin": self.margin}


@dataclass(frozen=True)
class RolloutPlan:
    risk_class: str
    stages: tuple[Stage, ...]
    gates: tuple[GateSpec, ...]
    #: Total false-rollback probability of a rollout, split evenly over the gates
    #: (each gate's confidence sequence covers the whole rollout, every stage).
    alpha: float = 0.05
    #: Rate difference the mixture of the sequential test is tuned for.
    mixture_scale: float = 0.05
    plans_version: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def alpha_per_gate(self) -> float:
        return self.alpha / len(self.gates)

    def gate(self, measure: str) -> GateSpec:
        for g in self.gates:
            if g.measure == measure:
                return g
        raise RolloutPlanError(f"the plan has no gate on {measure!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "risk_class": self.risk_class,
            "plans_version": self.plans_version,
            "alpha": self.alpha,
            "mixture_scale": self.mixture_scale,
            "stages": [s.to_dict() for s in self.stages],
            "gates": [g.to_dict() for g in self.gates],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 of the canonical plan JSON (recorded in the audit log at rollout start)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, risk_class: str | None = None, plans_version: str = "") -> RolloutPlan:
        if not isinstance(doc, Mapping):
            raise RolloutPlanError("a rollout plan must be a JSON object")
        try:
            stages = tuple(
                Stage(
                    percent=float(s["percent"]),
                    min_windows=int(s.get("min_windows", 1)),
                    min_canary_turns=float(s.get("min_canary_turns", 0)),
                    min_control_turns=float(s.get("min_control_turns", 0)),
                )
                for s in doc["stages"]
            )
            gates = tuple(
                GateSpec(measure=str(g["measure"]), direction=g["direction"], margin=float(g["margin"]))
                for g in doc["gates"]
            )
            return cls(
                risk_class=str(risk_class or doc.get("risk_class", "")),
                stages=stages,
                gates=gates,
                alpha=float(doc.get("alpha", 0.05)),
                mixture_scale=float(doc.get("mixture_scale", 0.05)),
                plans_version=str(doc.get("plans_version", plans_version)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RolloutPlanError):
                raise
            raise RolloutPlanError(f"invalid rollout plan: missing or malformed field ({exc})") from exc

    @classmethod
    def from_json(cls, text: str | bytes, *, risk_class: str | None = None) -> RolloutPlan:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RolloutPlanError(f"rollout plan is not valid JSON: {exc}") from exc
        return cls.from_dict(doc, risk_class=risk_class)


def _validate(plan: RolloutPlan) -> None:
    where = f"rollout plan ({plan.risk_class or 'override'})"
    if not plan.stages:
        raise RolloutPlanError(f"{where}: at least one stage is required")
    previous = 0.0
    for s in plan.stages:
        if not previous < s.percent <= 100.0:
            raise RolloutPlanError(f"{where}: stage percents must increase within (0, 100], got {s.percent}")
        if s.min_windows < 0 or s.min_canary_turns < 0 or s.min_control_turns < 0:
            raise RolloutPlanError(f"{where}: stage {s.percent}%: dwell and evidence must not be negative")
        previous = s.percent
    if plan.stages[-1].percent != 100.0:
        raise RolloutPlanError(f"{where}: the last stage must be 100 % (promotion)")
    measures = [g.measure for g in plan.gates]
    if len(set(measures)) != len(measures):
        raise RolloutPlanError(f"{where}: one gate per measure")
    for g in plan.gates:
        if g.measure not in GATE_MEASURES:
            raise RolloutPlanError(f"{where}: gate on unknown measure {g.measure!r} (one of {', '.join(GATE_MEASURES)})")
        if g.direction not in ("drop", "rise"):
            raise RolloutPlanError(f"{where}: gate {g.measure}: direction must be 'drop' or 'rise'")
        if not 0.0 <= g.margin < 1.0:
            raise RolloutPlanError(f"{where}: gate {g.measure}: margin must be in [0, 1) (a rate difference)")
    if SAFETY_MEASURE not in measures:
        raise RolloutPlanError(f"{where}: a {SAFETY_MEASURE} gate is required")
    safety = plan.gates[measures.index(SAFETY_MEASURE)]
    if safety.direction != "rise" or safety.margin != 0.0:
        raise RolloutPlanError(f"{where}: safety incidents must not rise at all (direction 'rise', margin 0)")
    if not 0.0 < plan.alpha < 0.5:
        raise RolloutPlanError(f"{where}: alpha must be in (0, 0.5)")
    if not plan.mixture_scale > 0.0:
        raise RolloutPlanError(f"{where}: mixture_scale must be positive")


def _check_gates_not_looser(fixed: RolloutPlan, proposed: RolloutPlan, removed: str, loosened: str) -> None:
    for g in fixed.gates:
        try:
            p = proposed.gate(g.measure)
        except RolloutPlanError:
            raise RolloutPlanError(f"gate {g.measure} cannot be removed {removed}") from None
        if p.direction != g.direction or p.margin > g.margin:
            raise RolloutPlanError(
                f"gate {g.measure} cannot be loosened {loosened} ({g.direction} {g.margin} -> {p.direction} {p.margin})"
            )


def check_not_looser(fixed: RolloutPlan, proposed: RolloutPlan) -> None:
    """Refuse a plan change that would loosen any gate of ``fixed``.

    A gate is loosened when it disappears, changes direction or gets a
    larger margin; a smaller alpha is refused too, because it makes harm
    harder to show.
    """
    _check_gates_not_looser(fixed, proposed, "from a running rollout", "mid-rollout")
    if proposed.alpha < fixed.alpha:
        raise RolloutPlanError("alpha cannot be lowered mid-rollout (it would make harm harder to show)")


def check_override_floor(shipped: RolloutPlan, proposed: RolloutPlan, max_first_percent: float | None = None) -> None:
    """Refuse a reviewer's plan override that is looser than the shipped plan of its risk class.

    The override must keep every shipped gate (same direction, margin no
    larger), an alpha no larger (the false-rollback budget; the gates'
    harm test gets no easier to pass), at least two stages (promotion is
    never the first step), a first stage no larger than the shipped first
    stage or ``max_first_percent`` (the risk class's ceiling for a reviewer,
    from the plans file), and on every stage before promotion a dwell and
    minimum evidence no smaller than the shipped first stage's.
    """
    where = f"plan override for risk class {shipped.risk_class or '?'}"
    _check_gates_not_looser(shipped, proposed, f"by a {where}", f"by a {where}")
    if proposed.alpha > shipped.alpha:
        raise RolloutPlanError(f"{where}: alpha {proposed.alpha:g} is above the shipped {shipped.alpha:g}")
    if len(proposed.stages) < 2:
        raise RolloutPlanError(f"{where}: at least two stages are required (a canary stage before the 100 % promotion)")
    ceiling = shipped.stages[0].percent if max_first_percent is None else max(shipped.stages[0].percent, max_first_percent)
    first = proposed.stages[0]
    if first.percent > ceiling:
        raise RolloutPlanError(f"{where}: the first stage may expose at most {ceiling:g} % (got {first.percent:g} %)")
    floor = shipped.stages[0]
    for s in proposed.stages[:-1]:
        if (s.min_windows < floor.min_windows or s.min_canary_turns < floor.min_canary_turns
                or s.min_control_turns < floor.min_control_turns):
            raise RolloutPlanError(
                f"{where}: stage {s.percent:g} % needs at least {floor.min_windows} window(s), "
                f"{floor.min_canary_turns:g} canary and {floor.min_control_turns:g} control turns "
                f"(the shipped first stage's dwell and evidence)"
            )


@dataclass(frozen=True)
class RolloutPlans:
    """The shipped plans, one per risk class."""

    version: str
    plans: Mapping[str, RolloutPlan]
    #: Per risk class, the largest first stage a reviewer's override may start with (percent).
    max_first_percent: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> RolloutPlans:
        if path is None:
            text = resources.files("aggregation").joinpath(PLANS_RESOURCE).read_text()
            source = PLANS_RESOURCE
        else:
            text = Path(path).read_text()
            source = str(path)
        try:
            doc = json.loads(text)
            version = str(doc["version"])
            raw = doc["plans"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RolloutPlanError(f"{source}: not a rollout plans document ({exc})") from exc
        plans = {rc: RolloutPlan.from_dict(p, risk_class=rc, plans_version=version) for rc, p in raw.items()}
        missing = [rc for rc in RISK_CLASSES if rc not in plans]
        if missing:
            raise RolloutPlanError(f"{source}: no plan for risk class(es) {', '.join(missing)}")
        try:
            ceilings = {str(rc): float(v) for rc, v in doc.get("override_max_first_percent", {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise RolloutPlanError(f"{source}: override_max_first_percent must map risk classes to percents") from exc
        for rc, v in ceilings.items():
            if rc not in plans or not 0.0 < v < 100.0:
                raise RolloutPlanError(f"{source}: override_max_first_percent[{rc!r}] must be in (0, 100) for a known class")
        return cls(version=version, plans=plans, max_first_percent=ceilings)

    def for_risk_class(self, risk_class: str) -> RolloutPlan:
        try:
            return self.plans[risk_class]
        except KeyError:
            raise RolloutPlanError(
                f"no rollout plan for risk class {risk_class!r} (known: {', '.join(sorted(self.plans))})"
            ) from None


_SHIPPED: RolloutPlans | None = None


def shipped_plans() -> RolloutPlans:
    """The shipped plans, loaded and validated once per process."""
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = RolloutPlans.load()
    return _SHIPPED


def plan_for_candidate(risk_class: str, override_json: str | None) -> RolloutPlan:
    """The plan a candidate rolls out with: the reviewer's override if any, else its risk class's.

    An override must be at least as strict as the shipped plan of the risk
    class (:func:`check_override_floor`); a looser one raises :class:`RolloutPlanError`.
    """
    plans = shipped_plans()
    shipped = plans.for_risk_class(risk_class)
    if override_json and override_json.strip():
        proposed = RolloutPlan.from_json(override_json, risk_class=risk_class)
        check_override_floor(shipped, proposed, plans.max_first_percent.get(risk_class))
        return proposed
    return shipped


def exposure(n_tenants: int, participating: Sequence[str], fraction: float) -> float:
    """Expected share of the cohort's sessions on the candidate (equal traffic per tenant)."""
    if n_tenants <= 0:
        return 0.0
    return len(participating) * fraction / n_tenants
