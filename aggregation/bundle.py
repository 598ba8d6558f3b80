"""The tenant's trusted bundle kernel: holds only verified state.

Modelled on python-tuf's ``TrustedMetadataSet``: every ``update_*`` takes
unverified bytes, verifies signatures, type, version, cohort and expiry,
and only then replaces its state; anything else raises a specific
:class:`~aggregation.bundle_errors.BundleRefused` and leaves the state as it
was. No network, no disk; the clock is passed in.

Verification of a bundle, in order: size cap; cohort metadata signed by the
root's freshness (server) key; cohort; version newer than the installed one
(rollback); not expired (freeze); the approvals present are exactly the ones
the cohort metadata pins by version and hash (mix-and-match); each approval
names the same cohort and carries the threshold of distinct reviewer
signatures its risk class needs (the server key never counts); each artifact
no longer than signed and the hard cap (endless data), then its SHA-256.
Per artifact name, the approval that wins it (the newest stable set shipping
it, and the candidate for its arm) needs a risk class threshold at least as
high as every approval it overrides (no downgrade by a cheaper approval).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securesystemslib.signer import Signature
from tuf.api.metadata import Metadata, Snapshot, Targets

from aggregation.bundle_errors import (
    BundleRefused,
    DuplicateSignaturesError,
    ExpiredMetadataError,
    InsufficientSignaturesError,
    MalformedMetadataError,
    MixAndMatchError,
    OversizedArtifactError,
    RiskClassDowngradeError,
    RollbackError,
    ServerKeyOnlyError,
    TamperedArtifactError,
    UnknownSignerError,
    UntrustedCohortMetadataError,
    WrongCohortError,
)
from aggregation.bundle_format import (
    APPROVAL_FIELD,
    BASELINE,
    BUNDLE_FORMAT,
    COHORT_FIELD,
    MAX_ARTIFACT_BYTES,
    MAX_BUNDLE_BYTES,
    ApprovedSet,
    ArtifactEntry,
    RolloutExposure,
    SignedExposure,
    build_approval,
    build_cohort_metadata,
    bundle_document,
    sha256_hex,
    tenant_hash,
    valid_part,
    wire_name,
)
from aggregation.trust_root import (
    TrustRoot,
    canonical_signed_bytes,
    load_json,
    load_trusted_root,
    parse_metadata,
    verify_rotation,
)

__all__ = [
    "BASELINE",
    "ApprovedSet",
    "ArtifactEntry",
    "BundleRefused",
    "RolloutExposure",
    "SignedExposure",
    "TrustedBundleState",
    "VerifiedBundle",
    "build_approval",
    "build_cohort_metadata",
    "bundle_document",
    "tenant_hash",
    "verify_installed",
    "wire_name",
]


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check (or, from ``verify_installed``, one read back and re-hashed)."""

    cohort: str
    version: int
    expires: datetime
    stable: tuple[ApprovedSet, ...]
    candidate: ApprovedSet | None
    exposure: SignedExposure | None
    metadata: bytes
    artifacts: Mapping[str, bytes]  # wire name -> content

    def content(self, approved: ApprovedSet, name: str) -> bytes:
        return self.artifacts[wire_name(approved.candidate_id, name)]


def _approved_set(md: Metadata[Targets]) -> ApprovedSet:
    info = md.signed.unrecognized_fields.get(APPROVAL_FIELD)
    if not isinstance(info, dict):
        raise MalformedMetadataError(f"approval metadata lacks {APPROVAL_FIELD}")
    try:
        entries = {
            name: ArtifactEntry(name, str((t.custom or {}).get("kind", "")), t.length, t.hashes["sha256"])
            for name, t in md.signed.targets.items()
        }
        approved = ApprovedSet(
            candidate_id=str(info["candidate_id"]),
            label=str(info["label"]),
            cohort=str(info["cohort"]),
            risk_class=str(info["risk_class"]),
            category=str(info.get("category", "")),
            artifacts=entries,
            rollout_plan=json.loads(str(info.get("rollout_plan_json") or "{}")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedMetadataError(f"approval metadata lacks {APPROVAL_FIELD} fields: {exc}") from exc
    # Artifacts travel as "<candidate_id>/<name>": a '/' (or an empty part) could make two collide.
    if not valid_part(info["candidate_id"]):
        raise MalformedMetadataError(f"approval candidate id {info['candidate_id']!r} is empty or contains '/'")
    if bad := sorted(n for n in approved.artifacts if not valid_part(n)):
        raise MalformedMetadataError(f"approval {approved.candidate_id} names artifacts empty or with '/': {bad}")
    return approved


def _cohort_info(md: Metadata[Snapshot]) -> dict[str, Any]:
    info = md.signed.unrecognized_fields.get(COHORT_FIELD)
    if not isinstance(info, dict) or not isinstance(info.get("cohort"), str) or not isinstance(info.get("stable"), list):
        raise MalformedMetadataError(f"cohort metadata lacks {COHORT_FIELD}")
    return info


def _exposure(info: Mapping[str, Any]) -> SignedExposure | None:
    raw = info.get("rollout")
    if raw is None:
        return None
    try:
        return SignedExposure(
            rollout_id=str(raw["rollout_id"]),
            stage_index=int(raw["stage_index"]),
            stage_percent=float(raw["stage_percent"]),
            session_fraction=float(raw["session_fraction"]),
            tenant_hashes=frozenset(str(h) for h in raw["participating_tenants"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMetadataError(f"cohort metadata rollout exposure is malformed: {exc}") from exc


def _split(data: bytes) -> tuple[Any, list[Any]]:
    doc = load_json(data, "bundle metadata")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise MalformedMetadataError(f"bundle metadata is not {BUNDLE_FORMAT}")
    approvals = doc.get("approvals")
    if not isinstance(approvals, list):
        raise MalformedMetadataError("bundle metadata has no approvals list")
    return doc.get("cohort_metadata"), approvals


def _check_pinned(snap: Snapshot, md: Metadata[Targets], approved: ApprovedSet, payload: bytes,
                  found: Mapping[str, ApprovedSet]) -> None:
    """The approval is one the cohort metadata pins, by revision and hash, and not seen twice."""
    meta = dict(snap.meta).get(f"{approved.candidate_id}.json")
    if meta is None or approved.candidate_id in found:
        raise MixAndMatchError(f"approval {approved.candidate_id} is not pinned by cohort metadata v{snap.version}")
    if meta.version != md.signed.version or (meta.hashes or {}).get("sha256") != sha256_hex(payload):
        raise MixAndMatchError(
            f"approval {approved.candidate_id} (revision {md.signed.version}) is not the one cohort "
            f"metadata v{snap.version} pins: parts of different versions"
        )


def _named(info: Mapping[str, Any]) -> list[str]:
    return [*info["stable"], *([info["candidate"]] if info.get("candidate") else [])]


def verify_installed(data: bytes, artifacts: Mapping[str, bytes]) -> VerifiedBundle:
    """Read back an installed bundle, re-checking every byte against the metadata verified before install.

    Signatures, version and expiry were checked by :meth:`TrustedBundleState.update_bundle` before the
    bundle was written; on load each approval is re-hashed against the cohort metadata's pins and each
    artifact against its approval's signed length and SHA-256. A byte changed on disk raises
    :class:`~aggregation.bundle_errors.TamperedArtifactError` (or ``MixAndMatchError`` /
    ``MalformedMetadataError``): the changed content is never returned.
    """
    raw_cohort, raw_approvals = _split(data)
    cohort_md, _, _ = parse_metadata(raw_cohort, Snapshot.type)
    info = _cohort_info(cohort_md)
    sets: dict[str, ApprovedSet] = {}
    for doc in raw_approvals:
        md, _, _ = parse_metadata(doc, Targets.type)
        approved = _approved_set(md)
        _check_pinned(cohort_md.signed, md, approved, canonical_signed_bytes(md), sets)
        sets[approved.candidate_id] = approved
    if sorted(_named(info)) != sorted(sets):
        raise MixAndMatchError(f"installed bundle v{cohort_md.signed.version}: approvals do not match its pins")
    return VerifiedBundle(
        cohort=info["cohort"],
        version=cohort_md.signed.version,
        expires=cohort_md.signed.expires,
        stable=tuple(sets[c] for c in info["stable"]),
        candidate=sets[info["candidate"]] if info.get("candidate") else None,
        exposure=_exposure(info),
        metadata=data,
        artifacts=_verify_artifacts(sets.values(), artifacts),
    )


class TrustedBundleState:
    """Verified trust root and bundle of one tenant; changes only through ``update_*``.

    ``floor_version`` is the version of the bundle already installed on disk
    (rollback reference after a restart).
    """

    def __init__(self, root: bytes, cohort: str, *, floor_version: int = 0) -> None:
        self._root = load_trusted_root(root)
        self._cohort = cohort
        self._floor = floor_version
        self._bundle: VerifiedBundle | None = None

    @property
    def root(self) -> TrustRoot:
        return self._root

    @property
    def bundle(self) -> VerifiedBundle | None:
        return self._bundle

    @property
    def version(self) -> int:
        return self._bundle.version if self._bundle else self._floor

    def update_root(self, data: bytes) -> TrustRoot:
        """Follow one root rotation (version N -> N+1).

        When the rotation replaces the server's (freshness) key, the version floor is reset, as
        python-tuf drops its trusted timestamp/snapshot: a compromised old key may have signed a
        fast-forwarded version, and metadata signed by the old key no longer verifies anyway.
        """
        rotated = verify_rotation(self._root, data)
        if rotated.server_keyids != self._root.server_keyids:
            self._floor = 0
            self._bundle = None
        self._root = rotated
        return self._root

    def update_bundle(self, data: bytes, artifacts: Mapping[str, bytes], now: datetime) -> VerifiedBundle:
        """Verify a bundle and its artifacts; on success it becomes the trusted bundle."""
        if self._root.root.is_expired(now):
            raise ExpiredMetadataError(
                f"trust root v{self._root.version} expired at {self._root.root.expires.isoformat()}; "
                "reviewers must rotate the root"
            )
        raw_cohort, raw_approvals = _split(data)
        cohort_md, cohort_sigs, _ = parse_metadata(raw_cohort, Snapshot.type)
        snap = cohort_md.signed
        result = self._root.root.get_verification_result(Snapshot.type, canonical_signed_bytes(cohort_md), cohort_sigs)
        if not result.verified:
            raise UntrustedCohortMetadataError(
                f"cohort metadata v{snap.version} is not signed by the server key trust root v{self._root.version} lists"
            )
        info = _cohort_info(cohort_md)
        if info["cohort"] != self._cohort:
            raise WrongCohortError(f"bundle is for cohort {info['cohort']!r}, this tenant is in {self._cohort!r}")
        if snap.version < self.version:
            raise RollbackError(f"bundle v{snap.version} is older than the installed v{self.version}")
        if snap.version == self.version:
            if self._bundle is not None and self._bundle.metadata == data:
                return self._bundle
            raise RollbackError(f"bundle v{snap.version} differs from the installed bundle of the same version")
        if snap.is_expired(now):
            raise ExpiredMetadataError(f"bundle v{snap.version} expired at {snap.expires.isoformat()} (freeze)")
        approvals = self._verify_approvals(snap, info, raw_approvals, now)
        # Later stable approvals override earlier ones for the same artifact name (promotion order).
        stable = tuple(approvals[c] for c in info["stable"])
        candidate_id = info.get("candidate")
        self._check_overrides(stable, approvals[candidate_id] if candidate_id else None)
        verified_artifacts = _verify_artifacts(approvals.values(), artifacts)
        bundle = VerifiedBundle(
            cohort=info["cohort"],
            version=snap.version,
            expires=snap.expires,
            stable=stable,
            candidate=approvals[candidate_id] if candidate_id else None,
            exposure=_exposure(info),
            metadata=data,
            artifacts=verified_artifacts,
        )
        self._bundle = bundle
        return bundle

    def _verify_approvals(
        self, snap: Snapshot, info: Mapping[str, Any], raw: list[Any], now: datetime
    ) -> dict[str, ApprovedSet]:
        pinned = dict(snap.meta)
        named = _named(info)
        if sorted(f"{c}.json" for c in named) != sorted(pinned):
            raise MixAndMatchError("cohort metadata's stable/candidate do not match the approvals it pins")
        found: dict[str, ApprovedSet] = {}
        for doc in raw:
            md, sigs, duplicates = parse_metadata(doc, Targets.type)
            approved = _approved_set(md)
            payload = canonical_signed_bytes(md)
            _check_pinned(snap, md, approved, payload, found)
            if approved.cohort != self._cohort:
                raise WrongCohortError(f"approval {approved.candidate_id} is for cohort {approved.cohort!r}")
            if md.signed.is_expired(now):
                raise ExpiredMetadataError(f"approval {approved.candidate_id} expired at {md.signed.expires.isoformat()}")
            self._check_threshold(approved, payload, sigs, duplicates)
            found[approved.candidate_id] = approved
        if missing := [c for c in named if c not in found]:
            raise MixAndMatchError(f"approvals pinned by cohort metadata v{snap.version} are missing: {missing}")
        return found

    def _check_overrides(self, stable: Sequence[ApprovedSet], candidate: ApprovedSet | None) -> None:
        """Per artifact name, the approval that wins it must need at least the signatures of all it overrides.

        Stable sets: the newest one shipping a name wins it (for every session) and must be at least as
        demanding as every older stable set shipping that name. The candidate wins its names for canary
        sessions and must be at least as demanding as every stable set shipping them. (A stable set may
        be *less* demanding than the candidate: the candidate is not trusted for control sessions yet.)
        """

        def need(approved: ApprovedSet) -> int:
            return self._root.threshold(approved.risk_class)

        shippers: dict[str, list[ApprovedSet]] = defaultdict(list)
        for approved in stable:
            for name in approved.artifacts:
                shippers[name].append(approved)
        contests = [(sets[-1], name, sets[:-1]) for name, sets in shippers.items()]
        if candidate is not None:
            contests += [(candidate, name, shippers.get(name, [])) for name in candidate.artifacts]
        for winner, name, others in contests:
            for other in others:
                if need(winner) < need(other):
                    raise RiskClassDowngradeError(
                        f"approval {winner.candidate_id} ({winner.risk_class} risk, {need(winner)} signature(s)) "
                        f"would override artifact {name!r} approved by {other.candidate_id} ({other.risk_class} "
                        f"risk, {need(other)} signature(s)); a cheaper approval cannot replace it"
                    )

    def _check_threshold(
        self, approved: ApprovedSet, payload: bytes, sigs: dict[str, Signature], duplicates: int
    ) -> None:
        role = self._root.role(approved.risk_class)
        result = self._root.verifier().get_verification_result(role.name, payload, sigs)
        if result.verified:
            return
        have, need = len(result.signed), result.threshold
        what = f"approval {approved.candidate_id} ({approved.risk_class} risk) has {have} valid reviewer signature(s), needs {need}"
        strangers = [k for k in sigs if k not in role.keyids]
        if not result.signed and strangers and set(strangers) <= self._root.server_keyids:
            raise ServerKeyOnlyError(f"{what}: it is signed only by the server's online key, which cannot approve")
        if duplicates and have + duplicates >= need:
            raise DuplicateSignaturesError(f"{what}: duplicate signatures by one key count once")
        if strangers:
            raise UnknownSignerError(
                f"{what}: signature(s) by key(s) trust root v{self._root.version} does not list for this "
                f"risk class (removed or unknown): {sorted(strangers)}"
            )
        raise InsufficientSignaturesError(what)


def _verify_artifacts(approvals: Any, artifacts: Mapping[str, bytes]) -> dict[str, bytes]:
    expected: dict[str, ArtifactEntry] = {}
    for approved in approvals:
        for entry in approved.artifacts.values():
            expected[wire_name(approved.candidate_id, entry.name)] = entry
    if extra := sorted(set(artifacts) - set(expected)):
        raise TamperedArtifactError(f"artifacts not in the signed metadata: {extra}")
    # Lengths of everything first: an endless or padded artifact is refused before anything is hashed.
    total = 0
    for name, entry in expected.items():
        content = artifacts.get(name)
        if content is None:
            raise TamperedArtifactError(f"artifact {name} is missing from the bundle")
        if len(content) > entry.length or len(content) > MAX_ARTIFACT_BYTES:
            raise OversizedArtifactError(
                f"artifact {name} is {len(content)} bytes; signed length {entry.length}, cap {MAX_ARTIFACT_BYTES}"
            )
        total += len(content)
        if total > MAX_BUNDLE_BYTES:
            raise OversizedArtifactError(f"bundle artifacts exceed the {MAX_BUNDLE_BYTES}-byte cap")
    out: dict[str, bytes] = {}
    for name, entry in expected.items():
        content = artifacts[name]
        if len(content) != entry.length or sha256_hex(content) != entry.sha256:
            raise TamperedArtifactError(f"artifact {name} does not match its signed SHA-256")
        out[name] = content
    return out
