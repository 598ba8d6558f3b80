"""A labelled, deterministic corpus of agent-telemetry texts with personal data, and its scorer.

``generate(seed)`` builds positives — every entity type of the redactor, in
several written formats, from Faker across sixteen locales (names, addresses,
dates, cards, IBANs, national phones and identifiers) plus identifiers whose
check digits are computed here — embedded in sentences shaped like agent
telemetry (tool results, span attributes, user turns, escalation notes), and
hard negatives telemetry is full of: order ids, version strings, UUIDs,
hashes, timestamps, prices, tracking numbers, ticket ids, ports, durations.

``score(redact, docs)`` compares what a redactor replaced with the gold spans:
a gold span counts as found when a placeholder of the same type covers at least
half of the union of both spans (``matches``); ``redacted_any`` counts it when
any placeholder does (the text is protected even if the type is wrong).

Faker is a dev dependency (MIT); the corpus is never shipped. Used by
``bench/redaction.py`` and ``tests/redaction/test_generated_corpus.py``.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from faker import Faker

from tenant_agent.redaction import checksums as ck

LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "sv_SE", "fi_FI", "en_IN",
    "en_AU", "en_CA", "pt_BR", "tr_TR", "da_DK",
)  # fmt: skip
# Locales whose identifiers the generators ask for by name (seeded in generate()).
_EXTRA_LOCALES = ("ko_KR",)
_fakers: dict[str, Faker] = {}


def _faker(locale: str) -> Faker:
    return _fakers[locale]
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
# Types in the corpus no built-in recognizer covers (reported, never part of the goals).
UNCOVERED: tuple[str, ...] = ()

Span = tuple[int, int, str]


@dataclass(frozen=True)
class Doc:
    text: str
    entities: tuple[Span, ...]
    kind: str  # "positive" or "hard_negative"
    locale: str = ""
    family: str = ""  # hard negatives: which kind of look-alike


# -- identifiers with valid check digits ---------------------------------------------------


def _digits(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _complete(rng: random.Random, body: Callable[[], str], valid: Callable[[str], bool], alphabet: str) -> str:
    while True:
        head = body()
        for ch in alphabet:
            if valid(head + ch):
                return head + ch


def nhs(rng: random.Random) -> str:
    return _complete(rng, lambda: _digits(rng, 9, "4689"), ck.nhs_valid, string.digits)


def npi(rng: random.Random) -> str:
    return _complete(rng, lambda: _digits(rng, 9, "12"), ck.npi_valid, string.digits)


def dea(rng: random.Random) -> str:
    return _complete(
        rng, lambda: rng.choice("ABFGMP") + rng.choice(string.ascii_uppercase) + _digits(rng, 6), ck.dea_valid,
        string.digits,
    )  # fmt: skip


_MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"


def mbi(rng: random.Random) -> str:
    a, n, an = _MBI_LETTERS, string.digits, _MBI_LETTERS + string.digits
    c = rng.choice
    return "".join([c("123456789"), c(a), c(an), c(n), c(a), c(an), c(n), c(a), c(a), c(n), c(n)])


def aba(rng: random.Random) -> str:
    return _complete(rng, lambda: rng.choice(["01", "02", "03", "11", "12", "21", "26", "31", "61", "71"])
                     + _digits(rng, 6), ck.aba_routing_valid, string.digits)  # fmt: skip


def ca_sin(rng: random.Random) -> str:
    return _complete(rng, lambda: _digits(rng, 8, "1234567"), ck.ca_sin_valid, string.digits)


def au_tfn(rng: random.Random) -> str:
    return _complete(rng, lambda: _digits(rng, 8, "123456789"), ck.au_tfn_valid, string.digits)


def au_abn(rng: random.Random) -> str:
    while True:
        value = _digits(rng, 11, "123456789")
        if ck.au_abn_valid(value):
            return value


def au_medicare(rng: random.Random) -> str:
    def body() -> str:
        return _digits(rng, 8, "23456")

    value = _complete(rng, body, lambda v: len(v) == 9 and ck.au_medicare_valid(v + "1"), string.digits)
    return value + rng.choice("12345")


def aadhaar(rng: random.Random) -> str:
    return _complete(rng, lambda: _digits(rng, 11, "23456789"), ck.aadhaar_valid, string.digits)


def pan(rng: random.Random) -> str:
    u = string.ascii_uppercase
    return "".join(rng.choice(u) for _ in range(3)) + rng.choice("PCHFT") + rng.choice(u) + _digits(rng, 4) + rng.choice(u)


def gstin(rng: random.Random) -> str:
    return _complete(rng, lambda: f"{rng.randrange(1, 38):02d}{pan(rng)}{rng.choice('123')}Z", ck.gstin_valid,
                     string.digits + string.ascii_uppercase)  # fmt: skip


def sg_nric(rng: random.Random) -> str:
    return _complete(rng, lambda: rng.choice("STFG") + _digits(rng, 7), ck.sg_nric_valid, string.ascii_uppercase)


def kr_rrn(rng: random.Random) -> str:
    def body() -> str:
        born = date(rng.randrange(1940, 2019), rng.randrange(1, 13), rng.randrange(1, 29))
        sex = rng.choice("12") if born.year < 2000 else rng.choice("34")
        return born.strftime("%y%m%d") + sex + _digits(rng, 5)

    return _complete(rng, body, ck.kr_rrn_valid, string.digits)


def de_tax_id(rng: random.Random) -> str:
    def body() -> str:
        digits = rng.sample(string.digits, 9)
        if digits[0] == "0":
            digits[0], digits[1] = digits[1], digits[0]
        digits.insert(rng.randrange(1, 10), rng.choice(digits))
        return "".join(digits)

    return _complete(rng, body, ck.de_tax_id_valid, string.digits)


def vat(rng: random.Random) -> str:
    country = rng.choice(["DE", "IT", "PL", "FI", "BE", "DK", "SE", "AT", "FR", "NL", "PT"])
    shapes = {
        "DE": lambda: "DE" + _digits(rng, 8, "123456789"), "IT": lambda: "IT" + _digits(rng, 10),
        "PL": lambda: "PL" + _digits(rng, 9, "123456789"), "FI": lambda: "FI" + _digits(rng, 7),
        "BE": lambda: "BE0" + _digits(rng, 7), "DK": lambda: "DK" + _digits(rng, 7, "123456789"),
        "PT": lambda: "PT" + _digits(rng, 8, "1235"), "AT": lambda: "ATU" + _digits(rng, 7),
    }  # fmt: skip
    if country == "SE":
        return "SE" + _complete(rng, lambda: _digits(rng, 9, "5"), ck.luhn_valid, string.digits) + "01"
    if country == "FR":
        siren = _digits(rng, 9, "123456789")
        return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"
    if country == "NL":
        return "NL" + _complete(rng, lambda: _digits(rng, 8, "123456789"), ck.nl_bsn_valid, string.digits) + "B01"
    if country == "BE":
        head = shapes["BE"]()
        return head + f"{97 - int(head[2:]) % 97:02d}"
    return _complete(rng, shapes[country], ck.vat_valid, string.digits)


def btc_base58(rng: random.Random) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    payload = bytes([rng.choice([0, 5])]) + rng.randbytes(20)
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number, out = int.from_bytes(raw, "big"), ""
    while number:
        number, rem = divmod(number, 58)
        out = alphabet[rem] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def btc_bech32(rng: random.Random) -> str:
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    data = [0] + [rng.randrange(32) for _ in range(32)]
    hrp = "bc"
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data
    polymod = ck._bech32_polymod(values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(charset[d] for d in data + checksum)


def uk_nino(rng: random.Random) -> str:
    first, second = "ABCEGHJKLMNOPRSTWXYZ", "ABCEGHJKLMNPRSTWXYZ"
    while True:
        prefix = rng.choice(first) + rng.choice(second)
        if prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            return prefix + _digits(rng, 6) + rng.choice("ABCD")


def uk_licence(rng: random.Random, fake: Faker) -> str:
    surname = re.sub("[^A-Z]", "", fake.last_name().upper())[:5].ljust(5, "9")
    born = fake.date_of_birth(minimum_age=18, maximum_age=90)
    month = born.month + rng.choice([0, 50])
    initials = (fake.first_name()[0] + rng.choice(string.ascii_uppercase)).upper()
    return f"{surname}{str(born.year)[2]}{month:02d}{born.day:02d}{str(born.year)[3]}{initials}9{rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}"


def card(fake: Faker, rng: random.Random) -> str:
    number = fake.credit_card_number(rng.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "visa13", "diners"]))
    style = rng.random()
    if style < 0.4 or len(number) not in (15, 16):
        return number
    sep = rng.choice([" ", "-"])
    if len(number) == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def national_mobile(rng: random.Random) -> str:
    """Mobile numbers as written in the Philippines, Turkey and China (Faker has no PH phones)."""
    d = lambda n: _digits(rng, n)  # noqa: E731
    return rng.choice([
        f"09{rng.choice('1234')}{d(1)} {d(3)} {d(4)}", f"+63 9{d(2)} {d(3)} {d(4)}", f"09{d(9)}",
        f"05{d(2)} {d(3)} {d(2)} {d(2)}", f"+90 5{d(2)} {d(3)} {d(2)} {d(2)}", f"05{d(9)}",
        f"1{rng.choice('3589')}{d(1)} {d(4)} {d(4)}", f"+86 1{rng.choice('3589')}{d(1)} {d(4)} {d(4)}",
        f"1{rng.choice('3589')}{d(9)}",
    ])  # fmt: skip


def written_date(rng: random.Random, fake: Faker) -> str:
    d = fake.date_between(start_date=date(1930, 1, 1), end_date=date(2030, 12, 31))
    mon = d.strftime("%b")
    formats = [
        f"{d:%Y-%m-%d}", f"{d:%d/%m/%Y}", f"{d:%m/%d/%Y}", f"{d.day}.{d.month}.{d.year}", f"{d:%d.%m.%Y}",
        f"{d.day} {d:%B} {d.year}", f"{d:%B} {d.day}, {d.year}", f"{d.day}-{mon}-{d.year}", f"{mon}-{d.year}",
        f"{d:%B %Y}", f"{d:%m/%Y}", f"{d.day}/{d.month}/{d:%y}", f"{d:%d.%m.%y}", f"{d.day} {mon} {d.year}",
        f"{mon} {d.day}, {d.year}", f"{d:%Y-%m-%d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
    ]  # fmt: skip
    return rng.choice(formats)


def iban(fake: Faker, rng: random.Random) -> str:
    value = fake.iban()
    style = rng.random()
    if style < 0.4:
        return value
    sep = " " if style < 0.8 else "-"
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


def ip_address(fake: Faker, rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return fake.ipv4()
    if choice == 1:
        return fake.ipv4(network=True)
    if choice == 2:
        return fake.ipv6()
    if choice == 3:
        return f"::ffff:{fake.ipv4()}"
    if choice == 4:
        return fake.ipv6(network=True)
    return f"fe80::{rng.randrange(1, 0xFFFF):x}:{rng.randrange(1, 0xFFFF):x}%eth{rng.randrange(3)}"


def _spaced(rng: random.Random, value: str, groups: tuple[int, ...], seps: str = " -") -> str:
    if rng.random() < 0.5:
        return value
    sep = rng.choice(seps)
    out, position = [], 0
    for size in groups:
        out.append(value[position : position + size])
        position += size
    return sep.join(out)


# -- the entity generators: (type, context phrases, value) -------------------------------

Gen = Callable[[Faker, random.Random], tuple[str, str]]  # -> (context phrase before the value, value)


def _pick(rng: random.Random, *phrases: str) -> str:
    return rng.choice(phrases)


GENERATORS: dict[str, Gen] = {
    "EMAIL": lambda f, r: (_pick(r, "reach me at", "email", "contact", "sent to"), f.email()),
    "PHONE": lambda f, r: (_pick(r, "call me on", "phone", "my number is", "mobile", "tel."), r.choice(
        [f.phone_number()] * 6 + [national_mobile(r)])),
    "US_SSN": lambda f, r: (_pick(r, "SSN", "social security number", "ssn:", "SSN is"), _spaced(
        r, _faker("en_US").ssn().replace("-", ""), (3, 2, 4), "- ")),
    "CREDIT_CARD": lambda f, r: (_pick(r, "card", "paid with", "card number", "charged"), card(f, r)),
    "IBAN": lambda f, r: (_pick(r, "IBAN", "wire to", "account", "refund to"), iban(f, r)),
    "IP_ADDRESS": lambda f, r: (_pick(r, "from", "client ip", "source address", "peer"), ip_address(f, r)),
    "URL": lambda f, r: (_pick(r, "see", "opened", "link", "visited"), r.choice(
        [f.url(), f.uri(), f.domain_name(), f.domain_name(2), "www." + f.domain_name()])),
    "DATE": lambda f, r: (_pick(r, "born on", "DOB", "seen on", "admitted", "appointment on", "dated"),
                          written_date(r, f)),
    "MRN": lambda f, r: (_pick(r, "MRN", "medical record number", "MRN:", "patient id"),
                         r.choice(["", "MR", "A"]) + _digits(r, r.randrange(6, 10))),
    "PERSON": lambda f, r: (_pick(r, "Dr.", "patient", "Mr.", "Ms.", "caller", "customer", "signed by", "Dear",
                                  "nurse", "Prof."), f"{f.first_name()} {f.last_name()}"),
    "US_ITIN": lambda f, r: (_pick(r, "ITIN", "itin:", "ITIN number"), _spaced(
        r, _faker("en_US").itin().replace("-", ""), (3, 2, 4), "- ")),
    "UK_NHS": lambda f, r: (_pick(r, "NHS number", "NHS no.", "nhs:"), _spaced(r, nhs(r), (3, 3, 4))),
    "CA_SIN": lambda f, r: (_pick(r, "SIN", "social insurance number", "SIN:"), _spaced(r, ca_sin(r), (3, 3, 3))),
    "AU_TFN": lambda f, r: (_pick(r, "TFN", "tax file number", "TFN:"), _spaced(r, au_tfn(r), (3, 3, 3), " ")),
    "AU_ABN": lambda f, r: (_pick(r, "ABN", "ABN:", "business number"), _spaced(r, au_abn(r), (2, 3, 3, 3), " ")),
    "AU_MEDICARE": lambda f, r: (_pick(r, "Medicare", "medicare card", "Medicare no."),
                                 _spaced(r, au_medicare(r), (4, 5, 1), " ")),
    "IN_AADHAAR": lambda f, r: (_pick(r, "Aadhaar", "aadhaar no", "Aadhar"), _spaced(r, aadhaar(r), (4, 4, 4))),
    "IN_PAN": lambda f, r: (_pick(r, "PAN", "pan card", "PAN:"), pan(r)),
    "IN_GSTIN": lambda f, r: (_pick(r, "GSTIN", "GST no", "gstin:"), gstin(r)),
    "SG_NRIC": lambda f, r: (_pick(r, "NRIC", "FIN", "nric:"), sg_nric(r)),
    "KR_RRN": lambda f, r: (_pick(r, "RRN", "resident registration number", "주민등록번호"),
                            (lambda v: v[:6] + "-" + v[6:])(kr_rrn(r))),
    "NATIONAL_ID": lambda f, r: r.choice([
        ("Steuer-ID", de_tax_id(r)), ("NIR", _faker("fr_FR").ssn()), ("DNI", _faker("es_ES").nif()),
        ("NIE", _faker("es_ES").nie()), ("codice fiscale", _faker("it_IT").ssn()), ("BSN", _faker("nl_NL").ssn()),
        ("PESEL", _faker("pl_PL").pesel()), ("personnummer", _faker("sv_SE").ssn()),
        ("henkilötunnus", _faker("fi_FI").ssn()),
    ]),
    "VAT_ID": lambda f, r: (_pick(r, "VAT", "VAT id", "USt-IdNr.", "P.IVA"), vat(r)),
    "NPI": lambda f, r: (_pick(r, "NPI", "NPI:", "provider NPI"), npi(r)),
    "DEA": lambda f, r: (_pick(r, "DEA", "DEA number", "DEA#"), dea(r)),
    "MBI": lambda f, r: (_pick(r, "MBI", "Medicare beneficiary id", "MBI:"), _spaced(r, mbi(r), (4, 3, 4), "-")),
    "ABA_ROUTING": lambda f, r: (_pick(r, "routing number", "ABA", "routing"), aba(r)),
    "BANK_ACCOUNT": lambda f, r: (_pick(r, "account number", "acct", "account no."), _digits(r, r.randrange(8, 15))),
    "PASSPORT": lambda f, r: (_pick(r, "passport", "passport number", "passport no."), r.choice(
        [_faker("en_US").passport_number(), _digits(r, 9), r.choice("CFGH") + _digits(r, 8),
         "".join(r.choice(string.ascii_uppercase) for _ in range(2)) + _digits(r, 7)])),
    "DRIVER_LICENSE": lambda f, r: r.choice([
        (_pick(r, "driver's license", "driver license", "DL#", "driving licence"),
         r.choice(string.ascii_uppercase) + _digits(r, r.randrange(7, 13))),
        (_pick(r, "licence", "UK licence", "driving licence number"), uk_licence(r, f)),
    ]),
    "MEDICAL_LICENSE": lambda f, r: (_pick(r, "medical license", "medical licence no.", "physician license"),
                                     r.choice(["MD", "A", "G", "DO-", ""]) + _digits(r, r.randrange(5, 9))),
    "INSURANCE_ID": lambda f, r: (_pick(r, "member id", "insurance id", "policy number", "subscriber id"),
                                  r.choice(["XYZ", "W", "H", "", "ABC"]) + _digits(r, r.randrange(8, 12))),
    "CRYPTO_WALLET": lambda f, r: (_pick(r, "wallet", "send to", "BTC address"), r.choice(
        [btc_base58(r), btc_bech32(r), "0x" + r.randbytes(20).hex()])),
    "UK_NINO": lambda f, r: (_pick(r, "NI number", "NINO", "national insurance"), _spaced(
        r, uk_nino(r), (2, 2, 2, 2, 1), " ")),
    "UK_POSTCODE": lambda f, r: (_pick(r, "postcode", "ship to", "lives in"), _faker("en_GB").postcode()),
    "MAC_ADDRESS": lambda f, r: (_pick(r, "device", "mac", "hw addr"), r.choice(
        [f.mac_address(), f.mac_address().replace(":", "-").upper(),
         ".".join(f.mac_address().replace(":", "")[i : i + 4] for i in (0, 4, 8))])),
    "STREET_ADDRESS": lambda f, r: (_pick(r, "address", "ship to", "lives at"), f.street_address()),
}  # fmt: skip

TEMPLATES = (
    "tool lookup_patient returned {ctx} {value} for the request",
    "user: hi, {ctx} {value}, can you check my claim?",
    "agent note: verified {ctx} {value} before escalation",
    "span attr request.body={{\"note\": \"{ctx} {value}\"}} status=200",
    "Escalated to tier 2 - customer gave {ctx} {value} and asked for a callback.",
    "{ctx} {value} was on file; the refund tool timed out after 3 retries",
    "summary: {ctx} {value}. Intent billing, resolved=false",
    "[warn] form field mismatch ({ctx} {value}) in step 4 of the intake flow",
)

# -- hard negatives ------------------------------------------------------------------------


def _hard_negative(rng: random.Random, fake: Faker) -> tuple[str, str]:
    family = rng.choice([
        "order", "version", "uuid", "hash", "timestamp", "price", "tracking", "ticket", "duration", "port",
        "ratio", "path", "count", "http", "build", "coords",
    ])  # fmt: skip
    h = rng.getrandbits
    values = {
        "order": lambda: rng.choice([f"ORD-{rng.randrange(2019, 2027)}-{rng.randrange(10**6):06d}",
                                     f"order #{rng.randrange(10**5, 10**8)}", f"PO-{rng.randrange(10**4, 10**7)}",
                                     f"order {rng.choice('ABCXZ')}{rng.randrange(1000, 99999)}"]),
        "version": lambda: rng.choice([f"v{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(40)}",
                                       f"version {rng.randrange(1, 5)}.{rng.randrange(20)}.{rng.randrange(30)}",
                                       f"python {rng.choice(['3.11.7', '3.12.1', '3.13.0'])}",
                                       f"release {rng.randrange(2020, 2027)}.{rng.randrange(1, 13)}.{rng.randrange(5)}"]),
        "uuid": lambda: str(uuid.UUID(int=h(128), version=4)),
        "hash": lambda: rng.choice([f"{h(160):040x}", f"sha256:{h(256):064x}", f"{h(128):032x}", f"commit {h(28):07x}"]),
        "timestamp": lambda: rng.choice([f"ts={rng.randrange(1_600_000_000, 1_800_000_000)}",
                                         f"{rng.randrange(1_600_000_000_000, 1_800_000_000_000)}",
                                         f"at {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}",
                                         f"elapsed {rng.randrange(10**6)}us"]),
        "price": lambda: rng.choice([f"${rng.randrange(1, 5000):,}.{rng.randrange(100):02d}",
                                     f"EUR {rng.randrange(1, 999)},{rng.randrange(100):02d}",
                                     f"{rng.randrange(1, 99)}.{rng.randrange(100):02d} USD",
                                     f"total 1.{rng.randrange(100, 999)},{rng.randrange(10, 99)} EUR"]),
        "tracking": lambda: rng.choice([f"1Z{h(20):05X}{rng.randrange(10**10):010d}",
                                        f"tracking {rng.randrange(10**11, 10**12)}",
                                        f"parcel {rng.choice(['LX', 'RR', 'CP'])}{rng.randrange(10**8, 10**9)}DE"]),
        "ticket": lambda: rng.choice([f"JIRA-{rng.randrange(100, 99999)}", f"INC{rng.randrange(10**6, 10**7):07d}",
                                      f"ticket #{rng.randrange(1000, 999999)}", f"case CS-{rng.randrange(10**5, 10**6)}"]),
        "duration": lambda: f"took {rng.randrange(1, 99999)} ms",
        "port": lambda: f"listening on port {rng.randrange(1024, 65535)}",
        "ratio": lambda: rng.choice([f"{rng.randrange(1, 9)}/{rng.randrange(10, 60)} retries",
                                     f"{rng.randrange(100)}% of calls", f"step {rng.randrange(1, 9)} of {rng.randrange(9, 20)}"]),
        "path": lambda: rng.choice(["tenant_agent/redact.py", "src/main.rs", "README.md", "config.yaml",
                                    f"/var/log/app-{rng.randrange(100)}.log", "setup.sh", "event.id", "user.name"]),
        "count": lambda: rng.choice([f"{rng.randrange(10**3, 10**7):,} tokens", f"batch of {rng.randrange(10**4)} rows",
                                     f"line {rng.randrange(9999)}", f"{rng.randrange(10**6, 10**9)} bytes"]),
        "http": lambda: rng.choice([f"HTTP {rng.choice([200, 404, 429, 500, 503])}", "GET /v1/orders?page=2",
                                    f"error code 0x{h(32):08X}"]),
        "build": lambda: rng.choice([f"build {rng.randrange(2020, 2026)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}.{rng.randrange(9)}",
                                     f"image app:{rng.randrange(1, 9)}.{rng.randrange(30)}-r{rng.randrange(99)}",
                                     f"pod api-{h(40):010x}"]),
        "coords": lambda: f"{rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}",
    }  # fmt: skip
    return family, values[family]()


NEGATIVE_TEMPLATES = (
    "tool search_kb returned 3 results for {value}",
    "agent retried {value} after a timeout",
    "status update: {value} processed, intent refund",
    "span db.query {value} status=ok",
    "The model answered in {value} and the user said thanks.",
    "Workflow step finished ({value}); next step is notify.",
)


def generate(seed: int = 14, per_type: int = 120, negatives: int = 1500) -> list[Doc]:
    """The corpus: ``per_type`` positives for every type in GENERATORS, ``negatives`` hard negatives."""
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in LOCALES + _EXTRA_LOCALES}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    _fakers.clear()
    _fakers.update(fakers)
    docs: list[Doc] = []
    for label, gen in GENERATORS.items():
        for _ in range(per_type):
            locale = rng.choice(LOCALES)
            fake = fakers[locale]
            ctx, value = gen(fake, rng)
            value = " ".join(value.split())  # Faker pads some values ("… Apt. 49 ")
            template = rng.choice(TEMPLATES)
            head, tail = template.split("{value}")
            prefix = head.format(ctx=ctx).replace("{{", "{")
            text = prefix + value + tail.replace("{{", "{").replace("}}", "}")
            docs.append(Doc(text, ((len(prefix), len(prefix) + len(value), label),), "positive", locale))
    for _ in range(negatives):
        locale = rng.choice(LOCALES)
        family, value = _hard_negative(rng, fakers[locale])
        template = rng.choice(NEGATIVE_TEMPLATES)
        docs.append(Doc(template.format(value=value), (), "hard_negative", locale, family))
    rng.shuffle(docs)
    return docs


# -- scoring -------------------------------------------------------------------------------


def redacted_spans(original: str, redacted: str) -> list[Span]:
    """Where the placeholders of ``redacted`` sit in ``original`` (the redacted text is the
    original with substrings replaced; literal pieces are found in order)."""
    pieces = PLACEHOLDER.split(redacted)
    literals, labels = pieces[0::2], pieces[1::2]
    if not original.startswith(literals[0]):
        raise ValueError(f"redacted text does not start like the original: {redacted!r}")
    spans: list[Span] = []
    position = len(literals[0])
    for index, (label, literal) in enumerate(zip(labels, literals[1:], strict=True)):
        if index == len(labels) - 1:
            end = len(original) - len(literal)
        elif literal:
            end = original.find(literal, position + 1)
        else:
            end = position + 1
        if end <= position:
            raise ValueError(f"cannot align {redacted!r} with {original!r}")
        spans.append((position, end, label))
        position = end + len(literal)
    return spans


def matches(gold: Span, found: Span, *, same_type: bool = True) -> bool:
    start, end = max(gold[0], found[0]), min(gold[1], found[1])
    union = max(gold[1], found[1]) - min(gold[0], found[0])
    return (not same_type or gold[2] == found[2]) and end > start and (end - start) / union >= 0.5


@dataclass
class Score:
    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    redacted_any: Counter[str] = field(default_factory=Counter)  # gold spans covered by any placeholder
    negatives: int = 0
    negatives_touched: int = 0
    touched_families: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (label, text, redacted)

    def recall(self, label: str) -> float:
        support = self.tp[label] + self.fn[label]
        return self.tp[label] / support if support else 1.0

    def precision(self, label: str) -> float:
        found = self.tp[label] + self.fp[label]
        return self.tp[label] / found if found else 1.0

    def any_recall(self, label: str) -> float:
        support = self.tp[label] + self.fn[label]
        return self.redacted_any[label] / support if support else 1.0

    @property
    def negative_rate(self) -> float:
        return self.negatives_touched / self.negatives if self.negatives else 0.0

    def labels(self) -> list[str]:
        return sorted(set(self.tp) | set(self.fn) | set(self.fp))


def score(redact: Callable[[str], str], docs: Iterable[Doc]) -> Score:
    """Per-type true/false positives and misses of ``redact`` on ``docs``."""
    result = Score()
    for doc in docs:
        redacted = redact(doc.text)
        found = redacted_spans(doc.text, redacted)
        if doc.kind == "hard_negative":
            result.negatives += 1
            if found:
                result.negatives_touched += 1
                result.touched_families[doc.family] += 1
        unmatched = list(found)
        for gold in doc.entities:
            if any(matches(gold, f, same_type=False) for f in found):
                result.redacted_any[gold[2]] += 1
            hit = next((f for f in unmatched if matches(gold, f)), None)
            if hit is None:
                result.fn[gold[2]] += 1
                result.misses.append((gold[2], doc.text, redacted))
            else:
                result.tp[gold[2]] += 1
                unmatched.remove(hit)
        for f in unmatched:
            result.fp[f[2]] += 1
    return result
