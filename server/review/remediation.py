"""The remediation map: failure category -> artifact kind, template, risk class, rollout plan.

A versioned data file (``server/review/data/remediation_v1.json``), loaded once through a typed
model (:mod:`aggregation.typed`): an unknown or misspelt key, a wrong type or an unknown risk class
is refused with the file, the key and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from aggregation.errors import InvalidRequest
from aggregation.risk import RiskClass
from aggregation.risk import highest_risk_class as _highest
from aggregation.typed import DataFileError, Problem, StrictModel, load_json
from server.signals.views import DEFAULT_EVIDENCE_FLOOR

SHIPPED = "data/remediation_v1.json"


class RemediationMapError(DataFileError):
    """A remediation map that does not load (each problem names the file, key and line)."""


class UnknownArtifactKind(InvalidRequest):
    """An artifact kind the remediation map does not know (so no risk class can be derived for it)."""


def risk_rank(risk_class: str) -> int:
    return RiskClass.parse(risk_class).rank


def highest_risk_class(*classes: str) -> RiskClass:
    return _highest(*classes)


class RuleSettings(StrictModel):
    """How the hotspot rules decide (see :mod:`server.review.candidates`)."""

    lookback_windows: int = Field(ge=1)
    min_previous_windows: int = Field(ge=0)
    #: A slice proposes nothing unless its noisy ``turns`` estimate is at least this many noise
    #: standard deviations (sqrt of the DP variance) and at least ``min_turns``.
    min_turns_sigmas: float = Field(default=DEFAULT_EVIDENCE_FLOOR.min_turns_sigmas, gt=0)
    min_turns: float = Field(default=DEFAULT_EVIDENCE_FLOOR.min_turns, ge=0)
    #: ... and its rate interval is at most this wide (a [0 %, 100 %] interval is no evidence).
    max_interval_width: float = Field(default=DEFAULT_EVIDENCE_FLOOR.max_interval_width, gt=0, le=1)


class CategoryRemedy(StrictModel):
    kind: str = Field(min_length=1)
    template: str = Field(min_length=1)
    risk_class: RiskClass
    rollout_plan: RiskClass
    threshold: float = Field(ge=0, le=1)


class RemediationMapFile(StrictModel):
    """The file as written (``server/review/data/remediation_v1.json``)."""

    version: str = Field(min_length=1)
    description: str = ""
    rules: RuleSettings
    intent_tools: dict[str, str] = Field(default_factory=dict)
    categories: dict[str, CategoryRemedy]
    templates: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Remedy:
    category: str
    kind: str
    template: str
    risk_class: RiskClass
    rollout_plan: str
    threshold: float


@dataclass(frozen=True)
class RemediationMap:
    version: str
    remedies: Mapping[str, Remedy]
    templates: Mapping[str, Mapping[str, Any]]
    intent_tools: Mapping[str, str]
    lookback_windows: int
    min_previous_windows: int
    rules: RuleSettings = RuleSettings(lookback_windows=3, min_previous_windows=2)

    @classmethod
    def load(cls, path: str | Path | None = None) -> RemediationMap:
        """Load and validate the map (default: the shipped one); raises :class:`RemediationMapError`."""
        if path is None:
            resource = resources.files("server.review").joinpath(SHIPPED)
            source, text = f"server/review/{SHIPPED}", resource.read_text(encoding="utf-8")
        else:
            source, text = str(path), None
        try:
            doc = load_json(RemediationMapFile, source, text=text)
        except DataFileError as exc:
            raise RemediationMapError(exc.source, exc.problems) from None
        problems = [
            Problem(("categories", c, "template"), f"unknown template {r.template!r} (templates: "
                    f"{', '.join(sorted(doc.templates))})")
            for c, r in doc.categories.items() if r.template not in doc.templates
        ]
        if problems:
            raise RemediationMapError(source, problems)
        remedies = {c: Remedy(c, r.kind, r.template, r.risk_class, r.rollout_plan.value, r.threshold)
                    for c, r in doc.categories.items()}
        return cls(doc.version, remedies, doc.templates, dict(doc.intent_tools), doc.rules.lookback_windows,
                   doc.rules.min_previous_windows, doc.rules)

    def kind_risk_class(self, kind: str) -> RiskClass:
        """The highest risk class any category of the map assigns to artifacts of ``kind``."""
        classes = [r.risk_class for r in self.remedies.values() if r.kind == kind]
        if not classes:
            known = sorted({r.kind for r in self.remedies.values()})
            raise UnknownArtifactKind(f"unknown artifact kind {kind!r} (the remediation map knows {', '.join(known)})")
        return highest_risk_class(*classes)

    def required_risk_class(self, kinds: Iterable[str], at_least: str = RiskClass.LOW) -> RiskClass:
        """The least risk class a candidate shipping ``kinds`` may have (never below ``at_least``)."""
        return highest_risk_class(at_least, *(self.kind_risk_class(k) for k in kinds))

    def render(self, remedy: Remedy, intent: str) -> tuple[str, bytes]:
        """Artifact name and JSON content for ``remedy`` applied to ``intent``."""
        values = {"intent": intent, "tool": self.intent_tools.get(intent, "the documented tool")}

        def fill(v: Any) -> Any:
            if isinstance(v, str):
                return v.format(**values)
            if isinstance(v, list):
                return [fill(x) for x in v]
            if isinstance(v, dict):
                return {k: fill(x) for k, x in v.items()}
            return v

        content = fill(dict(self.templates[remedy.template]))
        return f"{remedy.kind}.{intent}", json.dumps(content, sort_keys=True, indent=1).encode("utf-8")


@lru_cache(maxsize=1)
def default_remediation_map() -> RemediationMap:
    """The shipped remediation map (``server/review/data/remediation_v1.json``), loaded once."""
    return RemediationMap.load()
