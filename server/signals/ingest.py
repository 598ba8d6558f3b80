"""Validate and store tenants' DP reports.

:class:`ReportIngest` is the kernel behind ``SignalService.SubmitReport``:
it checks a report against the caller's identity, the cohort's signal
schema and the declared DP metadata, then stores it with its cells packed
as int64 bytes. Every refusal is its own :class:`ReportRefused` subclass
carrying the gRPC status the servicer answers with and a metrics reason;
a refused report leaves the database unchanged. Accepted reports are
written by :class:`server.signals.store.ReportStore` (group commit, each
with its ``report.accepted`` audit entry).

Idempotency: the same key with the same content is a duplicate (answered
with the stored report's id, stored once); the same key with other content,
or another report of the same tenant for the same window, is refused.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from datetime import UTC
from enum import Enum
from typing import Any

import numpy as np
import psycopg
from fedsignal.v1 import common_pb2
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from aggregation import dp, stats
from aggregation.errors import FedsignalError
from aggregation.schema import LOCAL, SignalSchema
from server.context import ServerContext
from server.servicer import InvalidText, check_text
from server.signals.models import SignalReport
from server.signals.refusals import (
    CellOutOfRange,
    ContributionBoundsMismatch,
    DeclaredLossInvalid,
    ForeignCohort,
    ForeignTenant,
    MechanismMismatch,
    MechanismMissing,
    MissingIdempotencyKey,
    NoiseScaleInvalid,
    NoiseScaleUnfixed,
    ReportConflict,
    ReportRefused,
    ReportTooLarge,
    SecureCohortReport,
    SensitivityMismatch,
    StoreUnavailable,
    TaxonomyVersionMismatch,
    TextFieldInvalid,
    UnknownSchemaVersion,
    VectorLengthMismatch,
    WindowOutOfRange,
)
from server.signals.schemas import get_schema, noise_fixed_at
from server.signals.store import ReportStore

# A collector's clock may run this far ahead of the server's.
MAX_CLOCK_SKEW_SECONDS = 300
# Older windows are refused: nothing legitimate sits in an outbox that long.
MAX_REPORT_AGE_SECONDS = 400 * 24 * 3600
# Noise scales outside (0, MAX_NOISE_SCALE] are refused as absurd.
MAX_NOISE_SCALE = 1e6
# Noisy counts beyond this magnitude cannot come from a sane release and
# could overflow int64 sums.
MAX_CELL_MAGNITUDE = 1 << 40
MAX_IDEMPOTENCY_KEY_LENGTH = 200
#: Longest accepted value of each string field of a report (the key has its own rule).
TEXT_FIELD_LIMITS = {"tenant_id": 64, "cohort": 64, "taxonomy_version": 64, "collector_version": 100}

log = logging.getLogger(__name__)


class IngestOutcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Submitter:
    """The authenticated caller, from its certificate (never from the report)."""

    tenant_id: str
    cohort: str


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    report_id: str


@dataclass(frozen=True)
class _LossCheck:
    variance: float
    refusal: str | None  # message of a DeclaredLossMismatch, None when consistent


def _check_window(report: common_pb2.DpReport, schema: SignalSchema, now: float) -> None:
    start, end, width = report.window_start, report.window_end, schema.window_seconds
    if end - start != width:
        raise WindowOutOfRange(
            f"window [{start}, {end}) is {end - start} s long; schema version {schema.version} "
            f"of cohort {schema.cohort!r} uses {width} s windows"
        )
    if start % width:
        raise WindowOutOfRange(f"window start {start} is not aligned to the {width} s window grid")
    if end > now + MAX_CLOCK_SKEW_SECONDS:
        raise WindowOutOfRange(
            f"window [{start}, {end}) has not ended yet (server time {int(now)}); "
            "release a window only after it closes and check the collector's clock"
        )
    if start < now - MAX_REPORT_AGE_SECONDS:
        raise WindowOutOfRange(
            f"window starting {start} is older than {MAX_REPORT_AGE_SECONDS // 86400} days; it is not accepted"
        )


def _check_text_fields(report: common_pb2.DpReport) -> None:
    """Every string field: bounded length, printable, no NUL (refused before any store sees it)."""
    for name, limit in TEXT_FIELD_LIMITS.items():
        try:
            check_text(getattr(report, name), name, max_chars=limit)
        except InvalidText as exc:
            raise TextFieldInvalid(str(exc)) from None


def _check_key(report: common_pb2.DpReport, tenant_id: str) -> None:
    key = report.idempotency_key
    if not key:
        raise MissingIdempotencyKey("the report has no idempotency_key; every release needs a unique key")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise MissingIdempotencyKey(
            f"idempotency_key must be printable and at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    # Keys live in the submitting tenant's namespace, so no tenant can occupy
    # (and so block) a key another tenant's collector will use.
    if not key.startswith(f"{tenant_id}/"):
        raise MissingIdempotencyKey(
            f"idempotency_key must start with {tenant_id + '/'!r}, the submitting tenant's namespace"
        )


def _decode_cells(report: common_pb2.DpReport, schema: SignalSchema) -> np.ndarray[Any, np.dtype[np.int64]]:
    if len(report.cells) != schema.size:
        raise VectorLengthMismatch(
            f"the report has {len(report.cells)} cells; schema version {schema.version} of cohort "
            f"{schema.cohort!r} has {schema.size}"
        )
    cells = np.array(report.cells, dtype="<i8")
    if cells.size and int(np.abs(cells).max()) > MAX_CELL_MAGNITUDE:
        raise CellOutOfRange(f"a cell magnitude exceeds {MAX_CELL_MAGNITUDE}; the release cannot be genuine")
    return cells


def content_digest(tenant_id: str, report: common_pb2.DpReport, cells: bytes) -> str:
    """Digest of what a report says (not of its key or collector version)."""
    loss = report.privacy_loss
    header = "|".join(
        repr(x)
        for x in (
            tenant_id,
            report.cohort,
            report.schema_version,
            report.taxonomy_version,
            report.window_start,
            report.window_end,
            int(report.mechanism),
            report.noise_scale,
            report.sensitivity,
            report.max_cells_per_unit,
            report.max_count_per_cell,
            loss.rho,
            loss.epsilon,
            loss.delta,
        )
    )
    return hashlib.sha256(header.encode() + b"\x00" + cells).hexdigest()


class ReportIngest:
    """Validates and stores reports; one instance per server process.

    Schema versions are immutable, so they are cached per instance; so is
    the verdict of the declared-loss check per (mechanism, scale, bounds,
    declared loss), which keeps the OpenDP privacy map off the hot path.
    """

    def __init__(self, ctx: ServerContext, store: ReportStore | None = None) -> None:
        self._ctx = ctx
        self._schemas: dict[tuple[str, int], SignalSchema] = {}
        self._fixed_at: dict[str, float] = {}
        self._loss_checks: dict[tuple[Any, ...], _LossCheck] = {}
        self._lock = threading.Lock()
        self._store = store if store is not None else ReportStore(ctx)

    # -- lookups -----------------------------------------------------------
    def _schema(self, cohort: str, version: int) -> SignalSchema:
        cached = self._schemas.get((cohort, version))
        if cached is not None:
            return cached
        with self._ctx.sessions() as session:
            schema = get_schema(session, cohort, version)
        if schema is None:
            raise UnknownSchemaVersion(
                f"cohort {cohort!r} has no signal schema version {version}; fetch the current schema "
                "(GetSignalSchema) and release again"
            )
        with self._lock:
            self._schemas[(cohort, version)] = schema
        return schema

    def _noise_fixed_at(self, cohort: str) -> float | None:
        """Unix time ``cohort``'s noise scale was first fixed by a schema version (cached once known)."""
        fixed = self._fixed_at.get(cohort)
        if fixed is not None:
            return fixed
        with self._ctx.sessions() as session:
            moment = noise_fixed_at(session, cohort)
        if moment is None:
            return None
        # SQLite hands back naive datetimes for a timezone-aware column: they were stored in UTC.
        fixed = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
        with self._lock:
            self._fixed_at[cohort] = fixed
        return fixed

    def _check_legacy(self, report: common_pb2.DpReport, schema: SignalSchema) -> None:
        """A schema version of an earlier release fixes no noise scale: each report declared its own.

        Such reports are accepted only for windows that ended before the cohort's scale was fixed (the
        upgrade's cut-over, :func:`server.signals.schemas.fix_legacy_noise`), so what sat in outboxes
        across the upgrade is not lost, and no window after it is weighted by a scale a tenant chose.
        """
        fixed = self._noise_fixed_at(schema.cohort)
        if fixed is None or report.window_end > fixed:
            raise NoiseScaleUnfixed(
                f"schema version {schema.version} of cohort {schema.cohort!r} fixes no noise scale; "
                "fetch the current schema (GetSignalSchema), which does, and release at its scale"
            )

    def _loss_check(self, report: common_pb2.DpReport, mechanism: dp.Mechanism) -> _LossCheck:
        loss = report.privacy_loss
        gaussian = mechanism is dp.Mechanism.DISCRETE_GAUSSIAN
        # A Gaussian's epsilon is stated at the declared delta; a Laplace release is pure (delta 0).
        delta = loss.delta if gaussian else dp.DEFAULT_DELTA
        key = (
            mechanism,
            report.noise_scale,
            report.max_cells_per_unit,
            report.max_count_per_cell,
            loss.rho,
            loss.epsilon,
            delta,
        )
        cached = self._loss_checks.get(key)
        if cached is not None:
            return cached
        refusal: str | None = None
        try:
            dp.check_declared(
                mechanism,
                report.noise_scale,
                report.max_cells_per_unit,
                report.max_count_per_cell,
                loss.rho,
                loss.epsilon,
                delta=delta,
            )
        except dp.DeclaredLossMismatch as exc:
            refusal = str(exc)
        result = _LossCheck(stats.noise_variance(mechanism, report.noise_scale), refusal)
        with self._lock:
            if len(self._loss_checks) > 4096:
                self._loss_checks.clear()
            self._loss_checks[key] = result
        return result

    # -- validation ----------------------------------------------------------
    def validate(
        self, submitter: Submitter, report: common_pb2.DpReport, wire_size: int | None = None
    ) -> tuple[SignalSchema, _LossCheck]:
        """Raise the first :class:`ReportRefused` that applies; return the report's schema.

        ``wire_size``: the length of the bytes ``report`` was parsed from, when the caller
        has them (saves re-measuring the parsed message).
        """
        size = report.ByteSize() if wire_size is None else wire_size
        if size > self._ctx.settings.max_message_bytes:
            raise ReportTooLarge(
                f"the report is {size} bytes; the server accepts at most {self._ctx.settings.max_message_bytes}"
            )
        _check_text_fields(report)
        if report.tenant_id and report.tenant_id != submitter.tenant_id:
            raise ForeignTenant(
                f"the report names tenant {report.tenant_id!r} but the certificate belongs to "
                f"{submitter.tenant_id!r}; a tenant submits only its own reports"
            )
        if report.cohort != submitter.cohort:
            raise ForeignCohort(
                f"the report is for cohort {report.cohort!r} but the certificate is enrolled in "
                f"{submitter.cohort!r}"
            )
        _check_key(report, submitter.tenant_id)
        schema = self._schema(submitter.cohort, report.schema_version)
        if report.taxonomy_version != schema.taxonomy_version:
            raise TaxonomyVersionMismatch(
                f"the report uses taxonomy {report.taxonomy_version!r}; schema version {schema.version} "
                f"expects {schema.taxonomy_version!r}"
            )
        _check_window(report, schema, self._ctx.clock().timestamp())
        if report.mechanism == common_pb2.MECHANISM_UNSPECIFIED:
            raise MechanismMissing("the report does not name its DP mechanism")
        try:
            mechanism = dp.mechanism_from_proto(report.mechanism)
        except (ValueError, KeyError, FedsignalError) as exc:
            raise MechanismMissing(f"unknown DP mechanism {report.mechanism}") from exc
        if (report.max_cells_per_unit, report.max_count_per_cell) != (
            schema.max_cells_per_unit,
            schema.max_count_per_cell,
        ):
            raise ContributionBoundsMismatch(
                f"declared bounds L0={report.max_cells_per_unit}, Linf={report.max_count_per_cell}; "
                f"schema version {schema.version} requires L0={schema.max_cells_per_unit}, "
                f"Linf={schema.max_count_per_cell}"
            )
        scale = report.noise_scale
        if not (math.isfinite(scale) and dp.MIN_SCALE <= scale <= MAX_NOISE_SCALE):
            raise NoiseScaleInvalid(
                f"noise scale {scale!r} must be finite and in [{dp.MIN_SCALE:g}, {MAX_NOISE_SCALE:g}]"
            )
        if schema.aggregation_mode != LOCAL:
            # A secure cohort's windows are its rounds' sums: a per-tenant report would be added beside
            # them, at a noise scale of the tenant's choosing (and could steer a rollout's evidence).
            raise SecureCohortReport(
                f"cohort {schema.cohort!r} uses secure aggregation (schema version {schema.version}): "
                "its windows are released through secure-aggregation rounds, not per-tenant reports"
            )
        # A local-mode cohort's schema fixes the noise (a discrete Gaussian's sigma): no tenant declares
        # its own, and so none outweighs the others in the inverse-variance merge.
        if schema.noise_scale > 0:
            if mechanism is not dp.Mechanism.DISCRETE_GAUSSIAN:
                raise MechanismMismatch(
                    f"mechanism {mechanism.value}; schema version {schema.version} of cohort {schema.cohort!r} "
                    f"fixes discrete Gaussian noise of scale {schema.noise_scale!r}"
                )
            if not math.isclose(scale, schema.noise_scale, rel_tol=1e-9):
                raise NoiseScaleInvalid(
                    f"noise scale {scale!r}; schema version {schema.version} of cohort {schema.cohort!r} "
                    f"fixes {schema.noise_scale!r}"
                )
        else:
            self._check_legacy(report, schema)
        params = dp.ReleaseParams(mechanism, scale, schema.max_cells_per_unit, schema.max_count_per_cell)
        if not math.isclose(report.sensitivity, params.sensitivity, rel_tol=1e-9, abs_tol=1e-12):
            raise SensitivityMismatch(
                f"declared sensitivity {report.sensitivity!r}; the declared bounds give {params.sensitivity!r}"
            )
        loss = report.privacy_loss
        if not all(math.isfinite(x) and x >= 0 for x in (loss.rho, loss.epsilon, loss.delta)) or loss.delta >= 1:
            raise DeclaredLossInvalid("declared privacy loss must be finite, non-negative, with delta < 1")
        if mechanism is dp.Mechanism.DISCRETE_GAUSSIAN and loss.delta <= 0:
            raise DeclaredLossInvalid("a discrete Gaussian release must declare the delta its epsilon holds at")
        if mechanism is dp.Mechanism.DISCRETE_LAPLACE and loss.delta != 0:
            raise DeclaredLossInvalid("a discrete Laplace release is pure epsilon-DP: declare delta 0")
        check = self._loss_check(report, mechanism)
        if check.refusal is not None:
            raise DeclaredLossInvalid(check.refusal)
        return schema, check

    # -- storing -------------------------------------------------------------
    def submit(
        self, submitter: Submitter, report: common_pb2.DpReport, wire_size: int | None = None
    ) -> IngestResult:
        """Validate and store ``report``; durable when this returns (``wire_size``: see :meth:`validate`)."""
        try:
            result = self._submit(submitter, report, wire_size)
        except ReportRefused as exc:
            self._ctx.metrics.report_outcome(exc.reason)
            raise
        self._ctx.metrics.report_outcome(result.outcome.value)
        return result

    def _submit(self, submitter: Submitter, report: common_pb2.DpReport, wire_size: int | None) -> IngestResult:
        schema, check = self.validate(submitter, report, wire_size)
        cells = _decode_cells(report, schema).tobytes()
        digest = content_digest(submitter.tenant_id, report, cells)
        loss = report.privacy_loss
        mechanism = dp.mechanism_from_proto(report.mechanism)
        row = {
            "idempotency_key": report.idempotency_key,
            "content_digest": digest,
            "tenant_id": submitter.tenant_id,
            "cohort": submitter.cohort,
            "window_start": report.window_start,
            "window_end": report.window_end,
            "schema_version": report.schema_version,
            "taxonomy_version": report.taxonomy_version,
            "mechanism": str(mechanism.value),
            "noise_scale": report.noise_scale,
            "noise_variance": check.variance,
            "declared_rho": loss.rho,
            "declared_epsilon": loss.epsilon,
            "declared_delta": loss.delta,
            "cell_count": schema.size,
            "cells": cells,
            "collector_version": report.collector_version,
            "received_at": self._ctx.clock(),
            "merge_generation": None,
        }
        audit = {
            "tenant": submitter.tenant_id,
            "cohort": submitter.cohort,
            "window_start": report.window_start,
            "schema_version": report.schema_version,
            "mechanism": str(mechanism.value),
            "noise_scale": report.noise_scale,
            "rho": loss.rho,
            "epsilon": loss.epsilon,
            "delta": loss.delta,
        }
        try:
            report_id = self._store.store(row, submitter.tenant_id, audit)
        except (SQLAlchemyError, psycopg.Error) as exc:
            # Nothing was acknowledged: the collector's outbox keeps the report and retries.
            log.exception("report store unavailable")
            raise StoreUnavailable("the report store is unavailable; retry the report later") from exc
        if report_id is not None:
            return IngestResult(IngestOutcome.ACCEPTED, str(report_id))
        return self._resolve_conflict(submitter, report, digest)

    def _resolve_conflict(self, submitter: Submitter, report: common_pb2.DpReport, digest: str) -> IngestResult:
        with self._ctx.sessions() as session:
            same_key = session.execute(
                select(SignalReport.id, SignalReport.tenant_id, SignalReport.content_digest).where(
                    SignalReport.idempotency_key == report.idempotency_key
                )
            ).first()
            if same_key is not None:
                if same_key.tenant_id == submitter.tenant_id and same_key.content_digest == digest:
                    return IngestResult(IngestOutcome.DUPLICATE, str(same_key.id))
                raise ReportConflict(
                    f"idempotency key {report.idempotency_key!r} was already used for a different report; "
                    "a new release needs a new key"
                )
            same_window = session.execute(
                select(SignalReport.id).where(
                    SignalReport.tenant_id == submitter.tenant_id,
                    SignalReport.cohort == submitter.cohort,
                    SignalReport.window_start == report.window_start,
                )
            ).first()
        if same_window is not None:
            raise ReportConflict(
                f"tenant {submitter.tenant_id!r} already has report {same_window.id} for the window starting "
                f"{report.window_start}; one release per window is accepted"
            )
        raise ReportConflict("the report conflicts with a stored report")
