"""The trust root: reviewer keys, risk-class thresholds, the server's freshness key.

The root is TUF ``root`` metadata (``tuf.api.metadata.Root``):

* role ``root``: reviewer keys and the threshold that must sign the next root version;
* role ``targets``: reviewer keys (threshold = the lowest risk-class threshold);
* roles ``snapshot`` and ``timestamp``: the server's online key, threshold 1.
  It signs the short-lived per-cohort metadata and nothing else;
* custom field ``x-fedsignal-risk-classes``: per risk class the reviewer keys
  and the threshold an approval of that class needs. TUF's ``Root`` accepts
  only the four top-level roles, so the per-class roles live here and are
  verified as TUF ``DelegatedRole`` s over the root's own keys.

The root threshold is at least every risk class's threshold: otherwise fewer
reviewers than a critical approval needs could rotate the root to one that
drops the others and lowers the critical threshold. Verification refuses such
a root (pinned or rotated to), on the server and on every tenant.

This module only verifies: bytes in, typed objects out, no I/O, the clock
passed in. Building and signing roots live in :mod:`aggregation.trust_root_build`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key, Signature
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root, Targets
from tuf.api.serialization.json import CanonicalJSONSerializer

from aggregation.bundle_errors import MalformedMetadataError, OversizedArtifactError, RootRotationError
from aggregation.risk import RISK_ORDER, RiskClass, UnknownRiskClass

RISK_CLASSES_FIELD = "x-fedsignal-risk-classes"
#: Largest metadata document the kernel parses (endless-data defence for metadata).
MAX_METADATA_BYTES = 2 * 1024 * 1024


class WeakRootThresholdError(MalformedMetadataError):
    """A root whose own threshold is below a risk class threshold (fewer reviewers could rotate it away)."""

    code = "weak_root_threshold"


def risk_role(risk_class: str) -> str:
    return f"risk-{RiskClass.parse(risk_class).value}"


def check_root_threshold(root_threshold: int, thresholds: Mapping[str, int], what: str) -> None:
    """Refuse a root threshold below the highest risk-class threshold.

    A rotation needs only the root threshold; if that were lower than, say, the critical
    threshold, that many reviewers could rotate to a root without the others and with
    critical = 1, then approve critical content alone.
    """
    if not thresholds:
        return
    cls, highest = max(thresholds.items(), key=lambda item: item[1])
    if root_threshold < highest:
        raise WeakRootThresholdError(
            f"{what}: root threshold {root_threshold} is below the {cls} threshold {highest}; "
            f"the root threshold must be at least the highest risk-class threshold ({highest})"
        )


def canonical_signed_bytes(md: Metadata[Any]) -> bytes:
    """The bytes a signature covers: canonical JSON of the ``signed`` part."""
    return CanonicalJSONSerializer().serialize(md.signed)


def to_json_bytes(md: Metadata[Any]) -> bytes:
    """Serialized metadata (signed part + signatures), deterministic."""
    return json.dumps(md.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")


def expiry(now: datetime, lifetime: timedelta) -> datetime:
    """TUF expiry (whole seconds, UTC)."""
    return (now.astimezone(UTC) + lifetime).replace(microsecond=0)


def parse_metadata(doc: Any, expected_type: str) -> tuple[Metadata[Any], dict[str, Signature], int]:
    """Parse one metadata document; duplicate signatures by one key are kept once.

    Returns the metadata, its signatures by key id, and how many duplicates were dropped.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("signatures"), list):
        raise MalformedMetadataError(f"{expected_type} metadata: expected an object with 'signed' and 'signatures'")
    unique: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for raw in doc["signatures"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("keyid"), str):
            raise MalformedMetadataError(f"{expected_type} metadata: malformed signature entry")
        if raw["keyid"] in unique:
            duplicates += 1
            continue
        unique[raw["keyid"]] = dict(raw)
    try:
        md = Metadata.from_dict(copy.deepcopy({"signed": doc.get("signed"), "signatures": list(unique.values())}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedMetadataError(f"{expected_type} metadata does not parse: {exc}") from exc
    if md.signed.type != expected_type:
        raise MalformedMetadataError(f"expected {expected_type} metadata, got {md.signed.type}")
    return md, dict(md.signatures), duplicates


def load_json(data: bytes, what: str) -> Any:
    if len(data) > MAX_METADATA_BYTES:
        raise OversizedArtifactError(f"{what} is {len(data)} bytes, over the {MAX_METADATA_BYTES}-byte cap")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMetadataError(f"{what} is not JSON: {exc}") from exc


def compute_keyid(key: Key) -> str:
    """The TUF/securesystemslib key id: SHA-256 of the canonical JSON of keytype, scheme and keyval."""
    data = encode_canonical({"keytype": key.keytype, "scheme": key.scheme, "keyval": key.keyval})
    if not isinstance(data, str):
        raise MalformedMetadataError(f"key {key.keyid}: canonical encoding failed")
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def key_material(key: Key) -> bytes:
    """The public key's value, normalized (so one key in two spellings or schemes compares equal)."""
    public = key.keyval.get("public") if isinstance(key.keyval, Mapping) else None
    if isinstance(public, str):
        if key.keytype == "ed25519":
            try:
                return b"ed25519:" + bytes.fromhex(public)
            except ValueError:
                pass
        if public.lstrip().startswith("-----BEGIN"):
            try:
                loaded = serialization.load_pem_public_key(public.encode("utf-8"))
                return b"spki:" + loaded.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            except (ValueError, TypeError):
                pass
    return b"raw:" + str(encode_canonical(dict(key.keyval))).encode("utf-8")


def check_keys(keys: Mapping[str, Key], what: str) -> None:
    """Every key id is the one computed from its key, and no key value is listed twice.

    Without this, one reviewer's key listed under two key ids would count twice toward a threshold.
    """
    seen: dict[bytes, str] = {}
    for keyid, key in keys.items():
        computed = compute_keyid(key)
        if keyid != computed or key.keyid != computed:
            raise MalformedMetadataError(f"{what}: key id {keyid} does not match its key (computed {computed})")
        value = key_material(key)
        if value in seen:
            raise MalformedMetadataError(f"{what}: key ids {seen[value]} and {keyid} list the same key")
        seen[value] = keyid


@dataclass(frozen=True)
class TrustRoot:
    """A verified root: its metadata and the per-risk-class roles."""

    metadata: Metadata[Root]
    risk_roles: Delegations

    @property
    def root(self) -> Root:
        return self.metadata.signed

    @property
    def version(self) -> int:
        return self.root.version

    @property
    def server_keyids(self) -> frozenset[str]:
        return frozenset(self.root.roles["snapshot"].keyids)

    @property
    def root_threshold(self) -> int:
        return self.root.roles["root"].threshold

    def thresholds(self) -> dict[RiskClass, int]:
        """Signatures each risk class needs, in :data:`~aggregation.risk.RISK_ORDER`."""
        return {c: self.threshold(c) for c in RISK_ORDER}

    def threshold(self, risk_class: str) -> int:
        return self.role(risk_class).threshold

    def role(self, risk_class: str) -> DelegatedRole:
        roles = self.risk_roles.roles or {}
        try:
            name = risk_role(risk_class)
        except UnknownRiskClass as exc:
            raise MalformedMetadataError(str(exc)) from None
        if name not in roles:
            raise MalformedMetadataError(f"risk class {risk_class!r} is not defined by trust root v{self.version}")
        return roles[name]

    def reviewer_keys(self, risk_class: str) -> dict[str, Key]:
        return {k: self.risk_roles.keys[k] for k in self.role(risk_class).keyids}

    def verifier(self) -> Targets:
        """A TUF delegator whose roles are the risk classes (for ``get_verification_result``)."""
        return Targets(version=1, delegations=self.risk_roles)

    def to_bytes(self) -> bytes:
        return to_json_bytes(self.metadata)


def _risk_roles(root: Root) -> Delegations:
    raw = root.unrecognized_fields.get(RISK_CLASSES_FIELD)
    if not isinstance(raw, Mapping) or not raw:
        raise MalformedMetadataError(f"trust root v{root.version} has no {RISK_CLASSES_FIELD}")
    roles: dict[str, DelegatedRole] = {}
    server = set(root.roles["snapshot"].keyids) | set(root.roles["timestamp"].keyids)
    for cls, spec in raw.items():
        try:
            keyids = list(spec["keyids"])
            role = DelegatedRole(risk_role(cls), keyids, int(spec["threshold"]), True, paths=["*"])
        except UnknownRiskClass as exc:
            raise MalformedMetadataError(f"trust root v{root.version}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMetadataError(f"trust root risk class {cls!r} is malformed: {exc}") from exc
        if missing := [k for k in keyids if k not in root.keys]:
            raise MalformedMetadataError(f"risk class {cls!r} names keys the root does not list: {missing}")
        if server & set(keyids):
            # The guarantee "a server key alone cannot approve content" depends on this.
            raise MalformedMetadataError(f"risk class {cls!r} lists the server's online key as a reviewer")
        roles[role.name] = role
    if missing_classes := [c.value for c in RISK_ORDER if risk_role(c) not in roles]:
        raise MalformedMetadataError(f"trust root v{root.version} defines no threshold for risk class(es) {missing_classes}")
    keys = {k: root.keys[k] for r in roles.values() for k in r.keyids}
    return Delegations(keys=keys, roles=roles)


def _check_shape(root: Root) -> Delegations:
    check_keys(root.keys, f"trust root v{root.version}")
    server = set(root.roles["snapshot"].keyids) | set(root.roles["timestamp"].keyids)
    # By value, not by id (ids are checked above, but the guarantee must not rest on ids alone).
    server_values = {key_material(root.keys[k]) for k in server if k in root.keys}
    root_values = {key_material(root.keys[k]) for k in root.roles["root"].keyids if k in root.keys}
    if server & set(root.roles["root"].keyids) or server_values & root_values:
        raise MalformedMetadataError("the server's online key may not be a root key")
    delegations = _risk_roles(root)
    check_root_threshold(
        root.roles["root"].threshold,
        {name.removeprefix("risk-"): r.threshold for name, r in (delegations.roles or {}).items()},
        f"trust root v{root.version}",
    )
    reviewer_values = {key_material(k) for k in delegations.keys.values()}
    if server_values & reviewer_values:
        raise MalformedMetadataError("a risk class lists the server's online key as a reviewer")
    return delegations


def load_trusted_root(data: bytes) -> TrustRoot:
    """Trust-on-first-use load of a pinned root: must be signed by its own threshold."""
    md, sigs, _dups = parse_metadata(load_json(data, "trust root"), Root.type)
    delegations = _check_shape(md.signed)
    result = md.signed.get_root_verification_result(None, canonical_signed_bytes(md), sigs)
    if not result.verified:
        raise RootRotationError(
            f"trust root v{md.signed.version} is signed by {len(result.first.signed)} of the "
            f"{result.first.threshold} root keys it requires"
        )
    return TrustRoot(md, delegations)


def verify_rotation(current: TrustRoot, data: bytes) -> TrustRoot:
    """Verify root version N+1 against version N (``current``) and against itself."""
    md, sigs, _dups = parse_metadata(load_json(data, "trust root"), Root.type)
    new = md.signed
    if new.version != current.version + 1:
        raise RootRotationError(f"trust root rotation must go from v{current.version} to v{current.version + 1}, got v{new.version}")
    delegations = _check_shape(new)
    payload = canonical_signed_bytes(md)
    old_result = current.root.get_verification_result(Root.type, payload, sigs)
    if not old_result.verified:
        raise RootRotationError(
            f"trust root v{new.version} is signed by {len(old_result.signed)} of the {old_result.threshold} "
            f"keys of v{current.version} it needs; collect the old reviewers' signatures"
        )
    new_result = new.get_verification_result(Root.type, payload, sigs)
    if not new_result.verified:
        raise RootRotationError(
            f"trust root v{new.version} is signed by {len(new_result.signed)} of its own {new_result.threshold} root keys"
        )
    return TrustRoot(md, delegations)
