"""The built-in recognizers: one pattern, one validator and one gate each.

A ``Recognizer`` names its entity type (the placeholder is ``<TYPE>``), a
pattern whose group ``group`` is the value to replace, a validator that gets
that value (check digits, date ranges, public suffixes), and a gate: the
cheap facts about the text (``Features``) it needs before its pattern runs at
all. Context-bound recognizers (a bare nine-digit number is an SSN only next
to "SSN") also name their context words; one of them must stand within
``CONTEXT_WINDOW`` characters before the value.

Every pattern is linear on adversarial input: digit and letter runs are
possessive or bounded, and no two adjacent repetitions can share characters.
``tests/redaction/test_adversarial.py`` checks each one by input-size scaling.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from tenant_agent.redaction import addresses
from tenant_agent.redaction import checksums as ck
from tenant_agent.redaction.domains import is_domain

_A = re.ASCII
CONTEXT_WINDOW = 48

# -- gates --------------------------------------------------------------------------
# Features are computed once per text (see Features.of); a recognizer runs only when
# every fact it needs holds. They are supersets: a gate may open for a text with no
# entity, never stay closed for a text with one.
G_DIGIT = 1  # any digit
G_NUM6 = 2  # a run of >= 6 digits (single separators allowed)
G_NUM9 = 4  # ... >= 9 digits
G_NUM12 = 8  # ... >= 12 digits
G_MIXED = 16  # an upper-case letter next to a digit (A1 / 1A)
G_DOT_NUM = 32  # a digit, '.', '/' or '-', a digit
G_COLON2 = 64  # two ':' (IPv6, MAC)
G_DOMAIN = 128  # a letter or digit, '.', two letters
G_NUM7 = 256  # ... >= 7 digits
G_MAC = 512  # five ':'; or a digit and five '-' or two '.' five apart


# Digits with up to three separators between them: every numeric entity's digits lie in one run.
_RUN = re.compile(r"[0-9](?:[\s.\-/()]{0,3}[0-9])*+")
_MIXED = re.compile(r"[A-Z0-9](?:(?<=[A-Z])-?[0-9]|(?<=[0-9])-?[A-Z])")
_DOMAIN_GATE = re.compile(r"\.(?<=[A-Za-z0-9]\.)[A-Za-z]{2}")

@dataclass(frozen=True, slots=True)
class Features:
    """What the gates look at, computed once per text."""

    gates: int

    @staticmethod
    def of(text: str) -> Features:
        return Features(gates_of(text))


def gates_of(text: str) -> int:
    """The gates of ``text`` (see Features): an int, no object per text."""
    gates = 0
    if _has_digit(text):
        gates |= G_DIGIT
        # One pass over the digit runs (every digit lies in one) gives three gates. The longest
        # run in characters bounds its digits from above: a superset, as gates must be, at the
        # price of opening a gate for "1 - 2 - 3" now and then. A digit, '.', '-' or '/', a digit
        # (G_DOT_NUM) lies inside one run; a capital next to a digit (G_MIXED: A1, A-1, 1A, 1-A)
        # touches a run's first or last digit, as no run holds a letter. Searching the whole
        # text for those two instead tries every digit and capital, several times slower on
        # digit-rich text.
        # Past a dozen runs (hex strings, tables) the two searches cost less than the loop.
        most = 0
        dot_num = mixed = False
        for count, m in enumerate(_RUN.finditer(text)):
            if count == _FEW_RUNS:
                most = max(most, *map(len, _RUN.findall(text, m.start())))
                dot_num = dot_num or bool(_DOT_NUM.search(text))
                mixed = mixed or bool(_MIXED.search(text))
                break
            start, end = m.span()
            if end - start > most:
                most = end - start
            if not dot_num and end - start > 2:
                run = m.group()
                if ("." in run or "-" in run or "/" in run) and _DOT_NUM.search(run):
                    dot_num = True
            if not mixed and (
                (start and text[start - 1] in _CAPITALS) or (start > 1 and text[start - 2 : start] in _CAPITAL_DASH)
                or text[end : end + 1] in _CAPITALS
                or text[end : end + 2] in _DASH_CAPITAL
            ):
                mixed = True
        if most >= 6:
            gates |= G_NUM6
            if most >= 7:
                gates |= G_NUM7
                if most >= 9:
                    gates |= G_NUM9
                    if most >= 12:
                        gates |= G_NUM12
        if dot_num:
            gates |= G_DOT_NUM
        if mixed:
            gates |= G_MIXED
    colons = text.count(":")
    if colons >= 2:
        gates |= G_COLON2
    if "." in text and _DOMAIN_GATE.search(text):
        gates |= G_DOMAIN
    if colons >= 5 or (gates & G_DIGIT and (text.count("-") >= 5 or _dots_five_apart(text))):
        gates |= G_MAC
    return gates


def _dots_five_apart(text: str) -> bool:
    """Two consecutive '.' five characters apart, as in a MAC address written 0123.4567.89ab
    (prose with figures has two dots often; the MAC pass tries every hex letter)."""
    i = text.find(".")
    while i >= 0:
        j = text.find(".", i + 1)
        if j - i == 5:
            return True
        i = j
    return False


_FEW_RUNS = 12
_CAPITALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # the empty slice past the text's end is none
_CAPITAL_DASH = frozenset(c + "-" for c in _CAPITALS)
_DASH_CAPITAL = frozenset("-" + c for c in _CAPITALS)


_DIGITS = frozenset("0123456789")


def _has_digit(text: str) -> bool:
    # Ten substring searches (memchr in C) beat one pass over the characters in Python's set.
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    )  # fmt: skip


_DOT_NUM = re.compile(r"[0-9][.\-/][0-9]")


# -- the recognizer record -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recognizer:
    """One entity type's pattern; see the module docstring."""

    entity: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    gates: int = 0
    # One must occur in the lower-cased text (a cheap superset of the context rule), checked
    # only once the gates are open.
    keywords: tuple[str, ...] = ()
    context: re.Pattern[str] | None = None  # must match in the window before the value
    group: int = 0
    # A callback that returns the replacement itself (keep part of the match), used instead of validate.
    replace: Callable[[re.Match[str]], str | None] | None = None
    # "combined": one alternative of the single scan (see combined_scanner); "context", "before",
    # "after": passes of their own, in that order around it (context-bound ones, and patterns whose
    # first character may be any letter, which would make every word a candidate of the scan).
    stage: str = "combined"
    flags: int = _A
    placeholder: str = ""
    # Instead of replace: the (start, end) of the entity around the match, which may begin before
    # it (a street address found from its house number); the single scan only.
    span: Callable[[re.Match[str], int], tuple[int, int] | None] | None = None
    context_lower: re.Pattern[str] | None = None  # the context words, for the lower-cased text
    # replace / span read only the whole match (group 0, start, end, string): the single scan
    # hands them its own match instead of running the pattern again.
    whole: bool = False


def _context_lower(*words: str) -> re.Pattern[str]:
    """``_context(*words)`` for the lower-cased text, written so that re skips ahead: grouped by
    first letter, the boundary checked by look-behind after it (see fast_start). Searching the
    whole text with the IGNORECASE pattern, which starts with a look-behind, is ~4x slower."""
    by_first: dict[str, list[str]] = {}
    for w in words:
        low = w.lower()
        by_first.setdefault(low[0], []).append(re.escape(low[1:]) + (r"(?![a-z])" if len(w) <= 4 else ""))
    return re.compile(
        "|".join(re.escape(first) + r"(?<![a-z].)(?:" + "|".join(rests) + ")" for first, rests in by_first.items())
    )


def _context(*words: str) -> re.Pattern[str]:
    # Short words are whole words ("sin", not "since"); longer ones may be stems ("licen").
    alternatives = [re.escape(w) + (r"(?![a-z])" if len(w) <= 4 else "") for w in words]
    return re.compile(r"(?<![a-z])(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


_NOT_DIGITS = re.compile(r"[^0-9]+")


def _only_digits(value: str) -> str:
    return _NOT_DIGITS.sub("", value)


def _strip(value: str) -> str:
    return value.replace(" ", "").replace("-", "").replace(".", "").replace("/", "")


def _digits_then(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: check(_only_digits(value))


def _stripped_then(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: check(_strip(value))


# -- card numbers ------------------------------------------------------------------------


def card_brand_ok(digits: str) -> bool:
    """True when the issuer prefix (IIN) of ``digits`` issues cards of that length."""
    n = len(digits)
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 in (2131, 1800):
        return n == 15
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return n in (14, 16, 19)
    # JCB is 3528-3589; generators (and some test decks) use the whole 35xx block.
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or p2 == 35 or p2 == 62:
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58) or p4 in (6304, 6759, 6761, 6762, 6763, 6390, 604):
        return 12 <= n <= 19
    return False


def _card_shape_ok(groups: list[str]) -> bool:
    sizes = [len(g) for g in groups]
    if len(sizes) == 1:
        return True
    if sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4:
        return True
    return sizes in ([4, 6, 5], [4, 6, 4])


# Any run of digit groups; the callback finds the cards in it (an expiry or CVV may follow).
# Bounded (eight groups of at most nineteen digits): the single scan retries inside a refused
# candidate, so an unbounded run would cost quadratic time on "1 1 1 1 …".
# The look-ahead (eleven more digits or separators) turns short numbers away inside re.
_CARD_RUN = re.compile(r"[0-9](?<![\w.\-/][0-9])(?=[0-9 ,\-]{11})[0-9]{0,18}+(?:(?:[ \-]|, )[0-9]{1,19}+){0,7}+(?![A-Za-z_])", _A)
_CARD_SPLIT = re.compile(r"([0-9]+)")


def _card_replace(m: re.Match[str]) -> str | None:
    """Find card numbers inside a run of digit groups: a valid card next to another
    group (an expiry, a CVV, an order number) is replaced and the neighbour kept."""
    run = m.group(0)
    if len(run) < 12:
        return None
    if m.start() and _IBAN_HEAD.search(m.string, max(0, m.start() - 40), m.start()):
        return None  # the tail of an IBAN that failed its checksum
    if _whole_run_is_card(run):
        return "<CREDIT_CARD>"
    return _cards_in_run(run)


def _whole_run_is_card(run: str) -> bool:
    """The usual run: one card and nothing else, its groups split by one kind of separator.
    ``_cards_in_run`` would find it first (i = 0, j = every group) by the same test, which this
    makes without splitting the run by a regex (test_recognizers compares the two)."""
    if "," in run or (" " in run and "-" in run):
        return False
    groups = run.split(" " if " " in run else "-")
    if len(groups) > 5:
        return False
    digits = "".join(groups)
    return 12 <= len(digits) <= 19 and _card_shape_ok(groups) and card_brand_ok(digits) and ck.luhn_valid(digits)


def _cards_in_run(run: str) -> str | None:
    """``run`` (digit groups, see _CARD_RUN) with every card in it replaced, or None when none is."""
    parts = _CARD_SPLIT.split(run)  # '', group, sep, group, ..., ''
    groups, seps = parts[1::2], parts[2::2]
    out: list[str] = []
    i = 0
    changed = False
    while i < len(groups):
        found = 0
        # A card does not start in the middle of a run of four-digit groups (an account number).
        inside = i > 0 and len(groups[i - 1]) == 4 and len(groups[i]) == 4 and (i < 2 or seps[i - 1] == seps[i - 2])
        for j in range(min(len(groups), i + 5), i, -1):
            if inside:
                break
            # One separator kind per card number.
            between = seps[i : j - 1]
            if between and (between.count(between[0]) != len(between) or between[0] == ", "):
                continue
            digits = "".join(groups[i:j])
            if 12 <= len(digits) <= 19 and _card_shape_ok(groups[i:j]) and card_brand_ok(digits) and (
                ck.luhn_valid(digits)
            ):
                found = j
                break
        if found:
            out.append("<CREDIT_CARD>")
            out.append(seps[found - 1] if found - 1 < len(seps) else "")
            i = found
            changed = True
        else:
            out.append(groups[i])
            out.append(seps[i] if i < len(seps) else "")
            i += 1
    return "".join(out) if changed else None


# -- IBANs ------------------------------------------------------------------------------

_IBAN_RUN = re.compile(r"[A-Z](?<![\w][A-Z])[A-Z][0-9]{2}(?:[ \-]?[A-Z0-9]){10,32}+", _A)


def _iban_replace(m: re.Match[str]) -> str | None:
    """An IBAN is as long as its country's registry entry says; what follows it (a BIC,
    a currency, more words in capitals) is kept."""
    run = m.group(0)
    expected = ck.IBAN_LENGTHS.get(run[:2])
    if expected is None:
        return None
    # The run is capitals and digits with single ' ' or '-' between: its first ``expected``
    # of those, found by re instead of a loop over the characters.
    head = _IBAN_PREFIX.get(expected)
    if head is None:
        head = _IBAN_PREFIX[expected] = re.compile(rf"(?:[ \-]?[A-Z0-9]){{{expected}}}", _A)
    found = head.match(run)
    if found is not None:
        candidate, rest = run[: found.end()], run[found.end() :]
        if rest[:1].isalnum() and not rest[:1].isalpha():
            return None  # more digits glued on: a longer account number, not this IBAN
        # Groups of four are how IBANs are written: a group cut short is not this IBAN.
        if rest[:1].isalpha() and (" " in candidate or "-" in candidate):
            return None
        if ck.iban_valid(candidate):
            return "<IBAN>" + rest
    # A registry length mismatch with a valid mod-97 checksum (a generator bug, a country that
    # changed its format) is still an IBAN when the run ends at a word boundary.
    compact = run.replace(" ", "").replace("-", "")
    at_boundary = m.end() == len(m.string) or not m.string[m.end()].isalnum()
    if 15 <= len(compact) <= 34 and at_boundary and _mod97(compact):
        return "<IBAN>"
    return None


_IBAN_PREFIX: dict[int, re.Pattern[str]] = {}  # registry length -> its prefix pattern


def _mod97(compact: str) -> bool:
    return int((compact[4:] + compact[:4]).translate(_LETTER_DIGITS)) % 97 == 1


_LETTER_DIGITS = {ord(ch): str(ord(ch) - 55) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


# -- dates ------------------------------------------------------------------------------

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
DATE_NUMERIC = re.compile(
    r"[0-9](?<![\w.\-/:][0-9])(?:[0-9]{3}([-/.])[0-9]{1,2}\1[0-9]{1,2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+\-][0-9]{2}:?[0-9]{2})?)?"
    r"|[0-9]?([/.\-])[0-9]{1,2}\2(?:[0-9]{4}|[0-9]{2}))(?![\w]|[.\-/:][0-9])",
    _A,
)
_VERSION_WORDS = re.compile(r"(?i)(?:\bv|version|release|build|upgrade|ver\.?|rev|tag|python|node|api)\s*$")


def _date_numeric_replace(m: re.Match[str]) -> str | None:
    found = m.group(0)
    if m.group(1):  # year first: yyyy-mm-dd, yyyy/mm/dd, yyyy.mm.dd
        sep = m.group(1)
        year, month, day = (int(p[:2]) if i == 2 else int(p) for i, p in enumerate(found[:10].split(sep)[:3]))
        if sep == "." and (
            not 1900 <= year <= 2099 or _VERSION_WORDS.search(m.string[max(0, m.start() - 16) : m.start()])
        ):
            return None  # release 2026.2.4 is a version
        return "<DATE>" if 1 <= month <= 12 and 1 <= day <= 31 and year >= 1000 else None
    sep = m.group(2)
    first, second, year_text = found.split(sep)
    a, b = int(first), int(second)
    if not (1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12):
        return None
    if sep == "." and len(year_text) != 4:
        # 21.5.21 is a date, 3.12.1 a version: two-digit years need a two-digit day or
        # month and no version word before them.
        window = m.string[max(0, m.start() - 16) : m.start()]
        if (len(first) < 2 and len(second) < 2) or _VERSION_WORDS.search(window):
            return None
    return "<DATE>"


# A month name after its first letter, for patterns that start with the letter (see fast_start).
_MONTH_TAIL = (
    r"(?:(?<=[Jj])(?:an(?:uary)?|une?|uly?)|(?<=[Ff])eb(?:ruary)?|(?<=[Mm])(?:ar(?:ch)?|ay)"
    r"|(?<=[Aa])(?:pr(?:il)?|ug(?:ust)?)|(?<=[Ss])ep(?:t(?:ember)?)?|(?<=[Oo])ct(?:ober)?"
    r"|(?<=[Nn])ov(?:ember)?|(?<=[Dd])ec(?:ember)?)"
)
# 5 May 2021, 5-May-2021, 5th of May, 2021, 05/May/21.
DATE_DAY_MONTH = re.compile(
    rf"[0-9](?<!\w.)[0-9]?(?:st|nd|rd|th)?(?:\s+(?:of\s+)?|-|/|\.\s*){_MONTH}\.?(?:,?\s+|-|/)"
    rf"(?:[0-9]{{4}}|[0-9]{{2}})\b",
    _A | re.IGNORECASE,
)
# May 5, 2021; May 2021; May-2021; Sept. 2023 (the month capitalised: "may 2021" is a verb).
DATE_MONTH_FIRST = re.compile(
    rf"[JFMASOND](?<!\w.)(?i:{_MONTH_TAIL})\.?(?:\s+(?:0?[1-9]|[12][0-9]|3[01])(?:st|nd|rd|th)?,?\s+[0-9]{{4}}"
    rf"|(?:\s+|-|/|,\s*)[12][0-9]{{3}})\b",
    _A,
)


def _day_ok(value: str) -> bool:
    day = int("".join(ch for ch in value[:2] if ch.isdigit()))
    return 1 <= day <= 31


# Month and year in digits (05/2021, 5/21): a fraction or a ratio as often as a date.
DATE_MONTH_YEAR = re.compile(
    r"[0-9](?<![\w.\-/:][0-9])[0-9]?([/\-.])(?:[12][0-9]{3}|[0-9]{2})(?![\w]|[.\-/:][0-9])", _A
)
_DATE_CONTEXT = _context(
    "dob", "born", "birth", "date", "on", "since", "from", "until", "exp", "expires", "expiry", "dated",
    "visit", "admitted", "discharged", "seen", "valid", "due",
)


def _date_month_year_replace(m: re.Match[str]) -> str | None:
    found = m.group(0)
    month_text, year_text = found.split(m.group(1))
    if not 1 <= int(month_text) <= 12:
        return None
    if len(year_text) == 4:
        if not 1900 <= int(year_text) <= 2099 or m.group(1) == ".":
            return None
        return "<DATE>"
    window = m.string[max(0, m.start() - 24) : m.start()]
    words = window.split()
    if m.group(1) == "/" and words and _DATE_CONTEXT.fullmatch(words[-1].rstrip(":,")):
        return "<DATE>"
    return None


# -- network addresses ------------------------------------------------------------------

IPV4 = re.compile(
    r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:/[0-9]{1,2}(?![0-9]))?(?![\w]|\.[0-9])",
    _A,
)


def _ipv4_ok(value: str) -> bool:
    address, _, prefix = value.partition("/")
    return all(int(octet) <= 255 for octet in address.split(".")) and (not prefix or int(prefix) <= 32)


# Hex groups never swallow the first octet of an embedded IPv4 address (::ffff:192.0.2.1).
_HEX_GROUP = r"(?::[0-9A-Fa-f]{0,4}+(?![0-9A-Fa-f]|\.[0-9]))"
IPV6 = re.compile(
    rf"[0-9A-Fa-f:](?<![\w:.].)(?:(?<=[0-9A-Fa-f])[0-9A-Fa-f]{{0,3}}{_HEX_GROUP}{{1,7}}+"
    rf"|(?<=:){_HEX_GROUP}{{1,7}}+|(?<=:))"
    r"(?::?(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?:%[A-Za-z0-9_.\-]{1,32}+)?(?:/[0-9]{1,3}(?![0-9]))?(?![\w:])",
    _A,
)


def _ipv6_ok(value: str) -> bool:
    address, _, prefix = value.partition("/")
    if address.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return not prefix or int(prefix) <= 128


MAC = re.compile(
    r"[0-9A-Fa-f](?<![\w:\-.].)[0-9A-Fa-f](?:([:\-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{2}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:\-]|\.[0-9A-Fa-f])",
    _A,
)


def _mac_ok(value: str) -> bool:
    # A MAC carries letters or is written in pairs with ':' / '-'; '.' triplets need a hex letter
    # (1234.5678.9012 is a serial number).
    return "." not in value or any(ch.isalpha() for ch in value)


DOMAIN = re.compile(
    r"[A-Za-z0-9](?<![\w.@\-/].)(?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.(?=[A-Za-z0-9])"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.(?=[A-Za-z0-9]))*+[A-Za-z]{2,63}+(?![\w\-@]|\.[A-Za-z0-9])",
    _A,
)

URL = re.compile(r"[hHfFwW](?<!\w.)(?i:(?<=h)ttps?://|(?<=f)tp://|(?<=w)ww\.)[^\s<>\"'`]+", _A)
_URL_TRAIL = ".,;:!?)]}"


def _url_replace(m: re.Match[str]) -> str | None:
    found = m.group(0)
    stripped = found.rstrip(_URL_TRAIL)
    if found[:4].lower() == "www.":
        host = re.split(r"[/:?#]", stripped, maxsplit=1)[0]
        if not is_domain(host):
            return None  # www.example without a public suffix is not an address
    return "<URL>" + found[len(stripped) :]


# -- phones -----------------------------------------------------------------------------

_PHONE_TAIL = r"[0-9](?<![0-9][0-9])[0-9]{1,3}+(?:[\s.\-]?[0-9]{1,4}+){1,5}"
_EXTENSION = r"(?:\s?(?:x|ext\.?|extension)\s?[0-9]{1,5}+)?"
_INTL_REST = (
    r"[0-9]{1,3}[\s.\-]?(?:\(0\)[\s.\-]?)?(?:\([0-9]{1,4}\)[\s.\-]?)?[0-9]{1,5}+(?:[\s.\-]?[0-9]{1,5}+){1,6}"
)
# The first character is consumed by a class and each branch checks it by look-behind, so
# re can skip ahead to candidates (see fast_start).
PHONE = re.compile(
    rf"[+(0-9](?:(?<=\+){_INTL_REST}|(?<=0)0{_INTL_REST}"
    rf"|(?<=1)[\s.\-](?:\([0-9]{{3}}\)|[0-9]{{3}})[\s.\-]?[0-9]{{3}}[\s.\-][0-9]{{4}}"
    rf"|(?<=\()\+?[0-9]{{1,5}}\)[\s.\-]?{_PHONE_TAIL}"
    rf"|(?<=[0-9])(?<![0-9][0-9])(?=[0-9\s.\-]{{6}})[0-9]{{1,3}}+(?:[\s.\-]?[0-9]{{1,4}}+){{1,5}})"
    rf"{_EXTENSION}(?![\w]|[.\-/][0-9])",
    _A,
)
_PHONE_NOT_AFTER = frozenset("+-./_#") | _DIGITS | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SSN_SHAPE = re.compile(r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}")
_NANP_SHAPE = re.compile(r"(?:1[-. ])?(?:[0-9]{3}[-. ]|\([0-9]{3}\) ?)?[0-9]{3}[-. ][0-9]{4}")
# Its boundary after the first capital (see fast_start): re skips to capitals in the window.
_IBAN_HEAD = re.compile(r"[A-Z](?<!\w.)[A-Z][0-9]{2}(?:[ \-]?[A-Z0-9]{4})* ?$", _A)
_EXT = re.compile(r"\s?(?:x|ext\.?|extension)\s?[0-9]+$")
_PHONE_CONTEXT = re.compile(
    r"(?i)(?<![a-z])(?:phone|call|tel|mobile|cell|fax|sms|text|whatsapp|number is|contact|reach|dial)(?![a-z])"
)
# Mobile numbers written without a trunk prefix or separators: CN 1[3-9]x xxxx xxxx.
_CN_MOBILE = re.compile(r"1[3-9][0-9](?:[ \-]?[0-9]{4}){2}")


def _phone_replace(m: re.Match[str]) -> str | None:
    start = m.start()
    text = m.string
    if start:
        before = text[start - 1]
        if before in _PHONE_NOT_AFTER or (before == " " and start > 1 and text[start - 2] in _DIGITS):
            return None
    found = _EXT.sub("", m.group(0))
    if _SSN_SHAPE.fullmatch(found):
        return None  # 3-2-4 is how SSNs are written, not phones; the SSN pass refused it
    if start and _IBAN_HEAD.search(text, max(0, start - 40), start):
        return None  # the tail of an IBAN that failed its checksum
    digits = len(found) - sum(found.count(ch) for ch in "+()-. \t")
    if found[0] == "+" or found.startswith("00"):  # international: +CC or 00CC
        return "<PHONE>" if 8 <= digits <= (15 if found[0] == "+" else 17) else None
    if not 7 <= digits <= 12:
        return None
    if _PHONE_CONTEXT.search(text, max(0, start - 32), start):
        return "<PHONE>"  # "tel. 7691 5242", "mobile 82624000": national numbers next to a phone word
    # Without a country prefix, only the shapes national numbers are written in: an area
    # code in parentheses, North American 3-3-4 / 3-4, a trunk "0" prefix (020 7946 0958,
    # 06 12 34 56 78, 09171234567), a Chinese mobile. Other digit groups (1234-5678-9012,
    # ZIP+4 94107-1234) are serials, not phones.
    if "(" in found or _CN_MOBILE.fullmatch(found):
        return "<PHONE>"
    if _NANP_SHAPE.fullmatch(found):
        # 116.0154 after "13.5249, " is a coordinate: seven digits split by a dot are a decimal.
        return None if digits == 7 and "." in found else "<PHONE>"
    if found[0] == "0" and found[1:2] != "0":
        separated = any(ch in " .-" for ch in found)
        if (separated and digits >= 9) or (not separated and 10 <= digits <= 11):
            return "<PHONE>"
    return None


# -- person names -----------------------------------------------------------------------

# Upper-case Latin, Greek and Cyrillic letters start a name; any letters continue it (the
# callback checks the case of the first one).
_UPPER = r"A-Z\u00c0-\u00de\u0100-\u024f\u0370-\u03ff\u0400-\u042f"
_NAME_TOKEN = rf"[{_UPPER}](?:[^\W\d_]|['’])+(?:-[{_UPPER}](?:[^\W\d_]|['’])+)?"
_PARTICLE = r"(?:(?:van|von|der|den|de|la|le|du|da|di|del|dos|das|ter|bin|al)\s+)"
_TITLES = (
    "dr dr.ssa dra mr mrs ms mx miss prof herr frau mme mlle sr sra srta dott dott.ssa sig sig.ra pan pani fru"
    " dhr mevr nurse doctor"
)
_ROLES = (
    "patient customer client caller member user physician nurse caregiver guardian attending contact dear"
    " named name"
)
CUE_PHRASES = frozenset(
    ["referred by", "signed by", "seen by", "spoke with", "spoke to", "talked to", "assigned to", "name is"]
)
CUE_WORDS = frozenset(_TITLES.split(" ") + _ROLES.split(" "))
# Capitalised words that follow a role word without being a name (telemetry is Title Case).
NOT_NAMES = frozenset(
    ["Agent", "Id", "Interface", "Service", "Support", "Data", "Account", "Session", "Request", "Error", "Profile", "Portal", "Record", "Records", "Chart", "Number", "Name", "Names", "Message", "Messages", "Input", "Output", "Id", "Api", "Tool", "Tools", "Feedback", "Query", "Intent", "Consent", "History", "Details", "Info", "Information", "Notes", "Note", "Summary", "Status", "Data", "Settings", "Team", "Group", "Admin", "Manager", "Success", "Failure", "Timeout", "The", "This", "That", "These", "Those", "A", "An", "And", "Or", "Of", "On", "In", "At", "To", "For", "With", "From", "By", "Is", "Was", "Services", "Care", "Portal", "Id", "Login", "Logout", "Token", "Key", "Email", "Phone", "Address", "Date", "Time", "Today", "Tomorrow", "Yesterday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March", "October", "November", "December", "Hospital", "Clinic", "Health", "Medical", "Insurance", "Plan", "Please", "Thanks", "Thank", "Hello", "Hi", "Hey", "Dear", "Sir", "Madam", "Team", "Staff", "Unknown", "None", "Null", "True", "False", "Yes", "No", "Ok", "Okay", "New", "Old", "Main", "Default", "Test", "Demo", "Production", "Staging", "Local", "Remote", "Server", "Client", "Customer", "Patient", "User", "Member", "Doctor", "Nurse", "Physician", "Provider", "Pharmacy", "Lab", "Laboratory", "Department", "Room", "Ward", "Bed", "Unit", "Floor", "Queue"],
)

# Capitalised words, one to four (with particles: van der Berg, de la Cruz).
_PERSON_MORE = rf"\s+(?:[A-Z]\.\s+)?{_PARTICLE}{{0,2}}{_NAME_TOKEN}"


def _refused_words(words: frozenset[str]) -> str:
    """A look-ahead, placed after a name's first letter, that fails where the whole match would be
    one of ``words`` (no '.', no further name after it): ``_person_replace`` refuses those first
    thing, and refused inside re they cost the scan no callback ("The customer asked ...")."""
    by_first: dict[str, list[str]] = {}
    for w in sorted(words, key=lambda w: (-len(w), w)):
        if len(w) > 1:
            by_first.setdefault(w[0], []).append(re.escape(w[1:]))
    alternatives = "|".join(f"(?<={re.escape(f)})(?:{'|'.join(rest)})" for f, rest in sorted(by_first.items()))
    return rf"(?!(?:{alternatives})(?![^\W\d_]|['’.])(?!{_PERSON_MORE}))"


PERSON = re.compile(
    # A lower-case letter (or an apostrophe) second: acronyms (IBAN, SSN, GB82) are no names.
    rf"[{_UPPER}](?<![\w].){_refused_words(NOT_NAMES)}(?=[a-z\u00df-\u024f\u03ac-\u03ff\u0430-\u045f'’])(?:[^\W\d_]|['’])*\.?"
    rf"(?:{_PERSON_MORE}){{0,3}}"
)


def _person_replace(m: re.Match[str]) -> str | None:
    """A capitalised run is a name when a title or a role word stands before it (or opens
    it: "Patient John Smith", "Dr. Jane Roe"); words that are not names are left out."""
    found = m.group(0)
    if found in NOT_NAMES:
        return None
    tokens = found.split()
    cued = False
    while tokens and tokens[0].rstrip(".:").lower() in CUE_WORDS:
        tokens.pop(0)
        cued = True
    if not cued:
        before = m.string[max(0, m.start() - 24) : m.start()].split()
        if not before:
            return None
        last = before[-1].strip("\"'([{,;").rstrip(".:").lower()
        if last not in CUE_WORDS and (
            len(before) < 2 or f"{before[-2].strip(chr(34) + '([{,;')} {last}".lower() not in CUE_PHRASES
        ):
            return None
    while tokens and tokens[-1] in NOT_NAMES:
        tokens.pop()
    if not tokens or tokens[0] in NOT_NAMES or not tokens[0][:1].isupper() or len(tokens[0]) < 2:
        return None
    if not tokens[0][1:2].islower() and tokens[0][1:2] not in "'’":
        return None
    if tokens[0].endswith("."):
        return None
    start = found.index(tokens[0])
    end = found.index(tokens[-1], start) + len(tokens[-1])
    return found[:start] + "<PERSON>" + found[end:]


# -- the list, in the order the passes run ------------------------------------------------


def _address_span(m: re.Match[str], floor: int) -> tuple[int, int] | None:
    return addresses.at_number(m.string, m.start(), m.end(), floor)


def _rrn_ok(value: str) -> bool:
    return ck.kr_rrn_valid(_only_digits(value))


def _ssn_ok(value: str) -> bool:
    digits = _only_digits(value)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        len(digits) == 9 and area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
        and digits not in _PUBLISHED_SSNS
    )


# Numbers the SSA voided after they were printed in advertising (078-05-1120, 219-09-9999).
_PUBLISHED_SSNS = frozenset({"078051120", "219099999"})


def _itin_ok(value: str) -> bool:
    digits = _only_digits(value)
    group = int(digits[3:5])
    return len(digits) == 9 and digits[0] == "9" and (50 <= group <= 65 or 70 <= group <= 88 or group in (
        90, 91, 92, 94, 95, 96, 97, 98, 99))


def _nino_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    return compact[:2] not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")


def _uk_licence_ok(value: str) -> bool:
    month = int(value[6:8])
    return 1 <= month <= 12 or 51 <= month <= 62


_NINO_SHAPE = re.compile(r"[A-Z]{2}[0-9]{6}[A-D]")


def _insurance_ok(value: str) -> bool:
    # "national insurance AB123456C" is a NINO, recognised by its own pass.
    return sum(ch.isdigit() for ch in value) >= 4 and not _NINO_SHAPE.fullmatch(value)


def _at_least_digits(n: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return sum(ch.isdigit() for ch in value) >= n

    return check


def _fi_ok(value: str) -> bool:
    return ck.fi_hetu_valid(value)


def _se_ok(value: str) -> bool:
    digits = _only_digits(value)
    head = digits[:-4]
    if len(head) == 8:
        year = int(head[:4])
        if not 1850 <= year <= date.today().year:
            return False
    return ck.se_personnummer_valid(value)


def _fr_ok(value: str) -> bool:
    return ck.fr_nir_valid(value.replace(" ", ""))


_LEAD = re.compile(r"(\[[^\]]+\]|[0-9A-Za-z])(?:\{([0-9]+)(?:,([0-9]+))?\})?")


def fast_start(pattern: str) -> str:
    """Move a leading boundary assertion behind the first character class.

    ``re`` skips ahead to candidates only when a pattern starts with a character
    (class); a pattern that starts with a look-behind or ``\\b`` is tried at every
    position, ten times slower on a 300-character text. ``(?<![\\w\\-])[0-9]{3}…``
    becomes ``[0-9](?<![\\w\\-].)[0-9]{2}…``: the same matches."""
    for boundary, behind in ((_B, r"(?<![\w\-].)"), (r"\b", r"(?<!\w.)")):
        if pattern.startswith(boundary):
            rest = pattern[len(boundary) :]
            lead = _LEAD.match(rest)
            if lead is None or (lead.group(2) is not None and int(lead.group(2)) < 1):
                raise ValueError(f"cannot move the boundary of {pattern!r}")
            atom, low, high = lead.group(1), lead.group(2), lead.group(3)
            tail = rest[lead.end() :]
            if low is None:
                return atom + behind + tail
            repeat = f"{{{int(low) - 1}}}" if high is None else f"{{{int(low) - 1},{int(high) - 1}}}"
            return atom + behind + atom + repeat + tail
    return pattern


def R(
    entity: str,
    pattern: str,
    validate: Callable[[str], bool] | None = None,
    *,
    gates: int = 0,
    context: tuple[str, ...] = (),
    keywords: tuple[str, ...] = (),
    group: int = 0,
    flags: int = _A,
    replace: Callable[[re.Match[str]], str | None] | None = None,
    stage: str = "",
    span: Callable[[re.Match[str], int], tuple[int, int] | None] | None = None,
    whole: bool = False,
) -> Recognizer:
    return Recognizer(
        entity=entity,
        pattern=re.compile(fast_start(pattern), flags),
        validate=validate,
        gates=gates,
        keywords=tuple(k.lower() for k in (keywords or context)),
        context=_context(*context) if context else None,
        context_lower=_context_lower(*context) if context else None,
        group=group,
        replace=replace,
        # Context-bound recognizers run as passes of their own, and only when one of their
        # words is in the text: in the single scan every bare number would first be offered
        # to them and refused.
        stage=stage or ("context" if context else "combined"),
        flags=flags,
        placeholder=f"<{entity}>",
        span=span,
        whole=whole,
    )


_B = r"(?<![\w\-])"  # value start: not inside a word or a dashed id
_E = r"(?![\w]|-[0-9A-Za-z])"  # value end

BUILTIN: tuple[Recognizer, ...] = (
    # Context-bound numbers first: the words around them say what they are.
    R("US_SSN", _B + r"[0-9]{3}([- ]?)[0-9]{2}\1[0-9]{4}" + _E, _ssn_ok, gates=G_NUM9,
      context=("ssn", "social security", "ss#")),
    R("US_ITIN", _B + r"9[0-9]{2}([- ]?)[0-9]{2}\1[0-9]{4}" + _E, _itin_ok, gates=G_NUM9,
      context=("itin", "taxpayer")),
    R("UK_NHS", _B + r"[0-9]{3}([- ]?)[0-9]{3}\1[0-9]{4}" + _E, _digits_then(ck.nhs_valid), gates=G_NUM9,
      context=("nhs",)),
    R("CA_SIN", _B + r"[0-9]{3}([- ]?)[0-9]{3}\1[0-9]{3}" + _E, _digits_then(ck.ca_sin_valid), gates=G_NUM9,
      context=("sin", "social insurance")),
    R("AU_TFN", _B + r"[0-9]{3}( ?)[0-9]{3}\1[0-9]{2,3}" + _E, _digits_then(ck.au_tfn_valid), gates=G_NUM7,
      context=("tfn", "tax file")),
    R("AU_ABN", _B + r"[0-9]{2}( ?)[0-9]{3}\1[0-9]{3}\1[0-9]{3}" + _E, _digits_then(ck.au_abn_valid),
      gates=G_NUM9, context=("abn", "business number")),
    R("AU_MEDICARE", _B + r"[2-6][0-9]{3}( ?)[0-9]{5}\1[0-9](?:[ /\-]?[0-9])?" + _E,
      _digits_then(ck.au_medicare_valid), gates=G_NUM9, context=("medicare",)),
    R("IN_AADHAAR", _B + r"[2-9][0-9]{3}([- ]?)[0-9]{4}\1[0-9]{4}" + _E, _digits_then(ck.aadhaar_valid),
      gates=G_NUM12, context=("aadhaar", "aadhar", "uidai")),
    R("NATIONAL_ID", _B + r"[1-9][0-9]( ?)[0-9]{3}\1[0-9]{3}\1[0-9]{3}" + _E, _digits_then(ck.de_tax_id_valid),
      gates=G_NUM9, context=("steuer", "idnr", "identifikationsnummer", "tax id", "tin")),
    R("NATIONAL_ID", _B + r"[0-9]{4}(\.?)[0-9]{2}\1[0-9]{3}" + _E, _digits_then(ck.nl_bsn_valid), gates=G_NUM9,
      context=("bsn", "burgerservicenummer", "sofinummer")),
    R("NATIONAL_ID", _B + r"[0-9]{11}" + _E, ck.pl_pesel_valid, gates=G_NUM9, context=("pesel",)),
    R("NPI", _B + r"[12][0-9]{9}" + _E, ck.npi_valid, gates=G_NUM9, context=("npi", "provider")),
    R("ABA_ROUTING", _B + r"[0-9]{4}-?[0-9]{4}-?[0-9]" + _E, _digits_then(ck.aba_routing_valid), gates=G_NUM9,
      context=("routing", "aba", "rtn", "transit")),
    R("MEDICAL_LICENSE", r"[A-Z0-9](?<![\w\-].)(?:(?<=[A-Z])[A-Z]{0,2}-?[0-9]{4,10}|(?<=[0-9])[0-9]{3,9})" + _E, gates=G_DIGIT,
      context=("medical licen", "medical lic", "license to practice", "physician licen", "state medical licen",
               "medical board"), keywords=("licen", "medical")),
    R("PASSPORT", _B + r"[A-Z0-9]{6,9}" + _E, _at_least_digits(2), gates=G_DIGIT, context=("passport",)),
    R("DRIVER_LICENSE", _B + r"[A-Z0-9](?:[A-Z0-9]|-(?=[A-Z0-9])){4,17}" + _E, _at_least_digits(4),
      gates=G_DIGIT, context=("driver", "driving", "dl#", "dl no", "dln")),
    R("INSURANCE_ID", r"[A-Z0-9](?<![\w\-].)(?:(?<=[A-Z])[A-Z]{0,3}[0-9]|(?<=[0-9]))[A-Z0-9\-]{5,15}" + _E, _insurance_ok,
      gates=G_DIGIT,
      context=("member id", "member no", "member number", "member #", "insurance", "insured", "policy n",
               "policy #", "policy id", "subscriber", "medicaid", "health plan")),
    R("BANK_ACCOUNT", _B + r"[0-9]{8,17}" + _E, gates=G_NUM6, context=("account", "acct", "a/c")),
    # Identifiers whose shape and check digits are enough.
    R("CRYPTO_WALLET", r"\b[bt][bc]1[02-9ac-hj-np-z]{11,87}+\b", ck.bech32_valid, gates=G_DIGIT, flags=_A,
      keywords=("bc1", "tb1"), stage="before"),
    R("CRYPTO_WALLET", r"\b[13][1-9A-HJ-NP-Za-km-z]{25,34}+\b", ck.base58check_valid, gates=G_MIXED),
    R("CRYPTO_WALLET", r"\b0x[0-9a-fA-F]{40}\b", gates=G_DIGIT),
    R("IBAN", _IBAN_RUN.pattern, gates=G_MIXED, replace=_iban_replace, whole=True),
    R("VAT_ID", r"\b[ABDEFINPS][A-Z][0-9A-Z]{8,12}\b", ck.vat_valid,
      gates=G_MIXED),
    R("IN_GSTIN", r"\b[0-3][0-9][A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]\b", ck.gstin_valid, gates=G_MIXED),
    R("IN_PAN", r"\b[A-Z]{3}[ABCFGHLJPT][A-Z][0-9]{4}[A-Z]\b", gates=G_MIXED),
    R("SG_NRIC", r"\b[STFGM][0-9]{7}[A-Z]\b", ck.sg_nric_valid, gates=G_MIXED),
    R("DEA", r"\b[ABCDEFGHJKLMPRSTUX][A-Z9][0-9]{7}\b", ck.dea_valid, gates=G_MIXED),
    R("MBI", r"\b[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9][0-9]-?[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9][0-9]-?"
      r"[AC-HJKMNP-RT-Y]{2}[0-9]{2}\b", gates=G_MIXED),
    R("UK_NINO", r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b", _nino_ok,
      gates=G_NUM6),
    R("DRIVER_LICENSE", r"\b[A-Z9]{5}[0-9][0156][0-9][0-3][0-9][0-9][A-Z9]{2}[0-9][A-Z]{2}\b", _uk_licence_ok,
      gates=G_MIXED),
    R("NATIONAL_ID", r"\b[A-Z]{6}[0-9LMNP-V]{2}[A-EHLMPR-T][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]\b",
      ck.it_fiscal_code_valid, gates=G_MIXED),
    R("NATIONAL_ID", r"[0-9XYZ](?<![\w\-].)(?:(?<=[0-9])[0-9]{7}|(?<=[XYZ])-?[0-9]{7})-?[A-Z]\b", _stripped_then(ck.es_dni_valid), gates=G_MIXED),
    R("NATIONAL_ID", _B + r"[0-3][0-9][01][0-9]{3}[-+A-FU-Y][0-9]{3}[0-9A-Y]\b", _fi_ok, gates=G_NUM6),
    R("NATIONAL_ID", _B + r"[0-9]{6}(?:[0-9]{2})?[-+][0-9]{4}" + _E, _se_ok, gates=G_NUM6),
    R("NATIONAL_ID", _B + r"[1278] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[AB]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}" + _E, _fr_ok,
      gates=G_NUM12),
    R("KR_RRN", _B + r"[0-9]{6}-?[0-9]{7}" + _E, _rrn_ok, gates=G_NUM12),
    R("CREDIT_CARD", _CARD_RUN.pattern, gates=G_NUM12, replace=_card_replace, whole=True),
    R("US_SSN", _B + r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}" + _E, _ssn_ok, gates=G_NUM9),
    R("US_ITIN", _B + r"9[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}" + _E, _itin_ok, gates=G_NUM9),
    R("UK_POSTCODE", r"\b[A-PR-UWYZ](?:[A-HK-Y]?[0-9][A-HJKMNPR-Y0-9]?) ?[0-9][ABD-HJLNP-UW-Z]{2}\b", gates=G_MIXED),
    R("MAC_ADDRESS", MAC.pattern, _mac_ok, gates=G_MAC, stage="before"),
    R("IP_ADDRESS", IPV6.pattern, _ipv6_ok, gates=G_COLON2, stage="before"),
    R("IP_ADDRESS", IPV4.pattern, _ipv4_ok, gates=G_DOT_NUM),
    R("DATE", DATE_NUMERIC.pattern, gates=G_DOT_NUM, replace=_date_numeric_replace),
    R("DATE", DATE_MONTH_YEAR.pattern, gates=G_DOT_NUM, replace=_date_month_year_replace),
    R("DATE", DATE_DAY_MONTH.pattern, _day_ok, gates=G_DIGIT, flags=_A | re.IGNORECASE),
    R("DATE", DATE_MONTH_FIRST.pattern, gates=G_DIGIT),
    R("STREET_ADDRESS", addresses.HOUSE_NUMBER.pattern, gates=G_DIGIT, flags=0, span=_address_span, whole=True),
    R("PHONE", PHONE.pattern, gates=G_NUM7, replace=_phone_replace, whole=True),
    R("URL", DOMAIN.pattern, is_domain, gates=G_DOMAIN, stage="after"),
    R("PERSON", PERSON.pattern, flags=0, replace=_person_replace, whole=True),
)  # fmt: skip


# -- the single scan ---------------------------------------------------------------------

_FIRST = re.compile(r"(\[(?:\\.|[^\]\\])+\]|\\?[^\\\[(?*+{])(?![*+?{])")


def split_first(pattern: str) -> tuple[str, str]:
    """A pattern's first atom (one character or class, no quantifier) and the rest."""
    lead = _FIRST.match(pattern)
    if lead is None:
        raise ValueError(f"pattern must start with one character or class: {pattern[:40]!r}")
    return lead.group(1), pattern[lead.end() :]


def _rename_groups(pattern: str, prefix: str) -> str:
    """Number-free copy of ``pattern``: capturing groups become ``(?P<prefix_n>`` and
    back-references ``\\n`` become ``(?P=prefix_n)``, so alternatives can share one regex."""
    out: list[str] = []
    i, n, in_class = 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                out.append(f"(?P={prefix}_{nxt})")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                out.append(pattern[i : i + 2])
                i += 2
                continue
        elif ch == "(" and pattern[i + 1 : i + 2] != "?":
            n += 1
            out.append(f"(?P<{prefix}_{n}>")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# The first characters the single scan dispatches on: within one family the alternatives share
# the family's class, so re tries only the recognizers a candidate's first character can start.
_FAMILIES = (
    ("d", "0-9", "0123456789"),
    ("u", "A-Z", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("p", "+(", "+("),
    ("x", "\u00c0-\u00de\u0100-\u024f\u0370-\u03ff\u0400-\u042f",
     "".join(chr(c) for c in (*range(0xC0, 0xDF), *range(0x100, 0x250), *range(0x370, 0x400), *range(0x400, 0x430)))),
)


_BODIES: dict[tuple[int, str], tuple[str, bool] | None] = {}


def _alternative(rec: Recognizer, index: int, family: str, members: str) -> str | None:
    """Recognizer ``rec`` as alternative ``a<index>_<family>`` (None when its first character
    is never in the family); the group-free rest of its pattern is rendered once."""
    key = (id(rec), family)
    if key not in _BODIES:
        first, rest = split_first(rec.pattern.pattern)
        first_re = re.compile(first, rec.flags)
        hits = [bool(first_re.fullmatch(ch)) for ch in members]
        if not any(hits):
            _BODIES[key] = None
        else:
            inline = ("a" if rec.flags & re.ASCII else "") + ("i" if rec.flags & re.IGNORECASE else "")
            body = ("" if all(hits) else f"(?<={first})") + _rename_groups(rest, "G")
            _BODIES[key] = (f"(?{inline}:{body})" if inline else body, True)
    rendered = _BODIES[key]
    if rendered is None:
        return None
    # Group names must be unique in the whole scanner: G_n -> g<index><family>_n.
    body = rendered[0].replace("(?P<G_", f"(?P<g{index}{family}_").replace("(?P=G_", f"(?P=g{index}{family}_")
    return f"(?P<a{index}_{family}>{body})"


def combined_scanner(recognizers: tuple[Recognizer, ...]) -> tuple[re.Pattern[str], dict[str, tuple[int, ...]]]:
    """One regex whose alternatives ``a<i>_<family>`` are recognizer ``i``: candidates start
    at a character of one family (digits, capitals, '+' or '(', other capitals) that does not
    follow a word character (every recognizer's own boundary implies it); each alternative
    checks its own first character by look-behind and continues with the rest of its pattern.
    At one position the alternatives are tried in order, so the order of ``recognizers`` is
    their priority; ``m.lastgroup`` names the one that matched. Also returns, per family, the
    recognizer indices in it (in order), for retrying the later ones at a refused candidate."""
    branches, classes = [], []
    members_of: dict[str, tuple[int, ...]] = {}
    for family, family_class, members in _FAMILIES:
        alternatives, indices = [], []
        for i, rec in enumerate(recognizers):
            alternative = _alternative(rec, i, family, members)
            if alternative is not None:
                alternatives.append(alternative)
                indices.append(i)
        if alternatives:
            classes.append(family_class)
            branches.append(f"(?<=[{family_class}])(?:{'|'.join(alternatives)})")
            members_of[family] = tuple(indices)
    # One leading class (re skips ahead to it), then the family branch by look-behind.
    return re.compile(f"[{''.join(classes)}](?<!\\w.)(?:{'|'.join(branches)})"), members_of
