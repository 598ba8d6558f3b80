"""Why the server refuses a report: one type per cause.

Each :class:`ReportRefused` subclass carries the gRPC status the servicer
answers with (``status``) and the label the report-outcome metric counts it
under (``reason``).
"""

from __future__ import annotations

import grpc

from aggregation.errors import FedsignalError


class ReportRefused(FedsignalError):
    """A report the server will not store; ``status`` is the gRPC answer."""

    status: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    reason: str = "invalid"


class ReportTooLarge(ReportRefused):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"


class MalformedReport(ReportRefused):
    reason = "malformed"


class ForeignTenant(ReportRefused):
    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "foreign_tenant"


class ForeignCohort(ReportRefused):
    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "foreign_cohort"


class MissingIdempotencyKey(ReportRefused):
    reason = "idempotency_key"


class UnknownSchemaVersion(ReportRefused):
    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "unknown_schema_version"


class TaxonomyVersionMismatch(ReportRefused):
    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "taxonomy_version"


class WindowOutOfRange(ReportRefused):
    status = grpc.StatusCode.OUT_OF_RANGE
    reason = "window"


class MechanismMissing(ReportRefused):
    reason = "mechanism"


class ContributionBoundsMismatch(ReportRefused):
    reason = "contribution_bounds"


class NoiseScaleInvalid(ReportRefused):
    reason = "noise_scale"


class SensitivityMismatch(ReportRefused):
    reason = "sensitivity"


class DeclaredLossInvalid(ReportRefused):
    reason = "declared_loss"


class VectorLengthMismatch(ReportRefused):
    reason = "vector_length"


class CellOutOfRange(ReportRefused):
    reason = "cell_value"


class ReportConflict(ReportRefused):
    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "conflict"
