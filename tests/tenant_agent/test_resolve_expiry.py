"""The resolver stops serving a rollout's candidate once the active bundle has expired.

If a rollback bundle cannot be delivered (server down, network cut), canary
sessions must not keep the candidate forever: past the cohort metadata's
expiry every session gets the stable content under the stable label.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aggregation.bundle import RolloutExposure
from aggregation.rollout_plan import control_label, session_in_canary
from tenant_agent.bundles import Resolver
from tests.bundle_factory import NOW, World
from tests.tenant_agent.test_bundle_client import ROUTE, _arts, _client, fake, world  # noqa: F401 - fixtures

__all__ = ["fake", "world"]


def test_expired_bundle_serves_no_candidate_and_no_control_label(world: World, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    service, channel = fake
    client = _client(world, channel, tmp_path)
    stable = world.approval("cand-a", artifacts=_arts("a"))
    cand = world.approval("cand-b", risk="high", artifacts=_arts("b"))
    service.serve(*world.bundle(1, [stable], cand, rollout=RolloutExposure("r1", "cand-b", 1, 5.0, 0.5, ["t1"]),
                                lifetime=timedelta(days=1)))
    assert client.pull().status == "installed"
    sessions = [f"s{i}" for i in range(100)]
    canary = [s for s in sessions if session_in_canary("r1", s, 0.5)]
    assert canary and len(canary) < len(sessions)

    now = [NOW]
    resolver = Resolver(tmp_path, "t1", clock=lambda: now[0])
    fresh = {s: resolver.resolve(ROUTE, s) for s in sessions}
    assert {fresh[s].version for s in canary} == {"cand-b"}
    assert {fresh[s].version for s in sessions if s not in canary} == {control_label("r1")}

    now[0] = NOW + timedelta(days=1, seconds=1)  # the rollback never arrived; the bundle expired
    for s in sessions:
        r = resolver.resolve(ROUTE, s)
        assert (r.version, r.content, r.arm) == ("cand-a", b'{"tool":"a"}', "stable"), s
        assert resolver.resolve_session(s).label == "cand-a"
    # The bundle is still the active one: only the arm changed.
    active = resolver.active()
    assert active is not None and active.candidate is not None
