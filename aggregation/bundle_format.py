"""The bundle metadata format (TUF metadata via ``tuf.api.metadata``).

Two kinds of signed metadata travel to a tenant:

* **Approval** (TUF ``targets``, one per candidate artifact set), signed
  offline by reviewers with the threshold of its risk class. ``targets``
  lists each artifact with length and SHA-256 (and ``custom.kind``);
  custom field ``x-fedsignal-approval`` carries cohort, candidate id,
  version label, risk class, failure category and rollout plan. It never
  changes once approved, so its signatures stay valid forever (expiry is
  long: freshness comes from the cohort metadata).
* **Cohort metadata** (TUF ``snapshot``), signed by the server's online key
  (the root's snapshot role), short-lived and with a per-cohort monotonic
  version. ``meta`` pins each approval it uses by name
  (``<candidate_id>.json``), version, length and SHA-256 of the approval's
  canonical signed bytes; custom field ``x-fedsignal-cohort`` names the
  cohort, which approvals are stable, which is the candidate, and the
  rollout exposure (rollout id, stage index/percent, session fraction,
  participating tenants as salted hashes).

On the wire the bundle is one JSON document
``{"format": "fedsignal-bundle/1", "cohort_metadata": {...}, "approvals": [{...}, ...]}``
and artifacts are sent as ``<candidate_id>/<artifact name>`` -> bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets

from aggregation.trust_root import canonical_signed_bytes, expiry

BUNDLE_FORMAT = "fedsignal-bundle/1"
APPROVAL_FIELD = "x-fedsignal-approval"
COHORT_FIELD = "x-fedsignal-cohort"
BASELINE = "baseline"
#: Hard cap per artifact, whatever the metadata says (endless-data defence).
MAX_ARTIFACT_BYTES = 1024 * 1024
#: Hard cap on all artifacts of one bundle together.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
APPROVAL_LIFETIME = timedelta(days=3650)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tenant_hash(rollout_id: str, tenant_id: str) -> str:
    """How a participating tenant is named in cohort metadata (salted by rollout, not reversible by listing)."""
    return hashlib.sha256(f"fedsignal-tenant-v1\0{rollout_id}\0{tenant_id}".encode()).hexdigest()


def valid_part(value: object) -> bool:
    """A candidate id or artifact name usable in ``<candidate_id>/<artifact name>``: non-empty, no '/'."""
    return isinstance(value, str) and bool(value) and "/" not in value


def wire_name(candidate_id: str, artifact_name: str) -> str:
    """``<candidate_id>/<artifact name>``; unambiguous because neither part may be empty or contain '/'."""
    if not valid_part(candidate_id) or not valid_part(artifact_name):
        raise ValueError(f"candidate id {candidate_id!r} and artifact name {artifact_name!r} must be non-empty "
                         "and contain no '/'")
    return f"{candidate_id}/{artifact_name}"


@dataclass(frozen=True)
class ArtifactEntry:
    name: str
    kind: str
    length: int
    sha256: str


@dataclass(frozen=True)
class ApprovedSet:
    """A verified, reviewer-approved artifact set (one candidate)."""

    candidate_id: str
    label: str
    cohort: str
    risk_class: str
    category: str
    artifacts: Mapping[str, ArtifactEntry]
    rollout_plan: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutExposure:
    """What ROLLOUT hands to ``issue_cohort_bundle``: the candidate and who sees it."""

    rollout_id: str
    candidate_id: str
    stage_index: int
    stage_percent: float
    session_fraction: float
    participating_tenants: Sequence[str]
    #: "replay", "shadow" or "live" (the stage kind: no user gets the candidate before "live").
    phase: str = "live"
    #: Intents the rollout is scoped to (empty: every intent).
    intents: Sequence[str] = ()


@dataclass(frozen=True)
class SignedExposure:
    """Rollout exposure as carried in (verified) cohort metadata; tenants only as hashes."""

    rollout_id: str
    stage_index: int
    stage_percent: float
    session_fraction: float
    tenant_hashes: frozenset[str]
    phase: str = "live"
    intents: frozenset[str] = frozenset()

    def participates(self, tenant_id: str) -> bool:
        return tenant_hash(self.rollout_id, tenant_id) in self.tenant_hashes


def build_approval(
    *,
    cohort: str,
    candidate_id: str,
    risk_class: str,
    category: str,
    artifacts: Sequence[tuple[str, str, bytes]],
    rollout_plan: Mapping[str, Any],
    created_at: datetime,
    revision: int = 1,
    label: str | None = None,
) -> Metadata[Targets]:
    """Unsigned approval metadata; ``artifacts`` are ``(name, kind, content)``."""
    if not valid_part(candidate_id):
        raise ValueError(f"candidate id {candidate_id!r} must be non-empty and contain no '/'")
    targets: dict[str, TargetFile] = {}
    for name, kind, content in artifacts:
        if not valid_part(name):
            raise ValueError(f"artifact name {name!r} must be non-empty and contain no '/'")
        if name in targets:
            raise ValueError(f"artifact name {name!r} is listed twice")
        targets[name] = TargetFile(
            len(content), {"sha256": sha256_hex(content)}, name, unrecognized_fields={"custom": {"kind": kind}}
        )
    signed = Targets(
        version=revision,
        expires=expiry(created_at, APPROVAL_LIFETIME),
        targets=targets,
        unrecognized_fields={
            APPROVAL_FIELD: {
                "cohort": cohort,
                "candidate_id": candidate_id,
                "label": label or candidate_id,
                "risk_class": risk_class,
                "category": category,
                # A JSON string: canonical JSON cannot carry the plan's floats.
                "rollout_plan_json": json.dumps(dict(rollout_plan), sort_keys=True, separators=(",", ":")),
            }
        },
    )
    return Metadata(signed)


def approval_info(md: Metadata[Targets]) -> dict[str, Any]:
    info = md.signed.unrecognized_fields.get(APPROVAL_FIELD)
    if not isinstance(info, dict):
        raise ValueError(f"approval metadata has no {APPROVAL_FIELD}")
    return info


def build_cohort_metadata(
    *,
    cohort: str,
    version: int,
    now: datetime,
    lifetime: timedelta,
    root_version: int,
    stable: Sequence[Metadata[Targets]],
    candidate: Metadata[Targets] | None,
    rollout: RolloutExposure | None,
) -> Metadata[Snapshot]:
    """Unsigned cohort metadata pinning ``stable`` and ``candidate`` approvals."""
    meta: dict[str, MetaFile] = {}
    for md in [*stable, *([candidate] if candidate is not None else [])]:
        payload = canonical_signed_bytes(md)
        meta[f"{approval_info(md)['candidate_id']}.json"] = MetaFile(
            version=md.signed.version, length=len(payload), hashes={"sha256": sha256_hex(payload)}
        )
    exposure: dict[str, Any] | None = None
    if rollout is not None and candidate is not None:
        exposure = {
            "rollout_id": rollout.rollout_id,
            "stage_index": rollout.stage_index,
            # OLPC canonical JSON (what TUF signs) has no floats: decimal strings, exact round trip.
            "stage_percent": repr(float(rollout.stage_percent)),
            "session_fraction": repr(float(rollout.session_fraction)),
            "participating_tenants": sorted(tenant_hash(rollout.rollout_id, t) for t in rollout.participating_tenants),
        }
        if rollout.phase != "live" or rollout.intents:
            exposure["phase"] = rollout.phase
            exposure["intents"] = sorted(rollout.intents)
    signed = Snapshot(
        version=version,
        expires=expiry(now, lifetime),
        meta=meta,
        unrecognized_fields={
            COHORT_FIELD: {
                "cohort": cohort,
                "root_version": root_version,
                "stable": [approval_info(md)["candidate_id"] for md in stable],
                "candidate": approval_info(candidate)["candidate_id"] if candidate is not None else None,
                "rollout": exposure,
            }
        },
    )
    return Metadata(signed)


def bundle_document(cohort_md: Metadata[Snapshot], approvals: Sequence[Metadata[Targets]]) -> bytes:
    """The wire form of a bundle (``GetBundleResponse.bundle_metadata``)."""
    doc = {
        "format": BUNDLE_FORMAT,
        "cohort_metadata": cohort_md.to_dict(),
        "approvals": [md.to_dict() for md in approvals],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
