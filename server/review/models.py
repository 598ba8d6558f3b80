"""Trust roots, candidates, reviewer signatures, issued cohort bundles, tenant bundle status."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class TrustRootRecord(Base):
    """One version of the signed trust root (TUF root metadata JSON)."""

    __tablename__ = "trust_roots"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root_json: Mapped[str] = mapped_column(Text)
    installed_at: Mapped[str] = mapped_column(String(40))


class CandidateRecord(Base):
    """A candidate artifact set and where it is in the review lifecycle."""

    __tablename__ = "candidates"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Detection identity (cohort, rule, category, slice, window): detection is idempotent on it.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    cohort: Mapped[str] = mapped_column(String(200), index=True)
    category: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    risk_class: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), index=True)
    #: JSON list of {"name", "kind", "content_b64"}.
    artifacts_json: Mapped[str] = mapped_column(Text)
    evidence_json: Mapped[str] = mapped_column(Text)
    rollout_plan_json: Mapped[str] = mapped_column(Text)
    #: Approval metadata revision; bumped by every edit (old signatures stop counting).
    revision: Mapped[int] = mapped_column(Integer, default=1)
    #: Canonical bytes reviewers sign (TUF "signed" of the approval), UTF-8.
    signing_payload: Mapped[str] = mapped_column(Text)
    #: The approval metadata with its reviewer signatures, once the threshold is met.
    approval_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    reject_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    bundle_version: Mapped[int] = mapped_column(BigInteger, default=0)


class ReviewerSignature(Base):
    """A reviewer's Ed25519 signature over one revision of a candidate's approval metadata."""

    __tablename__ = "reviewer_signatures"
    __table_args__ = (UniqueConstraint("candidate_id", "revision", "keyid", name="uq_signature_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(ForeignKey("candidates.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    keyid: Mapped[str] = mapped_column(String(128))
    signature_hex: Mapped[str] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))


class CohortBundleRecord(Base):
    """One issued version of a cohort's signed bundle metadata."""

    __tablename__ = "cohort_bundles"

    cohort: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    metadata_json: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str] = mapped_column(String(40))
    root_version: Mapped[int] = mapped_column(Integer)
    candidate_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rollout_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: JSON: {"rollout_id", "candidate_id", "stage_index", "stage_percent", "session_fraction", "tenants"}.
    exposure_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    stable_json: Mapped[str] = mapped_column(Text)


class TenantBundleStatus(Base):
    """What a tenant last reported about its installed bundle."""

    __tablename__ = "tenant_bundle_status"

    tenant_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    cohort: Mapped[str] = mapped_column(String(200), index=True)
    active_version: Mapped[int] = mapped_column(BigInteger, default=0)
    previous_version: Mapped[int] = mapped_column(BigInteger, default=0)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    detail: Mapped[str] = mapped_column(String(200), default="")
    reported_at: Mapped[str] = mapped_column(String(40))
