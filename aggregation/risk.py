"""Risk classes of an artifact set, least to most demanding: the one order everybody uses.

The risk class decides how many reviewer signatures an approval needs (the
trust root's per-class thresholds), which rollout plan it ships with, and
whether replay and shadow stages are mandatory. Review, remediation, rollout
plans and the tenant's bundle kernel all compare classes through
:class:`RiskClass`, never through their own tuples of names.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from aggregation.errors import InvalidRequest


class UnknownRiskClass(InvalidRequest, ValueError):
    """A risk class name that is not one of :class:`RiskClass` (message lists the known ones)."""


class RiskClass(StrEnum):
    """``low < high < critical``; a ``RiskClass`` is also its wire/storage string."""

    LOW = "low"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def parse(cls, value: object) -> RiskClass:
        """``value`` as a risk class; raises :class:`UnknownRiskClass` naming the known classes."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value)) if isinstance(value, str) else cls(value)  # type: ignore[arg-type]
        except ValueError:
            raise UnknownRiskClass(
                f"unknown risk class {value!r} (one of {', '.join(c.value for c in cls)})"
            ) from None

    @property
    def rank(self) -> int:
        """0 for the least demanding class; higher ranks need at least as many signatures."""
        return _ORDER.index(self)


#: Every class, least demanding first.
RISK_ORDER: tuple[RiskClass, ...] = (RiskClass.LOW, RiskClass.HIGH, RiskClass.CRITICAL)
_ORDER = RISK_ORDER

#: Reviewer signatures per class when an operator names none (``admin root init``).
DEFAULT_THRESHOLDS: Mapping[RiskClass, int] = {RiskClass.LOW: 1, RiskClass.HIGH: 2, RiskClass.CRITICAL: 3}


def highest_risk_class(*classes: str) -> RiskClass:
    """The most demanding of ``classes`` (each parsed; raises :class:`UnknownRiskClass`)."""
    if not classes:
        raise UnknownRiskClass("highest_risk_class needs at least one risk class")
    return max((RiskClass.parse(c) for c in classes), key=lambda c: c.rank)
