"""Typed refusals of the bundle kernel (:mod:`aggregation.bundle`).

Every refusal is a :class:`BundleRefused` with a short machine-readable
``code`` (sent to the server in ``ReportStatus.detail``) and a message that
says what was wrong and what keeps running (the previous bundle).
"""

from __future__ import annotations

from aggregation.errors import FedsignalError


class BundleRefused(FedsignalError):
    """Metadata or artifacts failed verification; nothing was installed."""

    code = "refused"


class MalformedMetadataError(BundleRefused):
    code = "malformed_metadata"


class TamperedArtifactError(BundleRefused):
    """An artifact's bytes do not hash to the SHA-256 the reviewers signed."""

    code = "tampered_artifact"


class OversizedArtifactError(BundleRefused):
    """More bytes than the signed length or the hard cap (endless data)."""

    code = "oversized"


class RollbackError(BundleRefused):
    """Metadata older than (or conflicting with) the installed version."""

    code = "rollback"


class ExpiredMetadataError(BundleRefused):
    """Metadata past its expiry (freeze attack) or an expired trust root."""

    code = "expired"


class WrongCohortError(BundleRefused):
    code = "wrong_cohort"


class MixAndMatchError(BundleRefused):
    """Approvals that the cohort metadata does not pin (parts of different versions)."""

    code = "mix_and_match"


class InsufficientSignaturesError(BundleRefused):
    """Fewer distinct valid reviewer signatures than the risk class requires."""

    code = "signature_threshold"


class DuplicateSignaturesError(InsufficientSignaturesError):
    """The threshold was only reached by counting one key's signature more than once."""

    code = "duplicate_signatures"


class UnknownSignerError(InsufficientSignaturesError):
    """The threshold was only reached with keys the trust root does not list (removed or unknown)."""

    code = "unknown_signer"


class ServerKeyOnlyError(InsufficientSignaturesError):
    """Approval signed by the server's online key, which may never approve content."""

    code = "server_key_only"


class UntrustedCohortMetadataError(BundleRefused):
    """Cohort metadata not signed by the freshness (server) key the trust root lists."""

    code = "cohort_signature"


class RootRotationError(BundleRefused):
    """A new trust root not signed by the old root's threshold and its own, or not version N+1."""

    code = "root_rotation"


class RiskClassDowngradeError(BundleRefused):
    """An approval would win an artifact name over another approval of a more demanding risk class.

    Per artifact name the approval agents use (the newest stable set shipping it; the candidate in its
    arm) must need at least as many reviewer signatures as every approval it overrides, so one low-risk
    signature cannot replace content approved at high or critical.
    """

    code = "risk_class_downgrade"
