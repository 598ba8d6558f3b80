"""Risk classes are tied to the artifacts: server-side derivation from the remediation map, and the kernel
refusing an approval that would override an artifact name approved at a more demanding risk class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregation.bundle import TrustedBundleState
from aggregation.bundle_errors import RiskClassDowngradeError
from aggregation.rollout_plan import plan_for_candidate
from server.audit import iter_audit
from server.db import transaction
from server.review.remediation import RemediationMap, UnknownArtifactKind
from server.review.workflow import create_candidate, edit_candidate, get_candidate, signed_by
from tests.bundle_factory import NOW, World
from tests.server.review.world import ServerWorld

GUARD = ("guardrail_template.safety", "guardrail_template", b'{"block": []}')
ROUTE = ("routing_rule.billing", "routing_rule", b'{"kind":"routing_rule"}')


# -- server -----------------------------------------------------------------------------------------
@pytest.fixture
def server(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


def _create(world: ServerWorld, artifacts: list[tuple[str, str, bytes]], risk: str = "low", key: str = "k") -> str:
    with transaction(world.ctx.sessions) as s:
        rec = create_candidate(s, cohort="c1", category="wrong_tool", kind=artifacts[0][1], risk_class=risk,
                               artifacts=artifacts, evidence={}, rollout_plan_json="", dedupe_key=key, now=world.clock())
        assert rec is not None
        return rec.id


def test_remediation_map_gives_each_kind_its_highest_class() -> None:
    m = RemediationMap.load()
    assert m.kind_risk_class("routing_rule") == "low"
    assert m.kind_risk_class("prompt_template") == "high"
    assert m.kind_risk_class("guardrail_template") == "critical"
    assert m.required_risk_class(["routing_rule", "escalation_policy"]) == "high"
    assert m.required_risk_class(["routing_rule"], at_least="critical") == "critical"
    with pytest.raises(UnknownArtifactKind, match="nope"):
        m.kind_risk_class("nope")


def test_low_candidate_edited_to_ship_a_guardrail_needs_the_critical_threshold(server: ServerWorld) -> None:
    """The reviewer's demo: a low candidate edited to a guardrail template was bundled with ONE signature."""
    cid = _create(server, [ROUTE])
    with transaction(server.ctx.sessions) as s:
        assert get_candidate(s, cid).risk_class == "low"
    with transaction(server.ctx.sessions) as s:
        rec = edit_candidate(s, cid, artifacts=[GUARD], rollout_plan_json=None, actor="admin:eve", now=server.clock())
        assert rec.risk_class == "critical" and signed_by(s, rec) == []
        assert json.loads(rec.signing_payload)["x-fedsignal-approval"]["risk_class"] == "critical"
        edits = [json.loads(e.payload_json) for e in iter_audit(s) if e.kind == "candidate.edited"]
        assert edits[-1]["risk_class"] == {"from": "low", "to": "critical"}
    for reviewer, state in ((0, "edited"), (1, "edited"), (2, "bundled")):
        assert server.sign(cid, reviewer).state == state


def test_edit_never_lowers_the_risk_class(server: ServerWorld) -> None:
    cid = _create(server, [GUARD])
    with transaction(server.ctx.sessions) as s:
        assert get_candidate(s, cid).risk_class == "critical"
        rec = edit_candidate(s, cid, artifacts=[ROUTE], rollout_plan_json=None, actor="admin:a", now=server.clock())
        assert rec.risk_class == "critical"


def test_create_raises_the_requested_class_to_what_the_kinds_need(server: ServerWorld) -> None:
    cid = _create(server, [ROUTE, ("prompt_template.billing", "prompt_template", b"{}")])
    with transaction(server.ctx.sessions) as s:
        assert get_candidate(s, cid).risk_class == "high"


def test_edit_replaces_the_shipped_plan_of_the_old_class(server: ServerWorld) -> None:
    with transaction(server.ctx.sessions) as s:
        rec = create_candidate(s, cohort="c1", category="wrong_tool", kind="routing_rule", risk_class="low",
                               artifacts=[ROUTE], evidence={}, dedupe_key="p", now=server.clock(),
                               rollout_plan_json=plan_for_candidate("low", None).to_json())
        assert rec is not None
        rec = edit_candidate(s, rec.id, artifacts=[GUARD], rollout_plan_json=None, actor="admin:a", now=server.clock())
        assert rec.rollout_plan_json == plan_for_candidate("critical", None).to_json()


def test_unknown_artifact_kinds_are_refused(server: ServerWorld) -> None:
    with pytest.raises(UnknownArtifactKind):
        _create(server, [("x.billing", "shell_script", b"rm -rf /")])
    cid = _create(server, [ROUTE])
    with transaction(server.ctx.sessions) as s, pytest.raises(UnknownArtifactKind):
        edit_candidate(s, cid, artifacts=[("x.billing", "shell_script", b"")], rollout_plan_json=None,
                       actor="admin:a", now=server.clock())


# -- kernel -----------------------------------------------------------------------------------------
NAME = "guardrail_template.safety"


@pytest.fixture
def kernel() -> World:
    return World()


def _arts(content: bytes) -> list[tuple[str, str, bytes]]:
    return [(NAME, "guardrail_template", content)]


def test_kernel_refuses_a_later_low_stable_set_overriding_a_critical_one(kernel: World) -> None:
    """The reviewer's demo: a 1-signature low approval won an artifact name approved at critical."""
    state = TrustedBundleState(kernel.make_root(), "c1")
    crit = kernel.approval("cand-crit", risk="critical", artifacts=_arts(b'{"block":["x","y"]}'))
    low = kernel.approval("cand-low", risk="low", artifacts=_arts(b'{"block":[]}'))
    data, arts = kernel.bundle(1, [crit, low])
    with pytest.raises(RiskClassDowngradeError, match="cand-low") as err:
        state.update_bundle(data, arts, NOW)
    assert err.value.code == "risk_class_downgrade" and state.bundle is None


def test_kernel_refuses_a_low_candidate_overriding_a_critical_stable_set(kernel: World) -> None:
    state = TrustedBundleState(kernel.make_root(), "c1")
    crit = kernel.approval("cand-crit", risk="critical", artifacts=_arts(b"a"))
    low = kernel.approval("cand-low", risk="low", artifacts=_arts(b"b"))
    data, arts = kernel.bundle(1, [crit], low)
    with pytest.raises(RiskClassDowngradeError):
        state.update_bundle(data, arts, NOW)


def test_kernel_accepts_equal_or_stricter_overrides(kernel: World) -> None:
    state = TrustedBundleState(kernel.make_root(), "c1")
    low = kernel.approval("cand-low", risk="low", artifacts=_arts(b"a"))
    high = kernel.approval("cand-high", risk="high", artifacts=_arts(b"b"))
    crit = kernel.approval("cand-crit", risk="critical", artifacts=_arts(b"c"))
    low2 = kernel.approval("cand-low2", risk="low", artifacts=[("routing.billing", "routing_rule", b"r")])
    # Newest stable is the strictest; the candidate is at least as strict as the stable sets; a low set
    # on another name is unaffected.
    data, arts = kernel.bundle(1, [low, high, low2], crit)
    bundle = state.update_bundle(data, arts, NOW)
    assert [s.candidate_id for s in bundle.stable] == ["cand-low", "cand-high", "cand-low2"]
    # A low stable set with a stricter candidate for the same name rolls out fine.
    data, arts = kernel.bundle(2, [low], high)
    assert state.update_bundle(data, arts, NOW).version == 2


def test_a_name_shipped_at_a_higher_class_raises_new_candidates_for_it(server: ServerWorld) -> None:
    """Tenants would refuse a bundle where a low approval overrides a critical one for the same name, so the
    server raises a new candidate for that name (create or edit) to the shipping candidate's class."""
    crit = server.approved(risk="critical", name="routing_rule.billing", key="crit")
    with transaction(server.ctx.sessions) as s:
        assert get_candidate(s, crit).state == "bundled"
    low = server.propose(risk="low", name="routing_rule.billing", key="low")
    other = server.propose(risk="low", name="routing_rule.refund", key="other")
    with transaction(server.ctx.sessions) as s:
        assert get_candidate(s, low).risk_class == "critical"
        assert get_candidate(s, other).risk_class == "low"
        rec = edit_candidate(s, other, artifacts=[("routing_rule.billing", "routing_rule", b"{}")],
                             rollout_plan_json=None, actor="admin:a", now=server.clock())
        assert rec.risk_class == "critical"
