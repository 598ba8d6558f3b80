"""Artifact wire names ``<candidate_id>/<name>`` cannot collide: '/' and empty parts are refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from aggregation.bundle import TrustedBundleState
from aggregation.bundle_errors import MalformedMetadataError
from aggregation.bundle_format import APPROVAL_FIELD, build_approval, sha256_hex, wire_name
from server.db import transaction
from server.review.workflow import InvalidArtifacts, create_candidate, edit_candidate
from tests.bundle_factory import NOW, World
from tests.server.review.world import ServerWorld


def _approval(world: World, candidate_id: str, name: str, content: bytes) -> Metadata[Targets]:
    """An approval whose candidate id / artifact name bypass build_approval's checks (as a forger's would)."""
    md = build_approval(cohort="c1", candidate_id="placeholder", risk_class="low", category="wrong_tool",
                        artifacts=[("placeholder", "routing_rule", content)], rollout_plan={},
                        created_at=NOW - timedelta(days=1))
    md.signed.unrecognized_fields[APPROVAL_FIELD]["candidate_id"] = candidate_id
    md.signed.unrecognized_fields[APPROVAL_FIELD]["label"] = candidate_id
    md.signed.targets = {name: TargetFile(len(content), {"sha256": sha256_hex(content)}, name,
                                          unrecognized_fields={"custom": {"kind": "routing_rule"}})}
    md.sign(world.reviewers[0], append=True)
    return md


def test_kernel_refuses_ids_and_names_whose_wire_names_could_collide() -> None:
    """Candidate "a" shipping "b/c" and candidate "a/b" shipping "c" would both be sent as "a/b/c"."""
    world = World()
    state = TrustedBundleState(world.make_root(), "c1")
    first, second = _approval(world, "a", "b/c", b"one"), _approval(world, "a/b", "c", b"two")
    data, _ = world.bundle(1, [(first, {}), (second, {})])
    with pytest.raises(MalformedMetadataError, match="'/'"):
        state.update_bundle(data, {"a/b/c": b"two"}, NOW)
    assert state.bundle is None


@pytest.mark.parametrize(("candidate_id", "name"), [("a/b", "c"), ("a", "b/c"), ("", "c"), ("a", "")])
def test_kernel_refuses_each_bad_part(candidate_id: str, name: str) -> None:
    world = World()
    state = TrustedBundleState(world.make_root(), "c1")
    data, _ = world.bundle(1, [(_approval(world, candidate_id, name, b"x"), {})])
    with pytest.raises(MalformedMetadataError):
        state.update_bundle(data, {f"{candidate_id}/{name}": b"x"}, NOW)


def test_builders_refuse_bad_parts() -> None:
    with pytest.raises(ValueError, match="candidate id"):
        build_approval(cohort="c1", candidate_id="a/b", risk_class="low", category="x",
                       artifacts=[("c", "routing_rule", b"")], rollout_plan={}, created_at=NOW)
    with pytest.raises(ValueError, match="twice"):
        build_approval(cohort="c1", candidate_id="a", risk_class="low", category="x",
                       artifacts=[("c", "routing_rule", b"1"), ("c", "routing_rule", b"2")], rollout_plan={},
                       created_at=NOW)
    with pytest.raises(ValueError):
        wire_name("a/b", "c")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


@pytest.mark.parametrize(
    "artifacts",
    [[("routing/billing", "routing_rule", b"{}")], [("", "routing_rule", b"{}")], [],
     [("r", "routing_rule", b"1"), ("r", "routing_rule", b"2")]],
    ids=["slash", "empty", "none", "duplicate"],
)
def test_server_refuses_bad_artifact_names_on_create_and_edit(
    server: ServerWorld, artifacts: list[tuple[str, str, bytes]]
) -> None:
    with transaction(server.ctx.sessions) as s, pytest.raises(InvalidArtifacts):
        create_candidate(s, cohort="c1", category="wrong_tool", kind="routing_rule", risk_class="low",
                         artifacts=artifacts, evidence={}, rollout_plan_json="", dedupe_key="bad", now=server.clock())
    cid = server.propose()
    if not artifacts:
        return  # an edit without artifacts keeps the current ones
    with transaction(server.ctx.sessions) as s, pytest.raises(InvalidArtifacts):
        edit_candidate(s, cid, artifacts=artifacts, rollout_plan_json=None, actor="admin:a", now=server.clock())
