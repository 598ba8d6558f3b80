"""The remediation map: failure category -> artifact kind, template, risk class, rollout plan.

A versioned data file (``server/review/data/remediation_v1.json``), loaded and validated once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from aggregation.errors import FedsignalError, InvalidRequest

#: Risk classes, least to most demanding.
RISK_ORDER = ("low", "high", "critical")


class RemediationMapError(FedsignalError):
    pass


class UnknownArtifactKind(InvalidRequest):
    """An artifact kind the remediation map does not know (so no risk class can be derived for it)."""


def risk_rank(risk_class: str) -> int:
    if risk_class not in RISK_ORDER:
        raise FedsignalError(f"unknown risk class {risk_class!r} (one of {', '.join(RISK_ORDER)})")
    return RISK_ORDER.index(risk_class)


def highest_risk_class(*classes: str) -> str:
    return max(classes, key=risk_rank)


@dataclass(frozen=True)
class Remedy:
    category: str
    kind: str
    template: str
    risk_class: str
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

    @classmethod
    def load(cls, path: str | Path | None = None) -> RemediationMap:
        text = (
            Path(path).read_text() if path is not None
            else resources.files("server.review").joinpath("data/remediation_v1.json").read_text()
        )
        try:
            doc = json.loads(text)
            remedies = {c: Remedy(c, r["kind"], r["template"], r["risk_class"], r["rollout_plan"], float(r["threshold"]))
                        for c, r in doc["categories"].items()}
            out = cls(str(doc["version"]), remedies, doc["templates"], dict(doc.get("intent_tools", {})),
                      int(doc["rules"]["lookback_windows"]), int(doc["rules"]["min_previous_windows"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RemediationMapError(f"remediation map is malformed: {exc}") from exc
        for r in out.remedies.values():
            if r.template not in out.templates:
                raise RemediationMapError(f"category {r.category}: unknown template {r.template!r}")
            if r.risk_class not in ("low", "high", "critical"):
                raise RemediationMapError(f"category {r.category}: unknown risk class {r.risk_class!r}")
        return out

    def kind_risk_class(self, kind: str) -> str:
        """The highest risk class any category of the map assigns to artifacts of ``kind``."""
        classes = [r.risk_class for r in self.remedies.values() if r.kind == kind]
        if not classes:
            known = sorted({r.kind for r in self.remedies.values()})
            raise UnknownArtifactKind(f"unknown artifact kind {kind!r} (the remediation map knows {', '.join(known)})")
        return highest_risk_class(*classes)

    def required_risk_class(self, kinds: Iterable[str], at_least: str = RISK_ORDER[0]) -> str:
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
