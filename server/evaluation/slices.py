"""Reading a rollout's labelled slices out of the merged windows.

Replay results and paired shadow outcomes reach the server as slices of the
tenants' ordinary window releases, labelled on ``artifact_version`` (see
:func:`aggregation.rollout_plan.replay_label` and
:func:`~aggregation.rollout_plan.shadow_label`), so they come back through
the same merge, the same k-tenant suppression and the same secure
aggregation as live telemetry. This module sums them per window and label.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, cast

from sqlalchemy.orm import Session

from aggregation.rollout_plan import RolloutPhase, replay_label, shadow_label
from aggregation.schema import TURNS
from aggregation.sequential import ZERO, ArmCounts, Verdict
from server.context import ServerSettings
from server.signals.views import merged_cells

ARTIFACT_VERSION = "artifact_version"
INTENT = "intent"


@dataclass
class LabelledSlices:
    """Per window: per label, per measure, the summed counts (``turns`` under :data:`TURNS`)."""

    windows: list[int] = field(default_factory=list)
    suppressed_windows: list[int] = field(default_factory=list)
    #: window -> label -> measure -> counts (count/variance in ``count``, turns in ``turns``)
    counts: dict[int, dict[str, dict[str, ArmCounts]]] = field(default_factory=dict)
    #: Fewest contributing tenants over the usable windows that carry the labels (0: none).
    min_tenants: int = 0
    #: intent -> label -> measure -> counts over every usable window (for the evidence printout).
    per_intent: dict[str, dict[str, dict[str, ArmCounts]]] = field(default_factory=dict)

    def get(self, window: int, label: str, measure: str) -> ArmCounts:
        return self.counts.get(window, {}).get(label, {}).get(measure, ZERO)

    def total(self, label: str, measure: str) -> ArmCounts:
        out = ZERO
        for w in self.windows:
            out = out + self.get(w, label, measure)
        return out


def read_labelled_slices(
    session: Session, settings: ServerSettings, cohort: str, labels: Sequence[str], from_window: int,
    *, intents: Collection[str] = (),
) -> LabelledSlices:
    """Merged counts of ``labels`` in ``cohort`` from ``from_window`` on (``intents``: only those; empty: all).

    A window with any suppressed cell of these labels (fewer than k
    tenants) is not evidence. Turns are read once per slice (every
    measure's cell repeats its slice's turns).
    """
    wanted = set(labels)
    scope = set(intents)
    counts: dict[int, dict[str, dict[str, ArmCounts]]] = defaultdict(lambda: defaultdict(dict))
    per_intent: dict[str, dict[str, dict[str, ArmCounts]]] = defaultdict(lambda: defaultdict(dict))
    seen_slices: set[tuple[int, tuple[tuple[str, str], ...]]] = set()
    windows: set[int] = set()
    suppressed: set[int] = set()
    tenants: dict[int, int] = {}
    cells = merged_cells(session, cohort, settings, window_start_from=from_window)
    for cell in cells:
        label = cell.slice.get(ARTIFACT_VERSION, "")
        if label not in wanted:
            continue
        intent = cell.slice.get(INTENT, "")
        if scope and intent not in scope:
            continue
        w = cell.window_start
        windows.add(w)
        if cell.suppressed:
            suppressed.add(w)
            continue
        tenants[w] = min(tenants.get(w, cell.tenants), cell.tenants)
        by_measure = counts[w][label]
        by_measure[cell.measure] = by_measure.get(cell.measure, ZERO) + ArmCounts(cell.estimate, cell.variance,
                                                                                 0.0, 0.0)
        pi = per_intent[intent][label]
        pi[cell.measure] = pi.get(cell.measure, ZERO) + ArmCounts(cell.estimate, cell.variance, 0.0, 0.0)
        key = (w, tuple(sorted(cell.slice.items())))
        if key not in seen_slices:
            seen_slices.add(key)
            t = ArmCounts(0.0, 0.0, cell.turns_estimate, cell.turns_variance)
            by_measure[TURNS] = by_measure.get(TURNS, ZERO) + t
            pi[TURNS] = pi.get(TURNS, ZERO) + t
    usable = sorted(w for w in windows if w not in suppressed)
    out = LabelledSlices(windows=usable, suppressed_windows=sorted(suppressed),
                         min_tenants=min((tenants[w] for w in usable if w in tenants), default=0))
    for w in usable:
        out.counts[w] = {label: dict(m) for label, m in counts[w].items()}
    out.per_intent = {i: {label: dict(m) for label, m in d.items()} for i, d in per_intent.items()}
    return out


def with_turns(counts: ArmCounts, turns: ArmCounts) -> ArmCounts:
    """``counts`` of a measure joined with its slice's turns (for :mod:`aggregation.sequential`)."""
    return ArmCounts(counts.count, counts.count_variance, turns.turns, turns.turns_variance)


class ValidationDecision(StrEnum):
    """A validation stage's outcome (stored as the string value in the rollout's assessment).

    Replay: ``pass``, ``regression`` (a gate or another category worse), ``no_fix`` (the
    category does not drop) or ``wait``; shadow: ``pass``, ``harm`` or ``wait``.
    """

    PASS = "pass"
    REGRESSION = "regression"
    NO_FIX = "no_fix"
    HARM = "harm"
    WAIT = "wait"

    @property
    def failed(self) -> bool:
        return self in (ValidationDecision.REGRESSION, ValidationDecision.NO_FIX, ValidationDecision.HARM)


def verdict_json(v: Verdict) -> dict[str, Any]:
    """A gate verdict as JSON-able values: an unbounded end of its interval is None, numbers rounded."""
    d = asdict(v)
    for k in ("estimate", "low", "high"):
        x = d[k]
        d[k] = None if x in (float("inf"), float("-inf")) else round(x, 6)
    return d


def validation_labels(rollout_id: str, phase: str) -> list[str]:
    """The two labels a validation stage's results arrive under (replay: stable, candidate; shadow: worse, better)."""
    if phase == RolloutPhase.REPLAY:
        return [replay_label(rollout_id, "stable"), replay_label(rollout_id, "candidate")]
    if phase == RolloutPhase.SHADOW:
        return [shadow_label(rollout_id, "worse"), shadow_label(rollout_id, "better")]
    raise ValueError(f"{phase!r} is not a validation stage")


def read_validation(
    session: Session, settings: ServerSettings, cohort: str, rollout_id: str, phase: str, from_window: int,
    intents: Collection[str] = (),
) -> LabelledSlices:
    """A rollout's replay or shadow slices (``phase``) from ``from_window`` on."""
    return read_labelled_slices(session, settings, cohort, validation_labels(rollout_id, phase), from_window,
                                intents=intents)


class VerdictsJson:
    """Mixin of an assessment dataclass with ``verdicts``: its JSON-able dict (see :func:`verdict_json`)."""

    verdicts: list[Verdict]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = asdict(cast(Any, self))
        doc["verdicts"] = [verdict_json(v) for v in self.verdicts]
        return doc
