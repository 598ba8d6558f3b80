"""Rollout plans (data) and sticky canary assignment (hashes).

A :class:`RolloutPlan` lists the stages a candidate goes through (percent of
the cohort's traffic), the dwell and evidence each stage needs, and the gates
the canary must pass against the control. Plans per risk class ship as a
versioned data file (``aggregation/data/rollout_plans_v1.json``), loaded through typed
models (:mod:`aggregation.typed`: a typo'd key or a mistyped value is refused with
its name and line) and validated once; a reviewer may override a candidate's plan before approval
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
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from aggregation.errors import InvalidRequest
from aggregation.risk import RISK_ORDER
from aggregation.typed import DataFileError, StrictModel, load_json, validate

PLANS_RESOURCE = "data/rollout_plans_v1.json"
GATE_MEASURES = ("task_success", "escalated", "human_correction", "tool_error", "timeout", "safety_incident")
SAFETY_MEASURE = "safety_incident"
RISK_CLASSES = RISK_ORDER  # the one risk-class order (aggregation.risk.RiskClass)

Direction = Literal["drop", "rise"]
#: Largest share of a participating tenant's sessions on the candidate before the 100 % stage
#: (when the cohort has enough tenants): the rest is the randomized control.
MAX_CANARY_SHARE = 0.5
M = TypeVar("M", bound=BaseModel)


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


class RolloutPhase(StrEnum):
    """Where a rollout is: a validation stage (nobody is served the candidate) or its live stages.

    A validation stage's kind is its phase (stored as the string value)."""

    REPLAY = "replay"
    SHADOW = "shadow"
    LIVE = "live"


#: Validation stage kinds, in the order a rollout runs them (before its live stages).
VALIDATION_KINDS = (RolloutPhase.REPLAY, RolloutPhase.SHADOW)
#: Stages no plan of a risk class may lack (a reviewer's override may add stages, never drop these).
MANDATORY_VALIDATION: Mapping[str, tuple[RolloutPhase, ...]] = {
    "low": (RolloutPhase.REPLAY,), "high": VALIDATION_KINDS, "critical": VALIDATION_KINDS,
}
ReplayArm = Literal["stable", "candidate"]
ShadowSide = Literal["worse", "better"]


def replay_label(rollout_id: str, arm: ReplayArm) -> str:
    """The ``artifact_version`` label of a rollout's replayed turns (``stable`` or ``candidate`` arm).

    Replay results travel as slices of the tenants' ordinary window releases
    under these labels, so they get the same bounding, DP noise, ledger spend
    and (when the cohort uses it) secure aggregation as live telemetry.
    """
    if arm not in ("stable", "candidate"):
        raise ValueError(f"replay arm must be 'stable' or 'candidate', got {arm!r}")
    return f"replay-{arm}-{rollout_id}"


def shadow_label(rollout_id: str, side: ShadowSide) -> str:
    """The label of a rollout's paired shadow outcomes.

    Per complete (live, shadow) pair the collector counts one turn under each
    label; under ``worse`` a measure counts when the shadow (candidate) turn
    is worse on it than its live twin (a failure only the shadow has, or a
    success only the live turn has), under ``better`` the reverse. Those are
    the discordant pairs of a McNemar test.
    """
    if side not in ("worse", "better"):
        raise ValueError(f"shadow side must be 'worse' or 'better', got {side!r}")
    return f"shadow-{side}-{rollout_id}"


def session_in_shadow(rollout_id: str, session_id: str, share: float) -> bool:
    """Whether a session runs the candidate in shadow beside its live path (sticky, own hash stream)."""
    return sticky_fraction(rollout_id, "shadow", session_id) < share


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
    min_windows: int = 1
    #: Minimum evidence: merged (noisy) turns in the canary / control slice since the stage started.
    min_canary_turns: float = 0.0
    min_control_turns: float = 0.0

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
class ValidationStage:
    """A stage before any user sees the candidate: ``replay`` (offline) or ``shadow`` (beside the live path).

    Replay: every tenant replays its own cases through its agent harness with
    the stable and the candidate artifacts; the candidate passes when its own
    category's failure rate drops by at least ``improvement`` (the whole
    confidence interval below ``-improvement``) and no gate measure nor other
    category is worse by more than ``margin``; evidence must come from at
    least ``min_tenants`` tenants (never fewer than the server's k) and hold
    ``min_cases`` replayed cases per arm.

    Shadow: a sticky ``share`` of sessions runs the candidate beside the live
    path (its output discarded); the paired test on (live, shadow) pairs must
    show no gate harm, and non-inferiority within each gate's margin, on at
    least ``min_cases`` pairs, after ``min_windows`` windows.
    """

    kind: str
    min_windows: int = 1
    min_cases: float = 30.0
    min_tenants: int = 1
    improvement: float = 0.0
    margin: float = 0.02
    share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "min_windows": self.min_windows, "min_cases": self.min_cases,
                               "min_tenants": self.min_tenants, "margin": self.margin}
        if self.kind == RolloutPhase.REPLAY:
            doc["improvement"] = self.improvement
        else:
            doc["share"] = self.share
        return doc


# The documents as written (a plans file, a reviewer's override, a rollout's frozen plan): typed
# models (:mod:`aggregation.typed`), so a typo'd key or a mistyped value is refused with its name
# (and, from a text, its line). Defaults are the dataclasses' own; the rules a plan obeys beyond
# its types (increasing stages, a safety gate, ...) are checked once, on the dataclass.


class StageDocument(StrictModel):
    percent: float
    min_windows: int = Stage.min_windows
    min_canary_turns: float = Stage.min_canary_turns
    min_control_turns: float = Stage.min_control_turns


class GateDocument(StrictModel):
    measure: str
    direction: Direction
    margin: float


class ValidationStageDocument(StrictModel):
    kind: str
    min_windows: int = ValidationStage.min_windows
    min_cases: float = ValidationStage.min_cases
    min_tenants: int = ValidationStage.min_tenants
    improvement: float = ValidationStage.improvement
    margin: float = ValidationStage.margin
    share: float = ValidationStage.share


@dataclass(frozen=True)
class RolloutPlan:
    risk_class: str
    stages: tuple[Stage, ...]
    gates: tuple[GateSpec, ...]
    #: Stages before the live ones, in order (replay, then shadow); see :class:`ValidationStage`.
    validation: tuple[ValidationStage, ...] = ()
    #: Intents the live stages are scoped to (empty: every intent); sessions of other intents get stable.
    intents: tuple[str, ...] = ()
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

    def validation_stage(self, kind: str) -> ValidationStage | None:
        return next((v for v in self.validation if v.kind == kind), None)

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
            "validation": [v.to_dict() for v in self.validation],
            "intents": list(self.intents),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 of the canonical plan JSON (recorded in the audit log at rollout start)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_document(cls, doc: PlanDocument, *, risk_class: str | None = None, plans_version: str = "") -> RolloutPlan:
        """The plan a validated document describes (``risk_class`` and ``plans_version`` where it names none)."""
        return cls(
            risk_class=risk_class or doc.risk_class,
            stages=tuple(Stage(**s.model_dump()) for s in doc.stages),
            gates=tuple(GateSpec(**g.model_dump()) for g in doc.gates),
            validation=tuple(ValidationStage(**v.model_dump()) for v in doc.validation),
            intents=tuple(sorted(set(doc.intents))),
            alpha=doc.alpha,
            mixture_scale=doc.mixture_scale,
            plans_version=plans_version if doc.plans_version is None else doc.plans_version,
        )

    @classmethod
    def from_dict(cls, doc: Any, *, risk_class: str | None = None, plans_version: str = "",
                  text: str | None = None) -> RolloutPlan:
        """A plan document (``text``: the JSON it was parsed from, for line numbers)."""
        source = f"rollout plan ({risk_class or 'override'})"
        return cls.from_document(_typed(PlanDocument, doc, source, text), risk_class=risk_class,
                                 plans_version=plans_version)

    @classmethod
    def from_json(cls, text: str | bytes, *, risk_class: str | None = None) -> RolloutPlan:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RolloutPlanError(f"rollout plan is not valid JSON: {exc}") from exc
        return cls.from_dict(doc, risk_class=risk_class, text=text)


class PlanDocument(StrictModel):
    """One rollout plan (:meth:`RolloutPlan.to_dict` writes every key; a plans file leaves out the first two)."""

    risk_class: str = ""
    plans_version: str | None = None
    alpha: float = RolloutPlan.alpha
    mixture_scale: float = RolloutPlan.mixture_scale
    stages: list[StageDocument]
    gates: list[GateDocument]
    validation: list[ValidationStageDocument] = []
    intents: list[str] = []


class PlansFileDocument(StrictModel):
    """``aggregation/data/rollout_plans_v1.json``: the shipped plans, one per risk class."""

    version: str = Field(min_length=1)
    description: str = ""
    override_max_first_percent: dict[str, float] = {}
    plans: dict[str, PlanDocument]
    intent_scoped_kinds: list[str] = []


def _typed(model: type[M], doc: Any, source: str, text: str | None) -> M:
    """``doc`` as ``model``; a :class:`RolloutPlanError` naming each key (and line) otherwise."""
    try:
        return validate(model, doc, source=source, text=text, fmt="json")
    except DataFileError as exc:
        raise _refusal(exc) from None


def _refusal(exc: DataFileError) -> RolloutPlanError:
    """A typed loader's problems (one per key, each with its file and line) as one plan error on one line."""
    return RolloutPlanError("; ".join(str(exc).splitlines()))


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
    kinds = [v.kind for v in plan.validation]
    for v in plan.validation:
        if v.kind not in VALIDATION_KINDS:
            raise RolloutPlanError(f"{where}: unknown validation stage kind {v.kind!r} (one of {', '.join(VALIDATION_KINDS)})")
        if v.min_windows < 0 or v.min_cases < 0 or v.min_tenants < 1:
            raise RolloutPlanError(f"{where}: {v.kind} stage: min_windows/min_cases >= 0 and min_tenants >= 1")
        if not 0.0 <= v.margin < 1.0 or not 0.0 <= v.improvement < 1.0:
            raise RolloutPlanError(f"{where}: {v.kind} stage: margin and improvement must be in [0, 1)")
        if v.kind == RolloutPhase.SHADOW and not 0.0 < v.share <= 1.0:
            raise RolloutPlanError(f"{where}: shadow stage: share must be in (0, 1]")
    if len(set(kinds)) != len(kinds) or kinds != sorted(kinds, key=VALIDATION_KINDS.index):
        raise RolloutPlanError(f"{where}: at most one replay and one shadow stage, replay first")
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
    _check_validation_floor(shipped, proposed, where)
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


def _check_validation_floor(shipped: RolloutPlan, proposed: RolloutPlan, where: str) -> None:
    """Every mandatory validation stage of the class, and every shipped one, stays, no looser."""
    required = set(MANDATORY_VALIDATION.get(shipped.risk_class, ())) | {v.kind for v in shipped.validation}
    for kind in sorted(required, key=VALIDATION_KINDS.index):
        got = proposed.validation_stage(kind)
        if got is None:
            raise RolloutPlanError(f"{where}: the {kind} stage is mandatory and cannot be removed")
        floor = shipped.validation_stage(kind)
        if floor is None:
            continue
        if (got.min_windows < floor.min_windows or got.min_cases < floor.min_cases
                or got.min_tenants < floor.min_tenants or got.improvement < floor.improvement
                or got.margin > floor.margin or (kind == RolloutPhase.SHADOW and got.share < floor.share)):
            raise RolloutPlanError(
                f"{where}: the {kind} stage cannot be looser than the shipped one ({floor.to_dict()})"
            )


@dataclass(frozen=True)
class RolloutPlans:
    """The shipped plans, one per risk class."""

    version: str
    plans: Mapping[str, RolloutPlan]
    #: Per risk class, the largest first stage a reviewer's override may start with (percent).
    max_first_percent: Mapping[str, float] = field(default_factory=dict)
    #: Artifact kinds whose rollouts are scoped to the artifact's intent by default (per-intent canaries).
    intent_scoped_kinds: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: str | Path | None = None) -> RolloutPlans:
        """Load and validate a plans file (None: the shipped one); raises :class:`RolloutPlanError`."""
        if path is None:
            source, text = f"aggregation/{PLANS_RESOURCE}", resources.files("aggregation").joinpath(PLANS_RESOURCE).read_text()
        else:
            source, text = str(path), None
        try:
            doc = load_json(PlansFileDocument, source, text=text)
        except DataFileError as exc:
            raise _refusal(exc) from None
        plans = {rc: RolloutPlan.from_document(p, risk_class=rc, plans_version=doc.version)
                 for rc, p in doc.plans.items()}
        missing = [rc for rc in RISK_CLASSES if rc not in plans]
        if missing:
            raise RolloutPlanError(f"{source}: no plan for risk class(es) {', '.join(missing)}")
        for rc, plan in plans.items():
            lacking = [k for k in MANDATORY_VALIDATION.get(rc, ()) if plan.validation_stage(k) is None]
            if lacking:
                raise RolloutPlanError(f"{source}: plan {rc!r} lacks its mandatory {', '.join(lacking)} stage(s)")
        for rc, v in doc.override_max_first_percent.items():
            if rc not in plans or not 0.0 < v < 100.0:
                raise RolloutPlanError(f"{source}: override_max_first_percent[{rc!r}] must be in (0, 100) for a known class")
        return cls(version=doc.version, plans=plans, max_first_percent=dict(doc.override_max_first_percent),
                   intent_scoped_kinds=frozenset(doc.intent_scoped_kinds))

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


def with_default_intents(plan: RolloutPlan, kind: str, intent: str | None) -> RolloutPlan:
    """``plan`` scoped to ``intent`` when ``kind`` is intent-scoped by default and the plan names no intents."""
    if plan.intents or not intent or intent == "other" or kind not in shipped_plans().intent_scoped_kinds:
        return plan
    return replace(plan, intents=(intent,))


def exposure(n_tenants: int, participating: Sequence[str], fraction: float) -> float:
    """Expected share of the cohort's sessions on the candidate (equal traffic per tenant)."""
    if n_tenants <= 0:
        return 0.0
    return len(participating) * fraction / n_tenants
