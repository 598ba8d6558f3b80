"""Signal tables: cohort schema versions, stored DP reports, merged windows.

Cells are stored as packed little-endian int64 bytes (``LargeBinary``), so
ingest and merge never do per-cell ORM work: a report's table is one numpy
``frombuffer`` away.

Merging is incremental: a report starts with ``merge_generation`` NULL
(pending); the merge job adds pending reports of one (cohort, window,
schema version) to its :class:`MergedWindow` and stamps them with the
window's new generation in the same transaction, so nothing is merged twice
and a late report simply re-merges its window.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base

# SQLite only autoincrements an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer, "sqlite")


class SignalSchemaVersion(Base):
    """One immutable version of a cohort's public signal schema (JSON)."""

    __tablename__ = "signal_schema_versions"
    __table_args__ = (UniqueConstraint("cohort", "version", name="uq_signal_schema_cohort_version"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    cohort: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SignalReport(Base):
    """One accepted DP report of one tenant for one window."""

    __tablename__ = "signal_reports"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_signal_reports_idempotency_key"),
        # A tenant releases one table per window; a second, different one is refused.
        UniqueConstraint("tenant_id", "cohort", "window_start", name="uq_signal_reports_tenant_window"),
        # The merge job's work list: pending reports only.
        Index(
            "ix_signal_reports_pending",
            "cohort",
            "window_start",
            "schema_version",
            postgresql_where=text("merge_generation IS NULL"),
            sqlite_where=text("merge_generation IS NULL"),
        ),
        Index("ix_signal_reports_window", "cohort", "window_start"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    content_digest: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(200))
    cohort: Mapped[str] = mapped_column(String(200))
    window_start: Mapped[int] = mapped_column(BigInteger)
    window_end: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int] = mapped_column(Integer)
    taxonomy_version: Mapped[str] = mapped_column(String(50))
    mechanism: Mapped[str] = mapped_column(String(40))
    noise_scale: Mapped[float] = mapped_column(Float)
    # Exact variance of the noise added to every cell (aggregation.stats).
    noise_variance: Mapped[float] = mapped_column(Float)
    declared_rho: Mapped[float] = mapped_column(Float)
    declared_epsilon: Mapped[float] = mapped_column(Float)
    declared_delta: Mapped[float] = mapped_column(Float)
    cell_count: Mapped[int] = mapped_column(Integer)
    cells: Mapped[bytes] = mapped_column(LargeBinary)  # int64 little-endian, schema cell order
    collector_version: Mapped[str] = mapped_column(String(100), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # NULL: not merged yet; else the MergedWindow.generation that included it.
    merge_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MergedWindow(Base):
    """Sum of every merged report of one (cohort, window, schema version).

    Versions of one window are combined by cell key when read
    (:mod:`server.signals.views`); each row stays dense in its own layout.
    """

    __tablename__ = "merged_windows"
    __table_args__ = (
        UniqueConstraint("cohort", "window_start", "schema_version", name="uq_merged_windows_window"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    cohort: Mapped[str] = mapped_column(String(200))
    window_start: Mapped[int] = mapped_column(BigInteger)
    window_end: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int] = mapped_column(Integer)
    cells: Mapped[bytes] = mapped_column(LargeBinary)  # summed int64 little-endian
    # Sum of the reports' per-cell noise variances (the same for every cell).
    variance: Mapped[float] = mapped_column(Float)
    tenants: Mapped[int] = mapped_column(Integer)
    reports: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
