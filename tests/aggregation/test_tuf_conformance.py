"""Cross-check with python-tuf's own client kernel (``TrustedMetadataSet``).

python-tuf's repository-simulator attack tests drive ``tuf.ngclient.Updater``
over the TUF repository layout (timestamp -> snapshot -> targets files over
HTTP); our client receives one bundle document over gRPC and adds risk-class
thresholds, so those tests cannot be pointed at it. What both share is the
root: every root our tooling writes must be accepted or refused by python-tuf
exactly as by our kernel.
"""

from __future__ import annotations

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from aggregation.bundle import TrustedBundleState
from aggregation.bundle_errors import RootRotationError
from tests.bundle_factory import World


def _cases(world: World) -> dict[str, tuple[bytes, bool]]:
    newcomers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    return {
        "valid": (world.make_root(version=2, reviewers=newcomers,
                                  sign_with=[*world.reviewers[:3], *newcomers[:3]]), True),
        "missing_old_threshold": (world.make_root(version=2, reviewers=newcomers,
                                                  sign_with=[*world.reviewers[:2], *newcomers[:3]]), False),
        "missing_own_threshold": (world.make_root(version=2, reviewers=newcomers,
                                                  sign_with=[*world.reviewers[:3], *newcomers[:2]]), False),
        "skips_a_version": (world.make_root(version=3), False),
        "replays_version_1": (world.make_root(version=1), False),
    }


@pytest.mark.parametrize("case", ["valid", "missing_old_threshold", "missing_own_threshold", "skips_a_version",
                                  "replays_version_1"])
def test_root_rotation_verdicts_match_python_tuf(case: str) -> None:
    world = World()
    v1 = world.make_root()
    data, accepted = _cases(world)[case]
    ours = TrustedBundleState(v1, "c1")
    theirs = TrustedMetadataSet(v1, EnvelopeType.METADATA)
    if accepted:
        assert ours.update_root(data).version == theirs.update_root(data).version == 2
    else:
        with pytest.raises(RootRotationError):
            ours.update_root(data)
        with pytest.raises((tuf_exceptions.UnsignedMetadataError, tuf_exceptions.BadVersionNumberError)):
            theirs.update_root(data)


def test_our_root_is_plain_tuf_root_metadata() -> None:
    md = Metadata.from_bytes(World().make_root())
    assert md.signed.type == "root" and set(md.signed.roles) == {"root", "targets", "snapshot", "timestamp"}
    assert "x-fedsignal-risk-classes" in md.signed.unrecognized_fields
