"""Redaction of free text before it touches anything else (public face: ``tenant_agent.redact``).

``engine`` holds the Redactor and its configuration, ``recognizers`` the
built-in patterns and their gates, ``checksums`` the check-digit algorithms,
``domains`` the bundled Public Suffix List. See docs/redaction.md.
"""

from tenant_agent.redaction.checksums import iban_valid, luhn_valid
from tenant_agent.redaction.engine import (
    ENTITY_TYPES,
    EntityDetector,
    RedactionConfig,
    RedactionConfigError,
    Redactor,
    builtin_recognizers,
)

__all__ = [
    "ENTITY_TYPES", "EntityDetector", "RedactionConfig", "RedactionConfigError", "Redactor",
    "builtin_recognizers", "iban_valid", "luhn_valid",
]  # fmt: skip
