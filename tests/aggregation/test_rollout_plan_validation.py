"""Validation stages in rollout plans: replay for every class, shadow for high and critical, overrides only add."""

from __future__ import annotations

import json

import pytest

from aggregation.rollout_plan import (
    MANDATORY_VALIDATION,
    RolloutPlan,
    RolloutPlanError,
    plan_for_candidate,
    shipped_plans,
)


def _override(risk_class: str, **changes: object) -> str:
    doc = shipped_plans().for_risk_class(risk_class).to_dict()
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize("risk_class", ["low", "high", "critical"])
def test_shipped_plans_carry_their_mandatory_stages(risk_class: str) -> None:
    plan = shipped_plans().for_risk_class(risk_class)
    assert [v.kind for v in plan.validation] == list(MANDATORY_VALIDATION[risk_class])


@pytest.mark.parametrize(("risk_class", "kept"), [("low", []), ("high", ["replay"]), ("high", ["shadow"]),
                                                  ("critical", [])])
def test_an_override_cannot_drop_a_mandatory_stage(risk_class: str, kept: list[str]) -> None:
    shipped = shipped_plans().for_risk_class(risk_class)
    validation = [v.to_dict() for v in shipped.validation if v.kind in kept]
    with pytest.raises(RolloutPlanError, match="mandatory and cannot be removed"):
        plan_for_candidate(risk_class, _override(risk_class, validation=validation))


def test_an_override_may_add_a_shadow_stage_to_a_low_plan_and_shorten_dwell_but_not_the_stages() -> None:
    low = shipped_plans().for_risk_class("low")
    shadow = {"kind": "shadow", "min_windows": 1, "min_cases": 100, "min_tenants": 3, "margin": 0.02, "share": 0.1}
    plan = plan_for_candidate("low", _override("low", validation=[*[v.to_dict() for v in low.validation], shadow]))
    assert [v.kind for v in plan.validation] == ["replay", "shadow"]


@pytest.mark.parametrize("loosen", [{"min_cases": 1}, {"min_tenants": 1}, {"margin": 0.5}, {"improvement": 0.0}])
def test_an_override_cannot_loosen_the_shipped_replay_stage(loosen: dict[str, object]) -> None:
    high = shipped_plans().for_risk_class("high")
    validation = [{**v.to_dict(), **loosen} if v.kind == "replay" else v.to_dict() for v in high.validation]
    with pytest.raises(RolloutPlanError, match="cannot be looser"):
        plan_for_candidate("high", _override("high", validation=validation))


def test_a_smaller_shadow_share_is_looser() -> None:
    high = shipped_plans().for_risk_class("high")
    validation = [{**v.to_dict(), "share": 0.01} if v.kind == "shadow" else v.to_dict() for v in high.validation]
    with pytest.raises(RolloutPlanError, match="cannot be looser"):
        plan_for_candidate("high", _override("high", validation=validation))


@pytest.mark.parametrize(("validation", "message"), [
    ([{"kind": "shadow", "share": 0.1}, {"kind": "replay"}], "replay first"),
    ([{"kind": "replay"}, {"kind": "replay"}], "at most one"),
    ([{"kind": "canary"}], "unknown validation stage kind"),
    ([{"kind": "shadow", "share": 0.0}], "share must be in"),
    ([{"kind": "replay", "surprise": 1}], r"validation\[0\]\.surprise: unknown key"),
])
def test_malformed_validation_stages_are_refused(validation: list[dict[str, object]], message: str) -> None:
    doc = shipped_plans().for_risk_class("low").to_dict()
    doc["validation"] = validation
    with pytest.raises(RolloutPlanError, match=message):
        RolloutPlan.from_dict(doc)


def test_intents_round_trip_and_change_the_digest() -> None:
    low = shipped_plans().for_risk_class("low")
    scoped = RolloutPlan.from_json(_override("low", intents=["refund", "billing", "refund"]))
    assert scoped.intents == ("billing", "refund")
    assert RolloutPlan.from_json(scoped.to_json()) == scoped
    assert scoped.digest() != low.digest()
    with pytest.raises(RolloutPlanError, match="intents"):
        RolloutPlan.from_json(_override("low", intents="refund"))
