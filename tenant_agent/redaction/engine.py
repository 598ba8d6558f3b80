"""The Redactor: tenant passes, secrets, then the built-in recognizers, then detectors.

Speed comes from gates. ``gates_of`` looks at the text once (C-level scans:
is there a digit, the longest digit run, an upper-case letter next to a digit,
a dotted name, and every keyword any recognizer needs, found by one compiled
alternation); a recognizer whose gate is closed costs one integer test. A
300-character sentence with no personal data runs a handful of passes.
Passes run from the most specific to the most generic (URLs before the
e-mails and addresses inside them, context-bound numbers before checksummed
ones, checksummed numbers before phones), and a placeholder never matches a
later pass.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aggregation.errors import FedsignalError
from tenant_agent.redaction import addresses
from tenant_agent.redaction.recognizers import (
    BUILTIN,
    CONTEXT_WINDOW,
    G_DIGIT,
    URL,
    Recognizer,
    _url_replace,
    combined_scanner,
    gates_of,
)

#: Every built-in entity type; each is replaced by ``<TYPE>``. See docs/redaction.md.
ENTITY_TYPES = (
    "URL", "API_KEY", "BEARER_TOKEN", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "MRN", "IP_ADDRESS", "DATE",
    "PHONE", "US_ITIN", "UK_NHS", "CA_SIN", "AU_TFN", "AU_ABN", "AU_MEDICARE", "IN_AADHAAR", "NATIONAL_ID",
    "NPI", "ABA_ROUTING", "MEDICAL_LICENSE", "PASSPORT", "DRIVER_LICENSE", "INSURANCE_ID", "BANK_ACCOUNT",
    "CRYPTO_WALLET", "VAT_ID", "IN_GSTIN", "IN_PAN", "SG_NRIC", "DEA", "MBI", "UK_NINO", "KR_RRN",
    "UK_POSTCODE", "MAC_ADDRESS", "PERSON", "STREET_ADDRESS",
)  # fmt: skip

_TENANT_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
_A = re.ASCII


class RedactionConfigError(FedsignalError):
    """A tenant redaction pattern, dictionary or detector that cannot be used."""


@runtime_checkable
class EntityDetector(Protocol):
    """A plug-in recogniser a tenant installs itself (an NER model, a lookup service).

    ``detect`` gets the text *after* the built-in passes (placeholders already in
    it) and returns ``(start, end, entity_type)`` spans over that text; overlapping
    spans are merged, spans over placeholders are ignored. ``entity_type`` is an
    upper-case name (``PERSON``, ``LOCATION``). The collector never needs one."""

    def detect(self, text: str) -> Iterable[tuple[int, int, str]]: ...


@dataclass(frozen=True)
class RedactionConfig:
    """Tenant-specific identifiers: ``patterns`` maps an entity name to a regular
    expression, ``dictionaries`` maps an entity name to literal terms (matched
    case-insensitively on word boundaries). Names become placeholders
    (``ticket_id`` → ``<TICKET_ID>``). ``person_names`` are the tenant's own name
    dictionary (staff, patients), replaced by ``<PERSON>``; ``detectors`` are
    ``EntityDetector`` plug-ins run last."""

    patterns: dict[str, str] = field(default_factory=dict)
    dictionaries: dict[str, list[str]] = field(default_factory=dict)
    person_names: list[str] = field(default_factory=list)
    detectors: tuple[EntityDetector, ...] = ()


# -- secrets and the label-bound passes (unchanged from the first redactor) ---------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]++@[A-Za-z0-9\-]++(?:\.[A-Za-z0-9\-]++)*\.[A-Za-z]{2,}\b", _A
)
# The patterns below start with a character (class) and check their boundary by look-behind
# after it (see recognizers.fast_start): re skips ahead to the characters that can start a
# match instead of trying the pattern at every position. Case-insensitive parts are scoped
# after that first class: under IGNORECASE a class with letters gives re no prefix to skip on.
_API_KEY = re.compile(
    r"[sprAgx\-](?:(?<!\w.)(?:(?<=s)k-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}"
    r"|(?<=[spr])k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?<=A)(?:KIA|SIA)[0-9A-Z]{16}"
    r"|(?<=g)h[pousr]_[A-Za-z0-9]{36,}"
    r"|(?<=g)ithub_pat_[A-Za-z0-9_]{22,}"
    r"|(?<=x)ox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|(?<=A)Iza[0-9A-Za-z_\-]{35}"
    r"|(?<=g)lpat-[A-Za-z0-9_\-]{20,})"
    # Bounded: an unterminated BEGIN line must not make the scan quadratic.
    r"|(?<=-)----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[\s\S]{0,10000}?-----END [A-Z ]{0,20}PRIVATE KEY-----)",
    _A,
)
# "password=…", "api_key: …": keep the name, redact the value.
_SECRET_ASSIGNMENT = re.compile(
    r"([aAsScCpP](?<!\w.)(?i:(?<=a)(?:pi[_\-]?key|pikey|ccess[_\-]?token|uth[_\-]?token)|(?<=s)ecret(?:[_\-]?key)?"
    r"|(?<=c)lient[_\-]?secret|(?<=p)(?:assword|asswd|wd))\s*[:=]\s*[\"']?)([^\s\"',;]{6,})",
    _A,
)
_BEARER = re.compile(r"(B(?<!\w.)(?:earer|asic))\s+[A-Za-z0-9\-._~+/]{8,}=*", _A)
_JWT = re.compile(r"eyJ(?<!\weyJ)[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*", _A)
# "SSN 123456789": nine bare digits only count next to the word.
_SSN_LABELLED = re.compile(
    r"([sS](?<!\w.)(?i:sn|ocial security(?: number| no\.?)?)(?i:\s*(?:is\s+)?[:#]?\s*))([0-9]{3}-?[0-9]{2}-?[0-9]{4})\b",
    _A,
)
_MRN = re.compile(
    r"([mMpPcC](?<!\w.)(?i:(?<=m)(?:rn|edical record(?: number| no\.?| #)?)|(?<=p)atient (?:id|number)"
    r"|(?<=c)hart (?:no\.?|number|#))(?i:\s*(?:is\s+)?[:#]?\s*))((?i:[A-Z]{0,3})-?[0-9]{5,10})\b",
    _A,
)
_API_KEY_HINTS = (
    "sk-", "sk_", "pk_", "rk_", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "xox", "AIza", "glpat-", "PRIVATE KEY",
)  # fmt: skip


def _api_key_hint(text: str) -> bool:
    """True when one of ``_API_KEY_HINTS`` may be in ``text`` (a superset, in a few substring
    searches: most texts have no '_' or '-' and none of the capitalised prefixes)."""
    if "_" in text and ("k_" in text or "gh" in text):
        return True
    if "-" in text and ("sk-" in text or "glpat-" in text):
        return True
    # A one-character search is a memchr; a longer one scans with a skip table, several times slower.
    if "A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text):
        return True
    return ("x" in text and "xox" in text) or ("Y" in text and "PRIVATE KEY" in text)
_PLAIN_LABELS_MAX = 65_536
# What a lower-case label without whitespace must contain to hold an entity at all (see
# Redactor.redact_label); with four to six digits, also one of _LABEL_NUMERIC_RISK. Every
# built-in entity with seven digits or more runs the passes.
_LABEL_RISK = re.compile(
    r"[@:/=+(]|\.[a-z]|www\.|sk[-_]|[pr]k_|gh[pousr]_|github_pat_|xox|glpat-|bc1|tb1|0x|private key"
)
_LABEL_NUMERIC_RISK = re.compile(
    r"[0-9][.\-][0-9]|mrn|medical|patient|chart|ssn|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
    # the context words of the recognizers that take four to six digits
    r"|passport|licen|driv|dl|member|insur|polic|subscriber|medicaid|health plan|physician"
)
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _emails(text: str, counts: dict[str, int]) -> str:
    """``_EMAIL.sub("<EMAIL>", text)``, tried only where an address can start: every match holds
    one '@', and begins where the run of local-part characters before it begins (the pattern's
    look-behind and possessive run), so the pattern runs once per '@' instead of at every
    position of the text. A run that began inside the previous match gives none (re resumes
    the search after that match, where every position inside the run follows a local-part
    character)."""
    pieces: list[str] = []
    last = 0
    at = text.find("@")
    while at >= 0:
        start = at
        while start > last and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        m = None
        if start < at and not (start == last and last and text[last - 1] in _EMAIL_LOCAL):
            m = _EMAIL.match(text, start)
        if m is None:
            at = text.find("@", at + 1)
            continue
        pieces.append(text[last:start])
        pieces.append("<EMAIL>")
        last = m.end()
        at = text.find("@", last)
    if not pieces:
        return text
    pieces.append(text[last:])
    counts["EMAIL"] = counts.get("EMAIL", 0) + len(pieces) // 2
    return "".join(pieces)


def _ssn_digits_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


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
        self._detectors = tuple(self.config.detectors)
        for detector in self._detectors:
            if not isinstance(detector, EntityDetector):
                raise RedactionConfigError(f"redaction detector {detector!r} has no detect(text) method")
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
        text = _builtin(text, counts)
        if self._detectors:
            text = self._detect(text, counts)
        if counts:
            with self._lock:
                stats = self._stats
                for name, n in counts.items():
                    stats[name] = stats.get(name, 0) + n
        return text

    def redact_label(self, value: str) -> str:
        """A short categorical string (intent, tool name, error type, id) redacted.

        Ids are unique, so the common shape of one — lower case, no whitespace, at most
        forty characters, fewer than seven digits (``sess-4711``, ``lookup_order``) — skips
        the passes when it has none of the marks an entity needs (``_LABEL_RISK``: ``@ : / =``,
        a dotted name, a secret or wallet prefix; and with four to six digits
        ``_LABEL_NUMERIC_RISK``: digits around ``.``/``-``, a keyword of the MRN and date
        passes, or of the context-bound recognizers that take so few digits). Labels repeat,
        so the ones that come back unchanged are remembered."""
        plain = self._plain_labels
        if value in plain:
            return value
        cleaned = value if self._plain_shape(value) else self.redact(value)
        if cleaned == value:
            if len(plain) >= _PLAIN_LABELS_MAX:
                plain.clear()
            plain.add(value)
        return cleaned

    def _plain_shape(self, value: str) -> bool:
        if self._tenant_passes or self._detectors or len(value) > 40 or " " in value or not value.isprintable():
            return False
        if value.lower() != value or _LABEL_RISK.search(value):
            return False
        digits = len(value) - len(value.translate(_DROP_DIGITS))
        return digits < 4 or (digits < 7 and not _LABEL_NUMERIC_RISK.search(value))

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        return [self.redact(t) for t in texts]

    def _detect(self, text: str, counts: dict[str, int]) -> str:
        spans: list[tuple[int, int, str]] = []
        for detector in self._detectors:
            for start, end, label in detector.detect(text):
                name = _entity_name(label, allow_builtin=True)
                if 0 <= start < end <= len(text):
                    spans.append((start, end, name))
        if not spans:
            return text
        protected = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
        spans.sort()
        merged: list[tuple[int, int, str]] = []
        for start, end, name in spans:
            if any(s < end and start < e for s, e in protected):
                continue
            if merged and start < merged[-1][1]:
                last = merged[-1]
                merged[-1] = (last[0], max(last[1], end), last[2])
            else:
                merged.append((start, end, name))
        pieces, position = [], 0
        for start, end, name in merged:
            pieces.append(text[position:start])
            pieces.append(f"<{name}>")
            counts[name] = counts.get(name, 0) + 1
            position = end
        pieces.append(text[position:])
        return "".join(pieces)


def _builtin(text: str, counts: dict[str, int]) -> str:
    def constant(pattern: re.Pattern[str], name: str, replacement: str) -> None:
        nonlocal text
        text, n = pattern.subn(replacement, text)
        if n:
            counts[name] = counts.get(name, 0) + n

    # Each substring test behind a one-character one (memchr): most texts have no ':', '.', 'B', 'J'.
    if (":" in text and "://" in text) or ("." in text and ("www." in text or "WWW." in text)):
        text = URL.sub(_replacer("URL", None, _url_replace, None, 0, counts), text)
    if _api_key_hint(text):
        constant(_API_KEY, "API_KEY", "<API_KEY>")
    lowered = text.lower()
    # The names _SECRET_ASSIGNMENT knows: api?key, access?token, auth?token, secret, client?secret,
    # password, passwd, pwd (a bare "key" or "token" is none of them).
    if ("=" in text or ":" in text) and (  # inline: a generator costs more than the searches
        "secret" in lowered or "pwd" in lowered or "passw" in lowered or ("key" in lowered and "api" in lowered)
        or ("token" in lowered and ("access" in lowered or "auth" in lowered))
    ):  # fmt: skip
        constant(_SECRET_ASSIGNMENT, "API_KEY", r"\1<API_KEY>")
    if "B" in text and ("Bearer" in text or "Basic" in text):
        constant(_BEARER, "BEARER_TOKEN", r"\1 <BEARER_TOKEN>")
    if "J" in text and "eyJ" in text:
        constant(_JWT, "BEARER_TOKEN", "<BEARER_TOKEN>")
    if "@" in text:
        text = _emails(text, counts)
    gates = gates_of(text)
    if gates & G_DIGIT:
        if "ssn" in lowered or "social security" in lowered:
            text = _SSN_LABELLED.sub(_labelled_ssn(counts), text)
        if "mrn" in lowered or "medical record" in lowered or "patient" in lowered or "chart" in lowered:
            constant(_MRN, "MRN", r"\1<MRN>")
    for rec in _context_before(gates, lowered):
        if rec.context is not None:
            text = _context_pass(rec, rec.context, text, counts)
        else:
            text = rec.pattern.sub(_replacer(rec.entity, rec.validate, rec.replace, None, rec.group, counts), text)
    text = _scan(text, gates, counts)
    if addresses.may_have_others(lowered, bool(gates & G_DIGIT)):
        text = _spans(text, addresses.other_spans(text, text.lower()), "STREET_ADDRESS", counts)
    for rec in _AFTER:
        if not rec.gates & ~gates and _has_keyword(rec.keywords, lowered):
            text = rec.pattern.sub(_replacer(rec.entity, rec.validate, rec.replace, rec.context, rec.group, counts), text)
    return text


_CONTEXT = tuple(rec for rec in BUILTIN if rec.stage == "context")
_BEFORE = tuple(rec for rec in BUILTIN if rec.stage == "before")
_AFTER = tuple(rec for rec in BUILTIN if rec.stage == "after")
_CONTEXT_BEFORE = _CONTEXT + _BEFORE
_COMBINED = tuple(rec for rec in BUILTIN if rec.stage == "combined")
# Per feature set (the gates: ten bits), the single scan over the recognizers they open.
# Context words are checked per candidate (``_apply``), not here: a text's keywords would
# multiply the scanners, and a context check costs less than a scan.
_SCANNERS: dict[int, tuple[re.Pattern[str] | None, dict[str, tuple[Recognizer, ...]]]] = {}


# Per feature set: the context-bound and "before" recognizers its gates open, and when they
# need many keywords, one alternation of those keywords (see _context_before).
_PLANS: dict[int, tuple[tuple[Recognizer, ...], re.Pattern[str] | None, dict[str, int], int]] = {}
# One substring search over 300 characters costs about as much as the alternation's scan of
# eight characters (measured: ~0.38 us against ~47 ns per character): with more keywords than
# an eighth of the text's length, the alternation runs instead of the searches.
_KEYWORD_SCAN = 8


def _plan(gates: int) -> tuple[tuple[Recognizer, ...], re.Pattern[str] | None, dict[str, int], int]:
    recs = tuple(rec for rec in _CONTEXT_BEFORE if not rec.gates & ~gates)
    words = sorted({k for rec in recs for k in rec.keywords}, key=lambda k: (-len(k), k))
    # A keyword found stands for every recognizer with a keyword starting a word inside it
    # ("social insurance" also holds "insurance"; "routing" holds no "tin"); longer keywords come
    # first at one position, so the one found there holds every other that starts there.
    bits = {
        w: sum(1 << i for i, rec in enumerate(recs) if any(_starts_word_in(k, w) for k in rec.keywords))
        for w in words
    }
    always = sum(1 << i for i, rec in enumerate(recs) if not rec.keywords)
    by_first: dict[str, list[str]] = {}
    for w in words:
        by_first.setdefault(w[0], []).append(re.escape(w[1:]))
    alternation = "|".join(re.escape(f) + "(?:" + "|".join(rest) + ")" for f, rest in by_first.items())
    # Every context word counts only at a word start (see recognizers._context_lower: no letter
    # before it), as do the keywords inside them and the wallet prefixes (``\b``): the scan skips
    # to the characters that are no letters (the text is searched with a space in front) and
    # tries the keywords after them, not at every letter.
    if not all("a" <= w[0] <= "z" for w in words):
        raise ValueError(f"a keyword must start with a letter: {words}")
    scan = re.compile(f"[^a-z]({alternation})")
    plan = _PLANS[gates] = (recs, scan if words else None, bits, always)
    return plan


def _starts_word_in(keyword: str, word: str) -> bool:
    """``keyword`` inside ``word`` at its start or after a non-letter: where it starts a word of a
    text in which ``word`` does ("tin" in "tax tin", not in "routing")."""
    at = word.find(keyword)
    while at >= 0:
        if not at or not "a" <= word[at - 1] <= "z":
            return True
        at = word.find(keyword, at + 1)
    return False


def _context_before(gates: int, lowered: str) -> Iterable[Recognizer]:
    """The context-bound and "before" recognizers to run: their gates open and, when they have
    keywords, one of them in ``lowered``. Few keywords are substring searches; many (digit-rich
    text opens most gates) are one scan of an alternation tried after each non-letter (a
    keyword counts where it starts a word, as the context rule needs), restarted one character
    after each hit so that overlapping keywords are all found."""
    plan = _PLANS.get(gates) or _plan(gates)
    recs, scan, bits, mask = plan
    if scan is None:
        return recs
    if len(bits) * _KEYWORD_SCAN <= len(lowered):
        found = []
        for rec in recs:
            if rec.keywords:
                for keyword in rec.keywords:  # inline: a generator per recognizer costs more than the searches
                    if keyword in lowered:
                        break
                else:
                    continue
            found.append(rec)
        return found
    search = scan.search
    spaced = " " + lowered
    m = search(spaced)
    while m is not None:
        mask |= bits[m.group(1)]
        m = search(spaced, m.start() + 1)
    key = (gates, mask)
    opened = _OPENED.get(key)
    if opened is None:
        if len(_OPENED) >= 4096:
            _OPENED.clear()
        opened = _OPENED[key] = tuple(rec for i, rec in enumerate(recs) if mask >> i & 1)
    return opened


_OPENED: dict[tuple[int, int], tuple[Recognizer, ...]] = {}  # (gates, keyword mask) -> recognizers


def _spans(text: str, spans: list[tuple[int, int]], entity: str, counts: dict[str, int]) -> str:
    """``text`` with each (start, end) span replaced by ``<entity>``; spans over a placeholder are kept."""
    pieces, position, n = [], 0, 0
    for start, end in spans:
        if "<" in text[start:end]:
            continue
        pieces.append(text[position:start])
        pieces.append(f"<{entity}>")
        position = end
        n += 1
    if not n:
        return text
    pieces.append(text[position:])
    counts[entity] = counts.get(entity, 0) + n
    return "".join(pieces)


def _has_keyword(keywords: tuple[str, ...], lowered: str) -> bool:
    return not keywords or any(keyword in lowered for keyword in keywords)


def _scan(text: str, gates: int, counts: dict[str, int]) -> str:
    """The single scan: leftmost candidate first, the alternatives at one position in priority
    order; a candidate whose validation fails is retried with the later alternatives there,
    then the scan moves on by one character (so an entity inside a refused one is still found)."""
    entry = _SCANNERS.get(gates)
    if entry is None:
        recs = tuple(rec for rec in _COMBINED if not rec.gates & ~gates)
        scanner_, families = combined_scanner(recs) if recs else (None, {})
        # For each alternative's group name, the recognizers to try at its position, in order.
        tails = {
            f"a{i}_{family}": tuple(recs[j] for j in members[k:])
            for family, members in families.items()
            for k, i in enumerate(members)
        }
        entry = _SCANNERS[gates] = (scanner_, tails)
    scanner, tails = entry
    if scanner is None:
        return text
    search = scanner.search
    m = search(text)
    if m is None:
        return text
    out: list[str] = []
    last = 0
    while m is not None:
        start = m.start()
        done = None
        for position, rec in enumerate(tails[m.lastgroup or ""]):
            if rec.span is not None:
                real = m if position == 0 and rec.whole else rec.pattern.match(text, start)
                around = None if real is None else rec.span(real, last)
                if around is not None:
                    counts[rec.entity] = counts.get(rec.entity, 0) + 1
                    start = around[0]
                    done = (around[1], rec.placeholder)
                    break
                continue
            if position == 0 and rec.replace is None and rec.group == 0 and rec.context is None:
                # The scanner's own match is this recognizer's match: no second regex run.
                end = m.end()
                if rec.validate is None or rec.validate(text[start:end]):
                    counts[rec.entity] = counts.get(rec.entity, 0) + 1
                    done = (end, rec.placeholder)
                    break
                continue
            real = m if position == 0 and rec.whole else rec.pattern.match(text, start)
            if real is None:
                continue
            replacement = _apply(rec, real, counts)
            if replacement is not None:
                done = (real.end(), replacement)
                break
        if done is None:
            m = search(text, start + 1)
            continue
        end, replacement = done
        out.append(text[last:start])
        out.append(replacement)
        last = end
        m = search(text, end) if end > start else search(text, start + 1)
    out.append(text[last:])
    return "".join(out)


def _context_pass(rec: Recognizer, context: re.Pattern[str], text: str, counts: dict[str, int]) -> str:
    """A context-bound recognizer: its candidates are looked for only where they may start,
    from the end of each context word to ``CONTEXT_WINDOW`` characters after its start (the
    rule of ``_apply``: a context word within the window before the value), instead of a
    callback for every candidate in the text."""
    out: list[str] = []
    last = 0
    finditer = rec.pattern.finditer
    lowered = text.lower()
    # Lower-casing keeps the positions unless a character grows (İ -> i̇): then the slower pattern.
    cues = rec.context_lower.finditer(lowered) if rec.context_lower and len(lowered) == len(text) else (
        context.finditer(text)
    )
    for cue in cues:
        limit = cue.start() + CONTEXT_WINDOW
        for m in finditer(text, max(cue.end(), last)):
            if m.start() > limit:
                break
            replacement = _apply(rec, m, counts, False)
            if replacement is not None:
                out.append(text[last : m.start()])
                out.append(replacement)
                last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _apply(rec: Recognizer, m: re.Match[str], counts: dict[str, int], check_context: bool = True) -> str | None:
    """The replacement of one candidate match, or None when it is not this entity."""
    if check_context and rec.context is not None:
        start = m.start()
        if not rec.context.search(m.string, max(0, start - CONTEXT_WINDOW), start):
            return None
    placeholder = rec.placeholder
    if rec.replace is not None:
        out = rec.replace(m)
        if out is not None:
            counts[rec.entity] = counts.get(rec.entity, 0) + out.count(placeholder)
        return out
    if rec.validate is not None and not rec.validate(m.group(rec.group)):
        return None
    counts[rec.entity] = counts.get(rec.entity, 0) + 1
    if rec.group == 0:
        return placeholder
    whole, offset = m.group(0), m.start()
    return whole[: m.start(rec.group) - offset] + placeholder + whole[m.end(rec.group) - offset :]


def _replacer(
    name: str,
    validate: Callable[[str], bool] | None,
    replace: Callable[[re.Match[str]], str | None] | None,
    context: re.Pattern[str] | None,
    group: int,
    counts: dict[str, int],
) -> Callable[[re.Match[str]], str]:
    placeholder = f"<{name}>"

    def sub(m: re.Match[str]) -> str:
        if context is not None:
            start = m.start()
            if not context.search(m.string, max(0, start - CONTEXT_WINDOW), start):
                return m.group(0)
        if replace is not None:
            out = replace(m)
            if out is None:
                return m.group(0)
            counts[name] = counts.get(name, 0) + out.count(placeholder)
            return out
        if validate is not None and not validate(m.group(group)):
            return m.group(0)
        counts[name] = counts.get(name, 0) + 1
        if group == 0:
            return placeholder
        whole = m.group(0)
        offset = m.start()
        return whole[: m.start(group) - offset] + placeholder + whole[m.end(group) - offset :]

    return sub


def _labelled_ssn(counts: dict[str, int]) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        if _ssn_digits_ok(m.group(2).replace("-", "")):
            counts["US_SSN"] = counts.get("US_SSN", 0) + 1
            return m.group(1) + "<US_SSN>"
        return m.group(0)

    return replace


def builtin_recognizers() -> tuple[Recognizer, ...]:
    """The built-in recognizers in the order they run (for docs and tests)."""
    return BUILTIN


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
    dictionaries = [(_entity_name(raw), raw, terms) for raw, terms in config.dictionaries.items()]
    if config.person_names:
        dictionaries.append(("PERSON", "person_names", config.person_names))
    for name, raw_name, terms in dictionaries:
        words = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
        if not words:
            raise RedactionConfigError(f"redaction dictionary {raw_name!r} has no terms")
        alternation = "|".join(re.escape(w) for w in words)
        passes.append((name, re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)))
    return passes


def _entity_name(raw: str, *, allow_builtin: bool = False) -> str:
    name = raw.strip().upper().replace("-", "_").replace(" ", "_")
    if not _TENANT_NAME.fullmatch(name):
        raise RedactionConfigError(
            f"redaction entity name {raw!r} must be letters, digits and underscores (e.g. 'ticket_id')"
        )
    if name in ENTITY_TYPES and not allow_builtin:
        raise RedactionConfigError(f"redaction entity name {raw!r} collides with the built-in type <{name}>")
    return name
