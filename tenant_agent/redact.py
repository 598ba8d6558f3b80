"""Redaction of free text before it touches anything else.

Every entity is replaced by a typed placeholder (``<EMAIL>``, ``<PHONE>``,
``<US_SSN>``, ``<CREDIT_CARD>``, ``<IBAN>``, ``<IP_ADDRESS>``, ``<URL>``,
``<DATE>``, ``<MRN>``, ``<API_KEY>``, ``<BEARER_TOKEN>`` and the tenant's own
types). Entities with a checksum are only redacted when the checksum holds
(Luhn for card numbers, ISO 7064 mod-97 for IBANs), so order numbers and
typos stay readable.

Speed comes from three habits: every pattern is compiled once; each pass is
guarded by a substring pre-check done in C (no ``@``: no e-mail pass; no
digit: none of the numeric passes); and passes whose matches need no
validation use ``subn`` with a constant replacement instead of a callback.
Passes run from the most specific to the most generic (URLs before the
e-mails and addresses inside them, checksummed numbers before phones), and a
placeholder never matches a later pass.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aggregation.errors import FedsignalError

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

#: The built-in entity types, in the order their passes run.
ENTITY_TYPES = (URL, API_KEY, BEARER_TOKEN, EMAIL, IBAN, CREDIT_CARD, US_SSN, MRN, IP_ADDRESS, DATE, PHONE)

_TENANT_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
_DIGITS = frozenset("0123456789")
_A = re.ASCII


class RedactionConfigError(FedsignalError):
    """A tenant redaction pattern or dictionary that cannot be used."""


@dataclass(frozen=True)
class RedactionConfig:
    """Tenant-specific identifiers: ``patterns`` maps an entity name to a regular
    expression, ``dictionaries`` maps an entity name to literal terms (matched
    case-insensitively on word boundaries). Names become placeholders
    (``ticket_id`` → ``<TICKET_ID>``)."""

    patterns: dict[str, str] = field(default_factory=dict)
    dictionaries: dict[str, list[str]] = field(default_factory=dict)


# -- validators ------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Registry lengths of IBAN countries (ISO 13616); unknown countries: 15..34.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23,
    "GL": 18, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20,
    "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "ME": 22, "MK": 19, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip


# A → "10", B → "11", …, Z → "35": the digit string ISO 7064 mod-97 works on.
_IBAN_LETTERS = {ord(ch): str(ord(ch) - 55) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def iban_valid(candidate: str) -> bool:
    """True when ``candidate`` (spaces allowed) is an IBAN with a valid mod-97 checksum."""
    iban = candidate.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34 or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int(rearranged.translate(_IBAN_LETTERS)) % 97 == 1


# -- built-in patterns ---------------------------------------------------------------

_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'`]+", _A | re.IGNORECASE)
_URL_TRAIL = ".,;:!?)]}"
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]++@[A-Za-z0-9\-]++(?:\.[A-Za-z0-9\-]++)*\.[A-Za-z]{2,}\b", _A
)
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|glpat-[A-Za-z0-9_\-]{20,})"
    # Bounded: an unterminated BEGIN line must not make the scan quadratic.
    r"|-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[\s\S]{0,10000}?-----END [A-Z ]{0,20}PRIVATE KEY-----",
    _A,
)
# "password=…", "api_key: …": keep the name, redact the value.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:api[_\-]?key|apikey|secret(?:[_\-]?key)?|client[_\-]?secret|access[_\-]?token"
    r"|auth[_\-]?token|password|passwd|pwd)\s*[:=]\s*[\"']?)([^\s\"',;]{6,})",
    _A,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", _A)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*", _A)
# Patterns whose matches start at a digit (or '+' / '(' / an upper-case
# letter) begin with that character class, so the regex engine can skip ahead
# to candidates instead of trying every position; boundary look-behinds come
# right after the first character for the same reason.
_IBAN = re.compile(r"[A-Z](?<![\w][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", _A)
# Card numbers as people write them: one run of digits, 4-4-4-4(-3) groups or
# the 4-6-5 / 4-6-4 groups of Amex and Diners. A number glued to a preceding
# digit group (the tail of an IBAN, a longer account number) is not a card.
_CARD = re.compile(
    r"[0-9](?<![\w.\-][0-9])(?<![0-9] [0-9])(?<![0-9]-[0-9])"
    r"(?:[0-9]{12,18}|[0-9]{3}([ \-])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1?[0-9]{3})?"
    r"|[0-9]{3}([ \-])[0-9]{6}\2[0-9]{4,5})"
    r"(?![\w]|[.\-][0-9]|[ \-][0-9])",
    _A,
)
_SSN_DASHED = re.compile(r"[0-9]{3}(?<![\w\-][0-9]{3})([- ])[0-9]{2}\1[0-9]{4}(?![\w\-])", _A)
# "SSN 123456789": nine bare digits only count next to the word.
_SSN_LABELLED = re.compile(
    r"(?i)(\b(?:ssn|social security(?: number| no\.?)?)\s*(?:is\s+)?[:#]?\s*)([0-9]{3}-?[0-9]{2}-?[0-9]{4})\b",
    _A,
)
_MRN = re.compile(
    r"(?i)(\b(?:mrn|medical record(?: number| no\.?| #)?|patient (?:id|number))\s*(?:is\s+)?[:#]?\s*)"
    r"([A-Z]{0,3}-?[0-9]{5,10})\b",
    _A,
)
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.[0-9])", _A)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?:%[A-Za-z0-9]+)?(?![\w:])",
    _A,
)
_DATE_NUMERIC = re.compile(
    r"[0-9](?<![\w.\-/][0-9])(?:[0-9]{3}([-/])[0-9]{1,2}\1[0-9]{1,2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+\-][0-9]{2}:?[0-9]{2})?)?"
    r"|[0-9]?([/.\-])[0-9]{1,2}\2(?:[0-9]{4}|[0-9]{2}))(?![\w]|[.\-/][0-9])",
    _A,
)
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_MONTH_HINTS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_WORDS = re.compile(
    rf"\b(?:(?:0?[1-9]|[12][0-9]|3[01])(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+[0-9]{{4}}"
    rf"|{_MONTH}\.?\s+(?:0?[1-9]|[12][0-9]|3[01])(?:st|nd|rd|th)?,?\s+[0-9]{{4}})\b",
    _A | re.IGNORECASE,
)
# Digit groups are possessive and a number never starts inside a digit run:
# a long run of digits costs linear time, not a combinatorial search.
_PHONE_TAIL = r"[0-9](?<![0-9][0-9])[0-9]{1,3}+(?:[\s.\-]?[0-9]{1,4}+){1,5}"
_PHONE = re.compile(
    rf"(?:\+[0-9]{{1,3}}[\s.\-]?(?:\([0-9]{{1,4}}\)[\s.\-]?)?[0-9]{{1,5}}+(?:[\s.\-]?[0-9]{{1,5}}+){{1,6}}"
    rf"|1[\s.\-](?:\([0-9]{{3}}\)|[0-9]{{3}})[\s.\-]?[0-9]{{3}}[\s.\-][0-9]{{4}}"
    rf"|\([0-9]{{1,4}}\)[\s.\-]?{_PHONE_TAIL}|{_PHONE_TAIL})(?![\w]|[.\-/][0-9])",
    _A,
)
_PHONE_NOT_AFTER = (
    frozenset("+-./_")
    | frozenset("0123456789")
    | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
)
_API_KEY_HINTS = (
    "sk-", "sk_", "pk_", "rk_", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "xox", "AIza", "glpat-", "PRIVATE KEY",
)  # fmt: skip
# What a short label must contain to hold a built-in entity other than a
# four-plus-digit number (see Redactor.redact_label).
_LABEL_RISK = re.compile(
    r"[@:/=]|(?i:www\.)|Bearer|Basic|eyJ|sk[-_]|[pr]k_|A(?:KIA|SIA|Iza)|gh[pousr]_|github_pat_|xox|glpat-|PRIVATE KEY"
)
# What a short, otherwise plain label with four to six digits must contain to
# hold a numeric entity (see Redactor.redact_label): a digit, '.' or '-' and a
# digit (IPv4 addresses, numeric dates), two capitals and two digits (an IBAN's
# head), a keyword the MRN and written-date passes need, or whitespace other
# than space and tab (the phone check counts it as a digit). Every other
# numeric entity needs seven digits or more: phones (7 nationally, 8 with +),
# SSNs (9), cards (13); MRNs and written dates need five.
_LABEL_NUMERIC_RISK = re.compile(
    r"[0-9][.\-][0-9]|[A-Z]{2}[0-9]{2}|[\n\r\f\v]"
    r"|(?i:mrn|medical record|patient|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
)
# An IBAN can carry as few as two digits (its check digits): a label with an
# IBAN's shape always runs the full passes, whatever its digit count.
_LABEL_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,}")
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_PLAIN_LABELS_MAX = 65_536
_SECRET_HINTS = ("key", "secret", "token", "pass", "pwd")


Match = re.Match[str]

_SSN_SHAPE = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}")
_NANP_SHAPE = re.compile(r"(?:1[-. ])?(?:[0-9]{3}[-. ]|\([0-9]{3}\) ?)?[0-9]{3}[-. ][0-9]{4}")
_IBAN_HEAD = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4})* ?$", _A)


def _phone_ok(m: Match) -> bool:
    start = m.start()
    if start:
        before = m.string[start - 1]
        if before in _PHONE_NOT_AFTER or (before == " " and start > 1 and m.string[start - 2] in _DIGITS):
            return False
    found = m.group(0)
    if _SSN_SHAPE.fullmatch(found):
        return False  # 3-2-4 is how SSNs are written, not phones; the SSN pass rejected it
    if start and _IBAN_HEAD.search(m.string, max(0, start - 40), start):
        return False  # the tail of an IBAN that failed its checksum
    digits = len(found) - sum(found.count(ch) for ch in "+()-. \t")
    if found[0] == "+" or found.startswith("00"):  # international: +CC or 00CC
        return 8 <= digits <= (15 if found[0] == "+" else 17)
    if not 7 <= digits <= 12:
        return False
    # Without a country prefix, only the shapes national numbers are written in:
    # an area code in parentheses, North American 3-3-4 / 3-4, or a trunk "0"
    # prefix with separators (020 7946 0958, 06 12 34 56 78). Other digit
    # groups (1234-5678-9012, ZIP+4 94107-1234) are serials, not phones.
    if "(" in found or _NANP_SHAPE.fullmatch(found):
        return True
    return found[0] == "0" and digits >= 9 and any(ch in " .-" for ch in found)


def _iban_ok(m: Match) -> bool:
    return iban_valid(m.group(0))


def _card_ok(m: Match) -> bool:
    digits = m.group(0).replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ssn_digits_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssn_ok(m: Match) -> bool:
    return _ssn_digits_ok(m.group(0).replace("-", "").replace(" ", ""))


def _ipv4_ok(m: Match) -> bool:
    return all(int(octet) <= 255 for octet in m.group(0).split("."))


def _ipv6_ok(m: Match) -> bool:
    found = m.group(0)
    if found.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(found)
    except ValueError:
        return False
    return True


def _date_ok(m: Match) -> bool:
    found = m.group(0)
    if m.group(1):  # year first: yyyy-mm-dd or yyyy/mm/dd
        month, day = int(found[5:].split(m.group(1))[0]), int(found[5:].split(m.group(1))[1][:2])
        return 1 <= month <= 12 and 1 <= day <= 31
    sep = m.group(2)
    first, second, year = found.split(sep)
    if sep == "." and len(year) != 4:
        return False  # 1.2.30 is a version number far more often than a date
    a, b = int(first), int(second)
    return 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12


class Redactor:
    """Replaces personal data and secrets in free text with typed placeholders.

    ``stats`` counts, per entity type, every entity this redactor replaced —
    a local metric; it never includes the replaced values.
    """

    def __init__(self, config: RedactionConfig | None = None) -> None:
        self.config = config or RedactionConfig()
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._tenant_passes = _compile_tenant(self.config)
        self._plain_labels: set[str] = set()

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the per-entity-type counts since this redactor was created."""
        with self._lock:
            return dict(self._stats)

    def redact(self, text: str) -> str:
        """``text`` with every recognised entity replaced by its placeholder."""
        if not text:
            return text
        counts: dict[str, int] = {}
        for name, pattern in self._tenant_passes:
            text, n = pattern.subn(f"<{name}>", text)
            if n:
                counts[name] = counts.get(name, 0) + n
        text = self._builtin(text, counts)
        if counts:
            with self._lock:
                stats = self._stats
                for name, n in counts.items():
                    stats[name] = stats.get(name, 0) + n
        return text

    def redact_label(self, value: str) -> str:
        """A short categorical string (intent, tool name, error type, id) redacted,
        skipping the passes when no entity can be in it: every built-in entity
        needs ``@``, ``:``, ``/``, ``=``, ``www.``, a secret prefix, more than 40
        characters, or at least four digits (``1.2.3.4``, ``3/4/21``); with four
        to six digits, also one of the shapes of ``_LABEL_NUMERIC_RISK``, so an
        id such as ``sess-4711`` skips the passes too (ids are unique: the cache
        below does not help them). Labels repeat, so the ones that come back
        unchanged are remembered."""
        plain = self._plain_labels
        if value in plain:
            return value
        digits = len(value) - len(value.translate(_DROP_DIGITS))
        if (
            self._tenant_passes
            or len(value) > 40
            or _LABEL_RISK.search(value)
            or (digits >= 4 and (digits >= 7 or _LABEL_NUMERIC_RISK.search(value)))
            or (digits >= 2 and _LABEL_IBAN_SHAPE.search(value))
        ):
            cleaned = self.redact(value)
        else:
            cleaned = value
        if cleaned == value:
            if len(plain) >= _PLAIN_LABELS_MAX:
                plain.clear()
            plain.add(value)
        return cleaned

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        return [self.redact(t) for t in texts]

    # -- the built-in passes ---------------------------------------------------
    def _builtin(self, text: str, counts: dict[str, int]) -> str:
        def bump(name: str, n: int = 1) -> None:
            counts[name] = counts.get(name, 0) + n

        def constant(pattern: re.Pattern[str], name: str, replacement: str) -> None:
            nonlocal text
            text, n = pattern.subn(replacement, text)
            if n:
                counts[name] = counts.get(name, 0) + n

        if "://" in text or "www." in text or "WWW." in text:
            text = _URL.sub(_keep_trailing(URL, bump), text)
        if any(hint in text for hint in _API_KEY_HINTS):
            constant(_API_KEY, API_KEY, "<API_KEY>")
        lowered = text.lower()
        if ("=" in text or ":" in text) and any(hint in lowered for hint in _SECRET_HINTS):
            constant(_SECRET_ASSIGNMENT, API_KEY, r"\1<API_KEY>")
        if "Bearer" in text or "Basic" in text:
            constant(_BEARER, BEARER_TOKEN, r"\1 <BEARER_TOKEN>")
        if "eyJ" in text:
            constant(_JWT, BEARER_TOKEN, "<BEARER_TOKEN>")
        if "@" in text:
            constant(_EMAIL, EMAIL, "<EMAIL>")
        if _DIGITS.isdisjoint(text):
            return text
        text = _IBAN.sub(_checked(IBAN, _iban_ok, bump), text)
        text = _CARD.sub(_checked(CREDIT_CARD, _card_ok, bump), text)
        if "ssn" in lowered or "social security" in lowered:
            text = _SSN_LABELLED.sub(_labelled(US_SSN, _ssn_value_ok, bump), text)
        text = _SSN_DASHED.sub(_checked(US_SSN, _ssn_ok, bump), text)
        if "mrn" in lowered or "medical record" in lowered or "patient" in lowered:
            constant(_MRN, MRN, r"\1<MRN>")
        if "." in text:
            text = _IPV4.sub(_checked(IP_ADDRESS, _ipv4_ok, bump), text)
        if text.count(":") >= 2:
            text = _IPV6.sub(_checked(IP_ADDRESS, _ipv6_ok, bump), text)
        text = _DATE_NUMERIC.sub(_checked(DATE, _date_ok, bump), text)
        if any(hint in lowered for hint in _MONTH_HINTS):
            constant(_DATE_WORDS, DATE, "<DATE>")
        text = _PHONE.sub(_checked(PHONE, _phone_ok, bump), text)
        return text


def _checked(
    name: str, valid: Callable[[Match], bool], bump: Callable[[str, int], None]
) -> Callable[[Match], str]:
    placeholder = f"<{name}>"

    def replace(m: Match) -> str:
        if valid(m):
            bump(name, 1)
            return placeholder
        return m.group(0)

    return replace


def _ssn_value_ok(m: Match) -> bool:
    return _ssn_digits_ok(m.group(2).replace("-", ""))


def _labelled(
    name: str, valid: Callable[[Match], bool], bump: Callable[[str, int], None]
) -> Callable[[Match], str]:
    """Replace group 2 (the value) and keep group 1 (its label)."""
    placeholder = f"<{name}>"

    def replace(m: Match) -> str:
        if valid(m):
            bump(name, 1)
            return m.group(1) + placeholder
        return m.group(0)

    return replace


def _keep_trailing(name: str, bump: Callable[[str, int], None]) -> Callable[[re.Match[str]], str]:
    placeholder = f"<{name}>"

    def replace(m: re.Match[str]) -> str:
        found = m.group(0)
        stripped = found.rstrip(_URL_TRAIL)
        bump(name, 1)
        return placeholder + found[len(stripped) :]

    return replace


def _compile_tenant(config: RedactionConfig) -> list[tuple[str, re.Pattern[str]]]:
    passes: list[tuple[str, re.Pattern[str]]] = []
    for raw_name, pattern in config.patterns.items():
        name = _entity_name(raw_name)
        try:
            passes.append((name, re.compile(pattern)))
        except re.error as exc:
            raise RedactionConfigError(
                f"redaction pattern {raw_name!r} is not a valid regular expression: {exc}"
            ) from exc
    for raw_name, terms in config.dictionaries.items():
        name = _entity_name(raw_name)
        words = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
        if not words:
            raise RedactionConfigError(f"redaction dictionary {raw_name!r} has no terms")
        alternation = "|".join(re.escape(w) for w in words)
        passes.append((name, re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)))
    return passes


def _entity_name(raw: str) -> str:
    name = raw.strip().upper().replace("-", "_").replace(" ", "_")
    if not _TENANT_NAME.fullmatch(name):
        raise RedactionConfigError(
            f"redaction entity name {raw!r} must be letters, digits and underscores (e.g. 'ticket_id')"
        )
    if name in ENTITY_TYPES:
        raise RedactionConfigError(f"redaction entity name {raw!r} collides with the built-in type <{name}>")
    return name
