"""Why the server refuses a report: one type per cause.

Each :class:`ReportRefused` subclass is also one kind of :mod:`aggregation.errors`
(which decides the wire status, see :mod:`server.servicer`) and carries the label
the report-outcome metric counts it under (``reason``).
"""

from __future__ import annotations

from aggregation.errors import (
    AlreadyExists,
    FedsignalError,
    InvalidRequest,
    OutOfRange,
    PermissionDenied,
    PreconditionFailed,
    ResourceExhausted,
    Unavailable,
)


class ReportRefused(FedsignalError):
    """A report the server will not store (or not now); ``reason`` labels it in the metrics."""

    reason: str = "invalid"


class ReportTooLarge(ResourceExhausted, ReportRefused):
    reason = "too_large"


class MalformedReport(InvalidRequest, ReportRefused):
    reason = "malformed"


class ForeignTenant(PermissionDenied, ReportRefused):
    reason = "foreign_tenant"


class ForeignCohort(PermissionDenied, ReportRefused):
    reason = "foreign_cohort"


class TextFieldInvalid(InvalidRequest, ReportRefused):
    """A string field that is too long or carries a NUL or other control character."""

    reason = "text_field"


class MissingIdempotencyKey(InvalidRequest, ReportRefused):
    reason = "idempotency_key"


class UnknownSchemaVersion(PreconditionFailed, ReportRefused):
    reason = "unknown_schema_version"


class TaxonomyVersionMismatch(PreconditionFailed, ReportRefused):
    reason = "taxonomy_version"


class WindowOutOfRange(OutOfRange, ReportRefused):
    reason = "window"


class MechanismMissing(InvalidRequest, ReportRefused):
    reason = "mechanism"


class ContributionBoundsMismatch(InvalidRequest, ReportRefused):
    reason = "contribution_bounds"


class NoiseScaleInvalid(InvalidRequest, ReportRefused):
    reason = "noise_scale"


class MechanismMismatch(InvalidRequest, ReportRefused):
    """A mechanism other than the one the cohort's schema fixes."""

    reason = "mechanism_mismatch"


class NoiseScaleUnfixed(PreconditionFailed, ReportRefused):
    """A report for a schema version that fixes no noise scale (an earlier release's), for a window after
    the cohort's scale was fixed."""

    reason = "noise_scale_unfixed"


class SecureCohortReport(PreconditionFailed, ReportRefused):
    """A per-tenant report for a cohort whose schema says secure aggregation."""

    reason = "secure_cohort"


class SensitivityMismatch(InvalidRequest, ReportRefused):
    reason = "sensitivity"


class DeclaredLossInvalid(InvalidRequest, ReportRefused):
    reason = "declared_loss"


class VectorLengthMismatch(InvalidRequest, ReportRefused):
    reason = "vector_length"


class CellOutOfRange(InvalidRequest, ReportRefused):
    reason = "cell_value"


class ReportConflict(AlreadyExists, ReportRefused):
    reason = "conflict"


class StoreUnavailable(Unavailable, ReportRefused):
    """The report store failed; nothing was acknowledged and the collector's outbox retries."""

    reason = "store_unavailable"
