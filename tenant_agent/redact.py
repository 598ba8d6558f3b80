"""Redaction of free text before it touches anything else — the public import path.

Every entity is replaced by a typed placeholder (``<EMAIL>``, ``<PHONE>``,
``<US_SSN>``, ``<CREDIT_CARD>``, ``<IBAN>``, ``<IP_ADDRESS>``, ``<URL>``,
``<DATE>``, ``<MRN>``, ``<API_KEY>``, ``<BEARER_TOKEN>``, the national and
clinical identifiers listed in ``ENTITY_TYPES`` and docs/redaction.md, and
the tenant's own types). Entities with a checksum are only redacted when the
checksum holds (Luhn for card numbers, ISO 7064 mod-97 for IBANs, Verhoeff for
Aadhaar, mod-11 for NHS numbers, …), so order numbers and typos stay readable.
The implementation lives in ``tenant_agent.redaction``.
"""

from __future__ import annotations

from tenant_agent.redaction.checksums import iban_valid, luhn_valid
from tenant_agent.redaction.engine import (
    ENTITY_TYPES,
    EntityDetector,
    RedactionConfig,
    RedactionConfigError,
    Redactor,
    builtin_recognizers,
)

EMAIL = "EMAIL"
PHONE = "PHONE"
US_SSN = "US_SSN"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
URL = "URL"
DATE = "DATE"
MRN = "MRN"
API_KEY = "API_KEY"
BEARER_TOKEN = "BEARER_TOKEN"
PERSON = "PERSON"

__all__ = [
    "API_KEY", "BEARER_TOKEN", "CREDIT_CARD", "DATE", "EMAIL", "ENTITY_TYPES", "IBAN", "IP_ADDRESS", "MRN",
    "PERSON", "PHONE", "URL", "US_SSN", "EntityDetector", "RedactionConfig", "RedactionConfigError",
    "Redactor", "builtin_recognizers", "iban_valid", "luhn_valid",
]  # fmt: skip
