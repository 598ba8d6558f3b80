"""Issuing cohort bundles on the server, verified by the tenant kernel: stages, promotion, rollback, rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from aggregation.bundle import RolloutExposure, TrustedBundleState
from aggregation.bundle_errors import RollbackError
from aggregation.trust_root import to_json_bytes
from aggregation.trust_root_build import build_root
from server.db import transaction
from server.review.bundles import (
    bundle_artifacts,
    current_bundle,
    issue_cohort_bundle,
    promote_candidate,
    roll_back_candidate,
)
from server.review.trust_root import (
    TrustRootRejected,
    current_root,
    current_root_bytes,
    install_root,
    root_chain,
    server_public_key,
)
from server.review.workflow import get_candidate
from tests.server.review.world import ServerWorld


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


def _fetch(world: ServerWorld, cohort: str = "c1") -> tuple[bytes, dict[str, bytes]]:
    with transaction(world.ctx.sessions) as s:
        rec = current_bundle(s, world.ctx, cohort)
        return rec.metadata_json.encode(), dict(bundle_artifacts(s, rec))


def _tenant(world: ServerWorld, cohort: str = "c1") -> TrustedBundleState:
    with transaction(world.ctx.sessions) as s:
        return TrustedBundleState(current_root_bytes(s), cohort)


def test_stage_moves_promotion_and_rollback_verify_on_the_tenant(world: ServerWorld) -> None:
    tenant = _tenant(world)
    stable = world.approved(content=b'{"kind":"routing_rule","tool":"v1"}')
    with transaction(world.ctx.sessions) as s:
        # A stable set needs its own (completed) rollout; shortcut through the lifecycle.
        issue_cohort_bundle(s, world.ctx, "c1", RolloutExposure("r0", stable, 0, 100.0, 1.0, ["t1"]))
        promote_candidate(s, world.ctx, stable, actor="system:rollout")
    v = tenant.update_bundle(*_fetch(world), world.clock())
    assert [a.candidate_id for a in v.stable] == [stable] and v.candidate is None

    cand = world.approved(risk="high", content=b'{"kind":"routing_rule","tool":"v2"}')
    for stage, (pct, frac) in enumerate([(1.0, 0.1), (10.0, 0.5)]):
        with transaction(world.ctx.sessions) as s:
            issued = issue_cohort_bundle(s, world.ctx, "c1", RolloutExposure("r1", cand, stage, pct, frac, ["t1", "t2"]))
            assert get_candidate(s, cand).state == "rolling_out"
        v = tenant.update_bundle(*_fetch(world), world.clock())
        assert v.version == issued.version and v.candidate is not None and v.candidate.candidate_id == cand
        assert v.exposure is not None and v.exposure.stage_index == stage and v.exposure.session_fraction == frac
        assert v.exposure.participates("t2") and not v.exposure.participates("t3")

    with transaction(world.ctx.sessions) as s:
        back = roll_back_candidate(s, world.ctx, cand, actor="system:rollout", detail={"gate": "safety_incident"})
        assert get_candidate(s, cand).state == "rolled_back"
    v = tenant.update_bundle(*_fetch(world), world.clock())
    assert v.version == back.version and v.candidate is None and [a.candidate_id for a in v.stable] == [stable]


def test_versions_are_monotonic_per_cohort_and_old_ones_are_refused(world: ServerWorld) -> None:
    tenant = _tenant(world)
    with transaction(world.ctx.sessions) as s:
        first = issue_cohort_bundle(s, world.ctx, "c1", None)
        issue_cohort_bundle(s, world.ctx, "c2", None)
        second = issue_cohort_bundle(s, world.ctx, "c1", None)
    assert (first.version, second.version) == (1, 2)
    tenant.update_bundle(second.metadata, {}, world.clock())
    with pytest.raises(RollbackError):
        tenant.update_bundle(first.metadata, {}, world.clock())


def test_candidate_of_another_cohort_or_unapproved_cannot_be_exposed(world: ServerWorld) -> None:
    other = world.approved(cohort="c2")
    unapproved = world.propose()
    with transaction(world.ctx.sessions) as s, pytest.raises(Exception, match="cohort c2"):
        issue_cohort_bundle(s, world.ctx, "c1", RolloutExposure("r", other, 0, 1.0, 1.0, []))
    with transaction(world.ctx.sessions) as s, pytest.raises(Exception, match="proposed"):
        issue_cohort_bundle(s, world.ctx, "c1", RolloutExposure("r", unapproved, 0, 1.0, 1.0, []))


def test_stale_bundle_is_reissued_before_it_expires(world: ServerWorld) -> None:
    with transaction(world.ctx.sessions) as s:
        v1 = current_bundle(s, world.ctx, "c1").version
    world.clock.advance(days=world.ctx.settings.bundle_expiry_days * 0.6)
    with transaction(world.ctx.sessions) as s:
        rec = current_bundle(s, world.ctx, "c1")
    assert rec.version == v1 + 1
    tenant = _tenant(world)
    assert tenant.update_bundle(rec.metadata_json.encode(), {}, world.clock()).version == v1 + 1


def test_root_rotation_on_the_server_needs_old_threshold_and_its_own(world: ServerWorld) -> None:
    state_dir = world.ctx.settings.state_dir
    newcomer = CryptoSigner.generate_ed25519()
    keys = [r.public_key for r in world.reviewers[:2]] + [newcomer.public_key]
    md = build_root(keys, server_public_key(state_dir), now=world.clock(), version=2)
    md.sign(world.reviewers[0], append=True)
    md.sign(newcomer, append=True)  # only one of v1's three required root keys
    with transaction(world.ctx.sessions) as s, pytest.raises(TrustRootRejected, match="keys of v1"):
        install_root(s, to_json_bytes(md), actor="admin:a", now=world.clock(), state_dir=state_dir)
    md.sign(world.reviewers[1], append=True)
    with transaction(world.ctx.sessions) as s, pytest.raises(TrustRootRejected, match="keys of v1"):
        install_root(s, to_json_bytes(md), actor="admin:a", now=world.clock(), state_dir=state_dir)
    md.sign(world.reviewers[2], append=True)
    with transaction(world.ctx.sessions) as s:
        assert install_root(s, to_json_bytes(md), actor="admin:a", now=world.clock(), state_dir=state_dir).version == 2
    with transaction(world.ctx.sessions) as s:
        chain = root_chain(s, 1)
        assert [json.loads(c)["signed"]["version"] for c in chain] == [2]
        assert current_root(s).version == 2
    tenant_root_v1 = TrustedBundleState(_v1(world), "c1")
    assert tenant_root_v1.update_root(chain[0]).version == 2


def _v1(world: ServerWorld) -> bytes:
    from server.review.trust_root import root_bytes

    with transaction(world.ctx.sessions) as s:
        data = root_bytes(s, 1)
        assert data is not None
        return data


def test_root_without_this_servers_key_is_refused(world: ServerWorld) -> None:
    md = build_root([r.public_key for r in world.reviewers], CryptoSigner.generate_ed25519().public_key,
                    now=world.clock(), version=2)
    for r in world.reviewers:
        md.sign(r, append=True)
    with transaction(world.ctx.sessions) as s, pytest.raises(TrustRootRejected, match="online key"):
        install_root(s, to_json_bytes(md), actor="admin:a", now=world.clock(), state_dir=world.ctx.settings.state_dir)


def test_concurrent_issuing_on_two_replicas_gives_distinct_consecutive_versions(world: ServerWorld) -> None:
    from server.context import ServerContext

    versions: list[int] = []

    def issue_three(ctx: ServerContext) -> None:
        for _ in range(3):
            with transaction(ctx.sessions) as s:
                versions.append(issue_cohort_bundle(s, ctx, "c1", None).version)

    world.on_replicas(issue_three)
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
