"""Hotspot remediation SLAs: one row per detected hotspot, aged from detection to a promoted fix."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class HotspotStage(StrEnum):
    """Where a hotspot's newest candidate is (stored as the string value)."""

    CANDIDATE = "candidate"  # proposed, in review, approved or bundled
    REPLAY = "replay"
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


class SlaState(StrEnum):
    """A hotspot's remediation clock: ``open`` until a promoted fix closes it."""

    OPEN = "open"
    CLOSED = "closed"


class HotspotSla(Base):
    """A hotspot's remediation clock.

    ``stage`` (a :class:`HotspotStage`) follows its candidate: candidate, replay, shadow,
    canary, promoted (or rolled_back, rejected); ``state`` (a :class:`SlaState`) is ``open`` until a promoted fix closes it
    (a rollback reopens it, ``reopened`` counts how often).
    """

    __tablename__ = "hotspot_slas"

    hotspot_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    cohort: Mapped[str] = mapped_column(String(200), index=True)
    category: Mapped[str] = mapped_column(String(100))
    detected_at: Mapped[str] = mapped_column(String(40))
    sla_seconds: Mapped[int] = mapped_column(BigInteger)
    stage: Mapped[str] = mapped_column(String(20))
    candidate_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(20), index=True)
    closed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[str] = mapped_column(String(40))
