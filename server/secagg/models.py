"""Secure-aggregation tables: the cohort roster, rounds, and each participant's messages.

The server keeps only what the protocol hands it: masked inputs (uniform
without the masks), encrypted shares (opaque), unmask requests it relays,
attestations and unmask responses. No tenant's unmasked table is ever stored;
a round's masked inputs are deleted once its sum is released or it aborted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base

# SQLite only autoincrements an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer, "sqlite")

COLLECTING = "collecting"
UNMASKING = "unmasking"
DONE = "done"
ABORTED = "aborted"
PHASES = (COLLECTING, UNMASKING, DONE, ABORTED)


class RosterRecord(Base):
    """A tenant's long-term X25519 masking key, signed with its enrolled identity key."""

    __tablename__ = "secagg_roster"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cohort: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    certificate_pem: Mapped[bytes] = mapped_column(LargeBinary)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RoundRecord(Base):
    """One round: one (cohort, window, schema version)."""

    __tablename__ = "secagg_rounds"
    __table_args__ = (
        UniqueConstraint("cohort", "window_start", "schema_version", name="uq_secagg_rounds_window"),
        Index("ix_secagg_rounds_phase", "phase"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(String(64), unique=True)
    cohort: Mapped[str] = mapped_column(String(64))
    window_start: Mapped[int] = mapped_column(BigInteger)
    window_end: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    # Canonical aggregation.secagg.RoundContext bytes.
    context: Mapped[bytes] = mapped_column(LargeBinary)
    roster_size: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[int] = mapped_column(Integer)
    sigma_central: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submit_deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    unmask_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # JSON list of the survivors' tenant ids, fixed when the round closes.
    survivors_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    abort_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class ParticipantRecord(Base):
    """One tenant's messages in one round."""

    __tablename__ = "secagg_participants"
    __table_args__ = (UniqueConstraint("round_pk", "tenant_id", name="uq_secagg_participants_tenant"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    round_pk: Mapped[int] = mapped_column(ForeignKey("secagg_rounds.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Canonical MaskedInput bytes (deleted when the round finishes); its SHA-256 stays.
    masked_input: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    input_digest: Mapped[str] = mapped_column(String(64))
    unmask_request: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    attestation: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    unmask_response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


def survivors_count(row: RoundRecord) -> int:
    """How many tenants the round's survivor set holds (0 before it closes)."""
    import json

    return len(json.loads(row.survivors_json)) if row.survivors_json else 0
