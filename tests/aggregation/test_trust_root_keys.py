"""Key ids in a trust root are checked against the key material: one key under two ids must not count twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root

from aggregation.bundle_errors import MalformedMetadataError
from aggregation.trust_root import (
    RISK_CLASSES_FIELD,
    compute_keyid,
    load_trusted_root,
    to_json_bytes,
    verify_rotation,
)
from aggregation.trust_root_build import build_root, sign_metadata
from tests.bundle_factory import NOW

THRESHOLDS = {"low": 1, "high": 2, "critical": 3}


@pytest.fixture
def signers() -> tuple[CryptoSigner, CryptoSigner, CryptoSigner]:
    return CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()


def _alias(key: SSlibKey, keyid: str = "alias-of-alice") -> SSlibKey:
    return SSlibKey(keyid, key.keytype, key.scheme, dict(key.keyval))


def _upper(key: SSlibKey) -> SSlibKey:
    """The same Ed25519 key spelled in upper-case hex: a different (correctly computed) key id."""
    spelled = SSlibKey("tmp", key.keytype, key.scheme, {"public": key.keyval["public"].upper()})
    return SSlibKey(compute_keyid(spelled), key.keytype, key.scheme, {"public": key.keyval["public"].upper()})


def _root_with(extra: SSlibKey, signers: tuple[CryptoSigner, ...], *, version: int = 1) -> Metadata[Root]:
    """A root listing ``extra`` as a reviewer in every role, hand-built past build_root's checks."""
    alice, bob, server = signers
    md = build_root([alice.public_key, bob.public_key], server.public_key, now=NOW - timedelta(days=1),
                    version=version, thresholds={"low": 1, "high": 2, "critical": 2})
    root = md.signed
    root.keys[extra.keyid] = extra
    # Fresh lists: build_root shares one key id list between roles.
    root.roles["root"].keyids = [*root.roles["root"].keyids, extra.keyid]
    for spec in root.unrecognized_fields[RISK_CLASSES_FIELD].values():
        spec["keyids"] = [*spec["keyids"], extra.keyid]
    sign_metadata(md, alice)
    return md


def test_build_root_refuses_a_key_id_that_is_not_the_keys(signers: tuple[CryptoSigner, ...]) -> None:
    """The reviewer's demo: alice listed again as 'alias-of-alice' made her count twice for 'high'."""
    alice, bob, server = signers
    with pytest.raises(ValueError, match="does not match its key"):
        build_root([alice.public_key, bob.public_key, _alias(alice.public_key)], server.public_key, now=NOW,
                   thresholds=THRESHOLDS)


def test_build_root_refuses_one_key_in_two_spellings(signers: tuple[CryptoSigner, ...]) -> None:
    alice, bob, server = signers
    with pytest.raises(ValueError, match="same key"):
        build_root([alice.public_key, bob.public_key, _upper(alice.public_key)], server.public_key, now=NOW,
                   thresholds=THRESHOLDS)
    with pytest.raises(ValueError, match="server's online key"):
        build_root([alice.public_key, _upper(server.public_key)], server.public_key, now=NOW,
                   thresholds={"low": 1, "high": 1, "critical": 1})


@pytest.mark.parametrize("extra", [_alias, _upper], ids=["wrong_keyid", "same_key_other_spelling"])
def test_loading_a_root_with_one_key_listed_twice_is_refused(
    signers: tuple[CryptoSigner, ...], extra: Callable[[SSlibKey], SSlibKey]
) -> None:
    alice = signers[0]
    assert isinstance(alice.public_key, SSlibKey)
    md = _root_with(extra(alice.public_key), signers)
    with pytest.raises(MalformedMetadataError, match="does not match its key|same key"):
        load_trusted_root(to_json_bytes(md))


def test_rotation_to_a_root_listing_one_key_twice_is_refused(signers: tuple[CryptoSigner, ...]) -> None:
    alice, bob, server = signers
    v1 = build_root([alice.public_key, bob.public_key], server.public_key, now=NOW - timedelta(days=1),
                    thresholds={"low": 1, "high": 2, "critical": 2})
    sign_metadata(v1, alice)
    sign_metadata(v1, bob)
    trusted = load_trusted_root(to_json_bytes(v1))
    assert isinstance(alice.public_key, SSlibKey)
    for extra in (_alias(alice.public_key), _upper(alice.public_key)):
        v2 = _root_with(extra, signers, version=2)
        with pytest.raises(MalformedMetadataError):
            verify_rotation(trusted, to_json_bytes(v2))


def test_a_root_listing_the_server_key_as_a_root_key_by_another_id_is_refused(signers: tuple[CryptoSigner, ...]) -> None:
    server = signers[2]
    assert isinstance(server.public_key, SSlibKey)
    md = _root_with(_upper(server.public_key), signers)  # the server key, as a reviewer under another id
    with pytest.raises(MalformedMetadataError, match="same key|server"):
        load_trusted_root(to_json_bytes(md))
