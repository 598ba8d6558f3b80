"""TUF attack catalogue against the tenant's bundle kernel.

Every attack is refused with its own error and the previously trusted
bundle stays the kernel's bundle.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner

from aggregation.bundle import RolloutExposure, TrustedBundleState
from aggregation.bundle_errors import (
    DuplicateSignaturesError,
    ExpiredMetadataError,
    InsufficientSignaturesError,
    MalformedMetadataError,
    MixAndMatchError,
    OversizedArtifactError,
    RollbackError,
    RootRotationError,
    ServerKeyOnlyError,
    TamperedArtifactError,
    UnknownSignerError,
    UntrustedCohortMetadataError,
    WrongCohortError,
)
from aggregation.bundle_format import MAX_ARTIFACT_BYTES
from tests.bundle_factory import NOW, World


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def installed(world: World) -> TrustedBundleState:
    """A kernel that trusts root v1 and has bundle v1 (one stable low-risk approval) installed."""
    state = TrustedBundleState(world.make_root(), "c1")
    data, arts = world.bundle(1, [world.approval("cand-a")])
    state.update_bundle(data, arts, NOW)
    return state


def _edit(data: bytes, fn) -> bytes:  # type: ignore[no-untyped-def]
    doc = json.loads(data)
    fn(doc)
    return json.dumps(doc).encode()


def assert_still_v1(state: TrustedBundleState) -> None:
    assert state.bundle is not None and state.bundle.version == 1
    assert [s.candidate_id for s in state.bundle.stable] == ["cand-a"]


def test_valid_bundle_with_candidate_and_exposure_is_trusted(world: World, installed: TrustedBundleState) -> None:
    cand = world.approval("cand-b", risk="high", artifacts=[("routing.billing", "routing_rule", b"{\"tool\":\"b\"}")])
    exposure = RolloutExposure("r1", "cand-b", 2, 10.0, 0.25, ["t1", "t2"])
    data, arts = world.bundle(2, [world.approval("cand-a")], cand, rollout=exposure)
    bundle = installed.update_bundle(data, arts, NOW)
    assert bundle.version == 2 and bundle.candidate is not None and bundle.candidate.label == "cand-b"
    assert bundle.exposure is not None and bundle.exposure.session_fraction == 0.25
    assert bundle.exposure.participates("t1") and not bundle.exposure.participates("t3")


def test_tampered_artifact_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-a"), world.approval("cand-b")])
    name = "cand-b/routing.billing"
    arts[name] = arts[name].replace(b"invoice", b"INVOICE")
    with pytest.raises(TamperedArtifactError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_extra_unsigned_artifact_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-a")])
    arts["cand-a/injected"] = b"{}"
    with pytest.raises(TamperedArtifactError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_artifact_longer_than_signed_length_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-b")])
    arts["cand-b/routing.billing"] += b" " * 10_000
    with pytest.raises(OversizedArtifactError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_artifact_over_hard_cap_is_refused_even_if_signed(world: World, installed: TrustedBundleState) -> None:
    huge = b"x" * (MAX_ARTIFACT_BYTES + 1)
    data, arts = world.bundle(2, [world.approval("cand-b", artifacts=[("big", "prompt_template", huge)])])
    with pytest.raises(OversizedArtifactError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_endless_metadata_is_refused(installed: TrustedBundleState) -> None:
    with pytest.raises(OversizedArtifactError):
        installed.update_bundle(b" " * (3 * 1024 * 1024), {}, NOW)
    assert_still_v1(installed)


def test_older_version_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(3, [world.approval("cand-a")])
    installed.update_bundle(data, arts, NOW)
    old, old_arts = world.bundle(2, [world.approval("cand-a")])
    with pytest.raises(RollbackError):
        installed.update_bundle(old, old_arts, NOW)
    assert installed.bundle is not None and installed.bundle.version == 3


def test_same_version_with_other_content_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(1, [world.approval("cand-b")])
    with pytest.raises(RollbackError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_floor_version_after_restart_refuses_older(world: World) -> None:
    state = TrustedBundleState(world.make_root(), "c1", floor_version=5)
    data, arts = world.bundle(4, [world.approval("cand-a")])
    with pytest.raises(RollbackError):
        state.update_bundle(data, arts, NOW)
    assert state.bundle is None and state.version == 5


def test_signed_rollback_to_older_content_with_newer_version_is_accepted(world: World, installed: TrustedBundleState) -> None:
    a = world.approval("cand-a")
    cand = world.approval("cand-b", risk="high")
    data, arts = world.bundle(2, [a], cand, rollout=RolloutExposure("r1", "cand-b", 0, 1.0, 1.0, ["t1"]))
    installed.update_bundle(data, arts, NOW)
    back, back_arts = world.bundle(3, [a])  # the last promoted set, newer version
    bundle = installed.update_bundle(back, back_arts, NOW)
    assert bundle.version == 3 and bundle.candidate is None and bundle.exposure is None


def test_expired_metadata_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-a")], now=NOW - timedelta(days=3), lifetime=timedelta(days=1))
    with pytest.raises(ExpiredMetadataError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_metadata_for_another_cohort_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-x", cohort="c2")], cohort="c2")
    with pytest.raises(WrongCohortError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_approval_for_another_cohort_inside_our_metadata_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-x", cohort="c2")], cohort="c1")
    with pytest.raises(WrongCohortError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_approval_from_another_version_is_refused(world: World, installed: TrustedBundleState) -> None:
    """Cohort metadata v2 pins cand-b's revision; the approval of a different revision is swapped in."""
    pinned = world.approval("cand-b", artifacts=[("r", "routing_rule", b"new")])
    other = world.approval("cand-b", artifacts=[("r", "routing_rule", b"old")])
    data, arts = world.bundle(2, [pinned], approvals_override=[other[0]])
    with pytest.raises(MixAndMatchError):
        installed.update_bundle(data, other[1], NOW)
    assert_still_v1(installed)


def test_unpinned_or_missing_approvals_are_refused(world: World, installed: TrustedBundleState) -> None:
    a, b = world.approval("cand-a"), world.approval("cand-b")
    data, arts = world.bundle(2, [a], approvals_override=[a[0], b[0]])
    with pytest.raises(MixAndMatchError):
        installed.update_bundle(data, {**arts, **b[1]}, NOW)
    data, arts = world.bundle(2, [a, b], approvals_override=[a[0]])
    with pytest.raises(MixAndMatchError):
        installed.update_bundle(data, a[1], NOW)
    assert_still_v1(installed)


@pytest.mark.parametrize(("risk", "needed"), [("low", 1), ("high", 2), ("critical", 3)])
def test_threshold_per_risk_class(world: World, installed: TrustedBundleState, risk: str, needed: int) -> None:
    short = world.approval("cand-b", risk=risk, signers=world.reviewers[: needed - 1])
    data, arts = world.bundle(2, [short])
    with pytest.raises(InsufficientSignaturesError) as info:
        installed.update_bundle(data, arts, NOW)
    assert type(info.value) is InsufficientSignaturesError
    assert_still_v1(installed)
    enough = world.approval("cand-b", risk=risk, signers=world.reviewers[:needed])
    data, arts = world.bundle(2, [enough])
    assert installed.update_bundle(data, arts, NOW).version == 2


def test_duplicate_signatures_by_one_key_count_once(world: World, installed: TrustedBundleState) -> None:
    one = world.approval("cand-b", risk="high", signers=world.reviewers[:1])
    data, arts = world.bundle(2, [one])

    def dup(doc):  # type: ignore[no-untyped-def]
        sigs = doc["approvals"][0]["signatures"]
        sigs.append(dict(sigs[0]))

    with pytest.raises(DuplicateSignaturesError):
        installed.update_bundle(_edit(data, dup), arts, NOW)
    assert_still_v1(installed)


def test_signature_by_unknown_key_does_not_count(world: World, installed: TrustedBundleState) -> None:
    stranger = CryptoSigner.generate_ed25519()
    app = world.approval("cand-b", risk="high", signers=[world.reviewers[0], stranger])
    data, arts = world.bundle(2, [app])
    with pytest.raises(UnknownSignerError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_signature_by_removed_key_stops_counting_after_rotation(world: World) -> None:
    state = TrustedBundleState(world.make_root(), "c1")
    removed = world.reviewers[3]
    # Root v2 drops reviewer 3; signed by v1's threshold (reviewers 0-2), who are also v2's root keys.
    v2 = world.make_root(version=2, reviewers=world.reviewers[:3], sign_with=world.reviewers[:3])
    state.update_root(v2)
    app = world.approval("cand-b", risk="high", signers=[world.reviewers[0], removed])
    data, arts = world.bundle(1, [app])
    with pytest.raises(UnknownSignerError):
        state.update_bundle(data, arts, NOW)
    assert state.bundle is None


def test_approval_signed_only_by_server_key_is_refused(world: World, installed: TrustedBundleState) -> None:
    app = world.approval("cand-b", signers=[world.server])
    data, arts = world.bundle(2, [app])
    with pytest.raises(ServerKeyOnlyError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_cohort_metadata_not_signed_by_server_key_is_refused(world: World, installed: TrustedBundleState) -> None:
    data, arts = world.bundle(2, [world.approval("cand-a")], signer=world.reviewers[0])
    with pytest.raises(UntrustedCohortMetadataError):
        installed.update_bundle(data, arts, NOW)
    assert_still_v1(installed)


def test_root_rotation_without_old_threshold_is_refused(world: World, installed: TrustedBundleState) -> None:
    newcomers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    v2 = world.make_root(version=2, reviewers=newcomers, sign_with=[*newcomers[:2], world.reviewers[0]])
    with pytest.raises(RootRotationError, match="keys of v1"):
        installed.update_root(v2)
    assert installed.root.version == 1
    assert_still_v1(installed)


def test_root_rotation_without_its_own_threshold_is_refused(world: World, installed: TrustedBundleState) -> None:
    newcomers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    v2 = world.make_root(version=2, reviewers=newcomers, sign_with=world.reviewers[:3])
    with pytest.raises(RootRotationError, match="its own"):
        installed.update_root(v2)
    assert installed.root.version == 1


def test_root_rotation_must_be_the_next_version(world: World, installed: TrustedBundleState) -> None:
    with pytest.raises(RootRotationError):
        installed.update_root(world.make_root(version=3))
    with pytest.raises(RootRotationError):
        installed.update_root(world.make_root(version=1))
    assert installed.root.version == 1


def test_root_rotation_to_new_keys_signed_by_both(world: World, installed: TrustedBundleState) -> None:
    newcomers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    v2 = world.make_root(version=2, reviewers=newcomers, sign_with=[*world.reviewers[:3], *newcomers[:3]])
    assert installed.update_root(v2).version == 2
    # Old reviewers' approvals no longer count; new reviewers' do.
    data, arts = world.bundle(2, [world.approval("cand-b", signers=world.reviewers[:1])])
    with pytest.raises(UnknownSignerError):
        installed.update_bundle(data, arts, NOW)
    data, arts = world.bundle(2, [world.approval("cand-b", signers=newcomers[:1])])
    assert installed.update_bundle(data, arts, NOW).version == 2


def test_garbage_is_malformed(installed: TrustedBundleState) -> None:
    with pytest.raises(MalformedMetadataError):
        installed.update_bundle(b"{not json", {}, NOW)
    with pytest.raises(MalformedMetadataError):
        installed.update_bundle(b'{"format": "fedsignal-bundle/1", "cohort_metadata": {}, "approvals": []}', {}, NOW)
    assert_still_v1(installed)


def test_pinned_root_must_be_self_signed_by_threshold(world: World) -> None:
    with pytest.raises(RootRotationError):
        TrustedBundleState(world.make_root(sign_with=world.reviewers[:1]), "c1")


def test_fast_forward_recovery_when_the_server_key_is_rotated(world: World) -> None:
    """A stolen server key signed version 10**9; reviewers rotate the server key and tenants recover."""
    state = TrustedBundleState(world.make_root(), "c1")
    data, arts = world.bundle(10**9, [world.approval("cand-a")])
    state.update_bundle(data, arts, NOW)
    old_server = world.server
    world.server = CryptoSigner.generate_ed25519()
    state.update_root(world.make_root(version=2))
    data, arts = world.bundle(7, [world.approval("cand-a")])
    assert state.update_bundle(data, arts, NOW).version == 7
    # Metadata still signed by the retired key is refused.
    forged, arts = world.bundle(10**9 + 1, [world.approval("cand-a")], signer=old_server)
    with pytest.raises(UntrustedCohortMetadataError):
        state.update_bundle(forged, arts, NOW)


def test_root_rotation_keeping_the_server_key_keeps_the_version_floor(world: World, installed: TrustedBundleState) -> None:
    installed.update_root(world.make_root(version=2))
    data, arts = world.bundle(1, [world.approval("cand-b")])
    with pytest.raises(RollbackError):
        installed.update_bundle(data, arts, NOW)


def test_oversized_artifact_is_refused_before_any_artifact_is_hashed(
    world: World, installed: TrustedBundleState, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregation.bundle as kernel

    arts = [("a_small", "routing_rule", b"{}"), ("z_padded", "routing_rule", b'{"x":1}')]
    data, contents = world.bundle(2, [world.approval("cand-b", artifacts=arts)])
    contents["cand-b/z_padded"] += b" " * 50_000
    hashed: list[int] = []
    real = kernel.sha256_hex

    def spy(b: bytes) -> str:
        hashed.append(len(b))
        return real(b)

    monkeypatch.setattr(kernel, "sha256_hex", spy)
    with pytest.raises(OversizedArtifactError):
        installed.update_bundle(data, contents, NOW)
    assert 2 not in hashed and all(n < 1000 for n in hashed)  # metadata payloads only, no artifact
    assert_still_v1(installed)
