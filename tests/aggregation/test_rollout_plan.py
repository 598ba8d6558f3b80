"""Rollout plans as data and sticky canary assignment."""

from __future__ import annotations

import json

import pytest

from aggregation.rollout_plan import (
    MAX_CANARY_SHARE,
    RolloutPlan,
    RolloutPlanError,
    RolloutPlans,
    check_not_looser,
    participating_tenants,
    plan_for_candidate,
    session_fraction,
    session_in_canary,
    shipped_plans,
    sticky_fraction,
)

STAGES = (1, 5, 10, 25, 50, 100)


def test_shipped_plans_cover_every_risk_class_with_the_default_stages() -> None:
    plans = shipped_plans()
    assert plans.version == "1.1.0"
    for rc in ("low", "high", "critical"):
        plan = plans.for_risk_class(rc)
        assert [s.percent for s in plan.stages] == [float(p) for p in STAGES]
        safety = plan.gate("safety_incident")
        assert (safety.direction, safety.margin) == ("rise", 0.0)
        assert plan.gate("task_success").direction == "drop"
        assert min(g.margin for g in plan.gates) == safety.margin


def test_unknown_risk_class_is_refused_with_the_known_ones() -> None:
    with pytest.raises(RolloutPlanError, match="known: critical, high, low"):
        shipped_plans().for_risk_class("medium")


def test_reviewer_override_is_used_and_validated() -> None:
    doc = shipped_plans().for_risk_class("low").to_dict()
    doc["stages"] = [{"percent": 10, "min_windows": 1, "min_canary_turns": 20, "min_control_turns": 100},
                     {"percent": 100, "min_windows": 0}]
    plan = plan_for_candidate("low", json.dumps(doc))
    assert [s.percent for s in plan.stages] == [10.0, 100.0]
    assert plan_for_candidate("low", "").digest() == shipped_plans().for_risk_class("low").digest()
    doc["gates"] = [g for g in doc["gates"] if g["measure"] != "safety_incident"]
    with pytest.raises(RolloutPlanError, match="safety_incident gate is required"):
        plan_for_candidate("low", json.dumps(doc))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["stages"].reverse(), "must increase"),
        (lambda d: d["stages"].pop(), "last stage must be 100"),
        (lambda d: d["gates"][0].update(direction="sideways"), "direction"),
        (lambda d: d["gates"][-1].update(margin=0.01), "must not rise at all"),
        (lambda d: d["gates"].append(dict(d["gates"][0])), "one gate per measure"),
        (lambda d: d["gates"][0].update(measure="vibes"), "unknown measure"),
        (lambda d: d.pop("stages"), "stages: required key is missing"),
    ],
)
def test_invalid_plans_are_refused(mutate, message) -> None:  # type: ignore[no-untyped-def]
    doc = shipped_plans().for_risk_class("low").to_dict()
    mutate(doc)
    with pytest.raises(RolloutPlanError, match=message):
        RolloutPlan.from_dict(doc)


def test_plans_file_without_a_risk_class_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = {"version": "9", "plans": {"low": shipped_plans().for_risk_class("low").to_dict()}}
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RolloutPlanError, match="high, critical"):
        RolloutPlans.load(path)


def test_gates_cannot_be_loosened() -> None:
    fixed = shipped_plans().for_risk_class("high")
    tighter = fixed.to_dict()
    tighter["gates"][0]["margin"] = 0.001
    check_not_looser(fixed, RolloutPlan.from_dict(tighter))
    looser = fixed.to_dict()
    looser["gates"][0]["margin"] = 0.5
    with pytest.raises(RolloutPlanError, match="cannot be loosened"):
        check_not_looser(fixed, RolloutPlan.from_dict(looser))


def test_sticky_fraction_is_deterministic_uniform_and_unambiguous() -> None:
    assert sticky_fraction("r", "tenant", "a") == sticky_fraction("r", "tenant", "a")
    assert sticky_fraction("ab", "c") != sticky_fraction("a", "bc")
    values = [sticky_fraction("r1", "session", str(i)) for i in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    assert abs(sum(v < 0.1 for v in values) / len(values) - 0.1) < 0.02


def test_a_small_cohort_still_gets_exactly_one_canary_tenant() -> None:
    tenants = [f"tenant-{i}" for i in range(5)]
    assert len(participating_tenants("r1", tenants, 1)) == 1
    assert participating_tenants("r1", [], 1) == []
    assert len(participating_tenants("r1", tenants, 25)) == 3  # ceil(1.25 / 0.5): room for a control
    assert participating_tenants("r1", tenants, 100) == sorted(tenants)


def test_participating_tenants_keep_a_randomized_control_before_100_percent() -> None:
    """Regression: with ceil(p * n) tenants the session fraction was 1 whenever p * n was whole
    (10 % of 10 tenants: one tenant, all its sessions on the candidate), leaving no control."""
    for n in (5, 10, 20, 37, 200):
        tenants = [f"t{i}" for i in range(n)]
        for p in STAGES:
            if p >= 100:
                continue
            m = len(participating_tenants("r", tenants, p))
            f = session_fraction(p, n, m)
            assert f <= MAX_CANARY_SHARE or m == n, (n, p, m, f)


def test_participating_tenants_only_grow_with_the_stage_and_differ_per_rollout() -> None:
    tenants = [f"tenant-{i}" for i in range(40)]
    previous: set[str] = set()
    for p in STAGES:
        now = set(participating_tenants("r1", tenants, p))
        assert previous <= now
        previous = now
    firsts = {participating_tenants(f"r{i}", tenants, 1)[0] for i in range(20)}
    assert len(firsts) > 5


def test_session_fraction_makes_overall_exposure_the_stage_percent() -> None:
    for n in (3, 5, 10, 37, 200):
        tenants = [f"t{i}" for i in range(n)]
        for p in STAGES:
            m = len(participating_tenants("r", tenants, p))
            f = session_fraction(p, n, m)
            assert 0.0 < f <= 1.0
            if f < 1.0:
                assert m * f / n == pytest.approx(p / 100)
    assert session_fraction(100, 5, 5) == 1.0


def test_session_assignment_is_sticky_and_monotone_in_the_fraction() -> None:
    sessions = [f"s{i}" for i in range(2000)]
    small = {s for s in sessions if session_in_canary("r", s, 0.05)}
    large = {s for s in sessions if session_in_canary("r", s, 0.5)}
    assert small <= large
    assert 40 < len(small) < 160
    assert not any(session_in_canary("r", s, 0.0) for s in sessions)
    assert all(session_in_canary("r", s, 1.0) for s in sessions)


# -- reviewer overrides have a floor: at least as strict as the shipped plan of the risk class --


def _shipped_doc(risk_class: str) -> dict:  # type: ignore[type-arg]
    return shipped_plans().for_risk_class(risk_class).to_dict()


def test_a_one_stage_safety_only_override_is_refused_for_a_critical_candidate() -> None:
    loose = {"stages": [{"percent": 100, "min_windows": 0}],
             "gates": [{"measure": "safety_incident", "direction": "rise", "margin": 0}], "alpha": 0.49}
    with pytest.raises(RolloutPlanError, match="cannot be removed"):
        plan_for_candidate("critical", json.dumps(loose))


@pytest.mark.parametrize(
    "risk_class, mutate, message",
    [
        ("critical", lambda d: d["gates"].pop(0), "task_success cannot be removed"),
        ("high", lambda d: d["gates"][1].update(margin=0.05), "escalated cannot be loosened"),
        ("high", lambda d: d["gates"][0].update(direction="rise"), "task_success cannot be loosened"),
        ("low", lambda d: d.update(alpha=0.2), "alpha 0.2 is above"),
        ("low", lambda d: d.update(stages=d["stages"][-1:]), "at least two stages"),
        ("low", lambda d: d.update(stages=[dict(d["stages"][0], percent=25), *d["stages"][4:]]), "at most 10 %"),
        ("critical", lambda d: d["stages"][0].update(percent=5) or d["stages"].pop(1), "at most 1 %"),
        ("critical", lambda d: d["stages"][2].update(min_windows=1), "needs at least 3 window"),
        ("high", lambda d: d["stages"][3].update(min_canary_turns=10), "50 canary"),
        ("low", lambda d: d["stages"][1].update(min_control_turns=10), "100 control"),
    ],
)
def test_an_override_looser_than_the_shipped_plan_is_refused(risk_class, mutate, message) -> None:  # type: ignore[no-untyped-def]
    doc = _shipped_doc(risk_class)
    mutate(doc)
    with pytest.raises(RolloutPlanError, match=message):
        plan_for_candidate(risk_class, json.dumps(doc))


def test_tighter_overrides_and_the_demo_plan_shape_are_accepted() -> None:
    doc = _shipped_doc("critical")
    doc["alpha"] = 0.01
    doc["gates"][0]["margin"] = 0.001
    doc["stages"] = [dict(doc["stages"][0], min_windows=5), *doc["stages"][2:]]
    plan = plan_for_candidate("critical", json.dumps(doc))
    assert plan.alpha == 0.01 and [s.percent for s in plan.stages] == [1.0, 10.0, 25.0, 50.0, 100.0]
    # fedsignal demo: the default low plan with stages 10 % -> 50 % -> 100 % (a reviewer may start LOW at 10 %).
    demo = _shipped_doc("low")
    demo["stages"] = [
        {"percent": 10, "min_windows": 1, "min_canary_turns": 100, "min_control_turns": 100},
        {"percent": 50, "min_windows": 1, "min_canary_turns": 300, "min_control_turns": 100},
        {"percent": 100, "min_windows": 0, "min_canary_turns": 0, "min_control_turns": 0},
    ]
    assert [s.percent for s in plan_for_candidate("low", json.dumps(demo)).stages] == [10.0, 50.0, 100.0]
    # The same shape is refused for a high-risk candidate: it must start at 1 %.
    with pytest.raises(RolloutPlanError, match="at most 1 %"):
        plan_for_candidate("high", json.dumps({**_shipped_doc("high"), "stages": demo["stages"]}))


def test_assess_on_a_plan_already_at_its_last_stage_does_not_crash() -> None:
    from aggregation.rollout_plan import RolloutPlan, Stage
    from aggregation.sequential import ArmCounts, WindowEvidence
    from server.rollout.evidence import StageEvidence, assess

    # Built directly (the override floor would refuse it): a one-stage plan stored by an older server.
    plan = RolloutPlan("low", (Stage(100.0, 0, 0.0, 0.0),), shipped_plans().for_risk_class("low").gates[-1:])
    w = WindowEvidence(ArmCounts(0, 16, 1000, 16), ArmCounts(0, 16, 1000, 16))
    ev = StageEvidence(per_measure={"safety_incident": [w]}, windows=[1], canary_turns=1000, control_turns=1000)
    assert assess(plan, 0, ev, 5).decision == "promote"
    assert assess(plan, 3, ev, 5).decision == "promote"  # a stage index past the end is clamped
