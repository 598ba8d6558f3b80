"""The resolve API in validation stages and per-intent rollouts (other intents always get stable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.bundle import VerifiedBundle
from aggregation.bundle_format import ApprovedSet, ArtifactEntry, SignedExposure, tenant_hash, wire_name
from aggregation.rollout_plan import control_label, session_in_canary, session_in_shadow
from tenant_agent.bundles.resolve import Resolver

RID = "ro-1"
NAME = "routing.refund"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _set(cid: str) -> ApprovedSet:
    return ApprovedSet(cid, cid, "retail", "low", "wrong_tool", {NAME: ArtifactEntry(NAME, "routing_rule", 1, "x")})


def bundle(phase: str, fraction: float, intents: frozenset[str] = frozenset(), tenant: str = "t1") -> VerifiedBundle:
    stable, cand = _set("stable-1"), _set("cand-1")
    exposure = SignedExposure(RID, 0, 10.0, fraction, frozenset({tenant_hash(RID, tenant)}), phase, intents)
    return VerifiedBundle("retail", 3, NOW + timedelta(days=1), (stable,), cand, exposure, b"",
                          {wire_name("stable-1", NAME): b"S", wire_name("cand-1", NAME): b"C"})


class FixedResolver(Resolver):
    def __init__(self, state_dir: Path, tenant: str, active: VerifiedBundle) -> None:
        super().__init__(state_dir, tenant, clock=lambda: NOW)
        self._active = active

    def active(self) -> VerifiedBundle | None:
        return self._active


SESSIONS = [f"sess-{i}" for i in range(400)]


def test_in_replay_nobody_is_served_the_candidate(tmp_path: Path) -> None:
    r = FixedResolver(tmp_path, "t1", bundle("replay", 0.0))
    got = [r.resolve(NAME, s, "refund") for s in SESSIONS]
    assert {(g.version, g.arm, g.content, g.shadow) for g in got} == {("stable-1", "stable", b"S", None)}


def test_in_shadow_a_sticky_share_serves_stable_and_shadows_the_candidate(tmp_path: Path) -> None:
    r = FixedResolver(tmp_path, "t1", bundle("shadow", 0.25))
    shadowed = 0
    for s in SESSIONS:
        got = r.resolve(NAME, s)
        # What is served: stable under its own label (arm "stable": not live-canary evidence).
        assert (got.version, got.content, got.arm) == ("stable-1", b"S", "stable")
        expected = session_in_shadow(RID, s, 0.25)
        assert (got.shadow is not None) == expected
        if got.shadow is not None:
            shadowed += 1
            assert (got.shadow.version, got.shadow.content) == ("cand-1", b"C")
            doc = got.to_json()
            assert doc["serve"] == "stable-1" and doc["shadow"]["version"] == "cand-1"  # type: ignore[index]
    assert 60 < shadowed < 140


def test_a_tenant_outside_the_rollout_never_shadows(tmp_path: Path) -> None:
    r = FixedResolver(tmp_path, "t2", bundle("shadow", 1.0, tenant="t1"))
    assert all(r.resolve(NAME, s).shadow is None for s in SESSIONS)


@pytest.mark.parametrize("intent", ["billing", None, "other"])
def test_a_per_intent_canary_gives_every_other_intent_stable(tmp_path: Path, intent: str | None) -> None:
    r = FixedResolver(tmp_path, "t1", bundle("live", 1.0, frozenset({"refund"})))
    assert {r.resolve(NAME, s, intent).version for s in SESSIONS} == {"stable-1"}


def test_a_per_intent_canary_exposes_its_intent_with_a_randomized_control(tmp_path: Path) -> None:
    r = FixedResolver(tmp_path, "t1", bundle("live", 0.5, frozenset({"refund"})))
    for s in SESSIONS:
        got = r.resolve(NAME, s, "refund")
        want = "cand-1" if session_in_canary(RID, s, 0.5) else control_label(RID)
        assert got.version == want
