"""Builders for trust roots and bundles signed by throwaway keys (tests and bench only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets

from aggregation.bundle import (
    RolloutExposure,
    build_approval,
    build_cohort_metadata,
    bundle_document,
    wire_name,
)
from aggregation.trust_root import to_json_bytes
from aggregation.trust_root_build import build_root

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class World:
    """Reviewers, the server key and the current root of one test world."""

    reviewers: list[CryptoSigner] = field(default_factory=lambda: [CryptoSigner.generate_ed25519() for _ in range(4)])
    server: CryptoSigner = field(default_factory=CryptoSigner.generate_ed25519)
    root_md: Metadata[Root] | None = None

    def make_root(self, signers: Sequence[CryptoSigner] | None = None, *, version: int = 1,
                  reviewers: Sequence[CryptoSigner] | None = None, root_threshold: int = 3,
                  sign_with: Sequence[CryptoSigner] | None = None) -> bytes:
        keys = [s.public_key for s in (reviewers or self.reviewers)]
        md = build_root(keys, self.server.public_key, now=NOW - timedelta(days=1), version=version,
                        root_threshold=root_threshold)
        for s in (sign_with if sign_with is not None else (reviewers or self.reviewers)[:root_threshold]):
            md.sign(s, append=True)
        self.root_md = md
        return to_json_bytes(md)

    def approval(self, candidate_id: str, *, cohort: str = "c1", risk: str = "low",
                 artifacts: Sequence[tuple[str, str, bytes]] | None = None,
                 signers: Sequence[CryptoSigner] | None = None) -> tuple[Metadata[Targets], dict[str, bytes]]:
        arts = list(artifacts or [("routing.billing", "routing_rule", b'{"intent":"billing","tool":"invoice_lookup"}')])
        md = build_approval(cohort=cohort, candidate_id=candidate_id, risk_class=risk, category="wrong_tool",
                            artifacts=arts, rollout_plan={}, created_at=NOW - timedelta(days=1))
        needed = {"low": 1, "high": 2, "critical": 3}[risk]
        for s in (signers if signers is not None else self.reviewers[:needed]):
            md.sign(s, append=True)
        return md, {wire_name(candidate_id, n): c for n, _, c in arts}

    def bundle(self, version: int, stable: Sequence[tuple[Metadata[Targets], dict[str, bytes]]] = (),
               candidate: tuple[Metadata[Targets], dict[str, bytes]] | None = None, *, cohort: str = "c1",
               rollout: RolloutExposure | None = None, now: datetime = NOW,
               lifetime: timedelta = timedelta(days=1), signer: CryptoSigner | None = None,
               approvals_override: Sequence[Metadata[Targets]] | None = None) -> tuple[bytes, dict[str, bytes]]:
        md = build_cohort_metadata(cohort=cohort, version=version, now=now, lifetime=lifetime, root_version=1,
                                   stable=[a for a, _ in stable], candidate=candidate[0] if candidate else None,
                                   rollout=rollout)
        md.sign(signer or self.server, append=True)
        approvals = [a for a, _ in stable] + ([candidate[0]] if candidate else [])
        artifacts: dict[str, bytes] = {}
        for _, arts in [*stable, *([candidate] if candidate else [])]:
            artifacts.update(arts)
        return bundle_document(md, approvals_override if approvals_override is not None else approvals), artifacts
