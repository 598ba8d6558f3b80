"""The root threshold is at least the highest risk-class threshold, at build and at verification.

The attack (issue 13.2): with a root threshold below the critical threshold, one reviewer rotated the
root to one listing only themselves with critical = 1, then approved a critical guardrail alone.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from aggregation.bundle import TrustedBundleState
from aggregation.bundle_errors import RootRotationError
from aggregation.risk import RiskClass
from aggregation.trust_root import (
    RISK_CLASSES_FIELD,
    WeakRootThresholdError,
    load_trusted_root,
    to_json_bytes,
    verify_rotation,
)
from aggregation.trust_root_build import RootBuildError, build_root, default_root_threshold
from tests.bundle_factory import NOW, World


def _weakened(md: Metadata[Root], root_threshold: int) -> Metadata[Root]:
    """``md`` with its root threshold lowered by hand (past build_root's check), unsigned."""
    md.signed.roles["root"].threshold = root_threshold
    md.signatures.clear()
    return md


def test_build_refuses_a_root_threshold_below_the_critical_threshold() -> None:
    reviewers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    server = CryptoSigner.generate_ed25519()
    with pytest.raises(RootBuildError, match="root threshold 1 is below the critical threshold 3"):
        build_root([r.public_key for r in reviewers], server.public_key, now=NOW, root_threshold=1)


def test_the_default_root_threshold_follows_from_the_class_thresholds() -> None:
    reviewers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    server = CryptoSigner.generate_ed25519()
    md = build_root([r.public_key for r in reviewers], server.public_key, now=NOW,
                    thresholds={"low": 1, "high": 2, "critical": 2})
    assert md.signed.roles["root"].threshold == 2
    assert default_root_threshold(None) == 3
    assert default_root_threshold({"critical": 1, "high": 1}) == 1


def test_build_names_an_unknown_risk_class() -> None:
    reviewers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    with pytest.raises(RootBuildError, match="unknown risk class 'critcal'"):
        build_root([r.public_key for r in reviewers], CryptoSigner.generate_ed25519().public_key, now=NOW,
                   thresholds={"critcal": 3})


def test_a_pinned_root_with_a_weak_root_threshold_is_refused_by_tenants() -> None:
    world = World()
    md = _weakened(Metadata.from_bytes(world.make_root()), 1)
    md.sign(world.reviewers[0], append=True)
    with pytest.raises(WeakRootThresholdError, match="root threshold 1 is below the critical threshold 3"):
        load_trusted_root(to_json_bytes(md))
    with pytest.raises(WeakRootThresholdError):
        TrustedBundleState(to_json_bytes(md), "c1")


def test_one_reviewer_cannot_rotate_the_root_to_drop_the_others_and_lower_critical() -> None:
    world = World()
    alice = world.reviewers[0]
    state = TrustedBundleState(world.make_root(), "c1")
    assert state.root.root_threshold == 3
    # Alice alone, critical = 1: a well-formed root, but v1's threshold (3) did not sign it.
    v2 = build_root([alice.public_key], world.server.public_key, now=NOW - timedelta(days=1), version=2,
                    thresholds={"low": 1, "high": 1, "critical": 1})
    v2.sign(alice, append=True)
    with pytest.raises(RootRotationError, match="signed by 1 of the 3 keys of v1"):
        state.update_root(to_json_bytes(v2))
    assert state.root.version == 1 and state.root.threshold(RiskClass.CRITICAL) == 3


def test_a_rotation_to_a_weak_root_is_refused_even_with_every_signature() -> None:
    """All reviewers sign v2, but v2 lets one of them rotate again alone: refused at verification."""
    world = World()
    v1 = load_trusted_root(world.make_root())
    v2 = Metadata.from_bytes(world.make_root(version=2))
    _weakened(v2, 1)
    for r in world.reviewers:
        v2.sign(r, append=True)
    with pytest.raises(WeakRootThresholdError, match="trust root v2"):
        verify_rotation(v1, to_json_bytes(v2))


def test_a_root_missing_a_risk_class_is_refused() -> None:
    world = World()
    md = Metadata.from_bytes(world.make_root())
    del md.signed.unrecognized_fields[RISK_CLASSES_FIELD]["critical"]
    md.signatures.clear()
    for r in world.reviewers[:3]:
        md.sign(r, append=True)
    with pytest.raises(Exception, match="no threshold for risk class"):
        load_trusted_root(to_json_bytes(md))
