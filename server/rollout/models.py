"""Staged rollouts of a candidate to its cohort."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class RolloutRecord(Base):
    """One rollout: its frozen plan, where it stands, and what it last decided.

    ``plan_json`` is frozen at start (its SHA-256 is in the audit log and in
    ``plan_digest``); the controller refuses to act on a rollout whose plan
    no longer matches the digest.
    """

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    candidate_id: Mapped[str] = mapped_column(String(64), unique=True)
    cohort: Mapped[str] = mapped_column(String(200), index=True)
    #: running, paused, promoted, rolled_back, aborted
    state: Mapped[str] = mapped_column(String(20), index=True)
    #: "controller" (missing evidence: resumes by itself) or "reviewer" (resumes by hand); "" when running.
    paused_by: Mapped[str] = mapped_column(String(20), default="")
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    plan_json: Mapped[str] = mapped_column(Text)
    plan_digest: Mapped[str] = mapped_column(String(64))
    #: artifact_version label of the canary (the candidate) and of the control (the stable set).
    candidate_label: Mapped[str] = mapped_column(String(100))
    stable_label: Mapped[str] = mapped_column(String(100))
    stage_index: Mapped[int] = mapped_column(Integer, default=0)
    #: Unix seconds: first window that starts at/after the stage began (evidence counts from here).
    stage_window_start: Mapped[int] = mapped_column(BigInteger)
    stage_started_at: Mapped[str] = mapped_column(String(40))
    #: JSON list of the participating tenant ids (never shrinks as stages grow).
    participants_json: Mapped[str] = mapped_column(Text)
    session_fraction: Mapped[float] = mapped_column(Float)
    n_tenants: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[int] = mapped_column(Integer)
    bundle_version: Mapped[int] = mapped_column(BigInteger, default=0)
    #: JSON of the last assessment (decision, reason, per-gate verdicts, evidence).
    last_assessment_json: Mapped[str] = mapped_column(Text, default="{}")
    #: "replay", "shadow" (validation: no user gets the candidate) or "live" (the plan's stages).
    phase: Mapped[str] = mapped_column(String(20), default="live")
    #: JSON list of the intents the rollout is scoped to ([] = every intent).
    intents_json: Mapped[str] = mapped_column(Text, default="[]")
    #: JSON: per validation stage kind, the assessment that passed it (evidence for entering the next stage).
    validation_json: Mapped[str] = mapped_column(Text, default="{}")
    started_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
