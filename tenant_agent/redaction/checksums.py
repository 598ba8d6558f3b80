"""Check digits of the identifiers the redactor recognises.

Each function takes the identifier's characters (separators already removed
unless the docstring says otherwise) and returns whether its check digit or
check letter holds. They never raise on malformed input: a wrong length or a
stray character is simply ``False``. References are the issuing bodies'
published algorithms (ISO 7064, ISO 13616, the US CMS/DEA/ABA rules, the
national registries named in each docstring).
"""

from __future__ import annotations

import hashlib
from datetime import date

__all__ = [
    "aadhaar_valid", "aba_routing_valid", "au_abn_valid", "au_medicare_valid", "au_tfn_valid",
    "base58check_valid", "bech32_valid", "ca_sin_valid", "dea_valid", "de_tax_id_valid", "es_dni_valid",
    "fi_hetu_valid", "fr_nir_valid", "gstin_valid", "iban_valid", "it_fiscal_code_valid", "kr_rrn_valid",
    "luhn_valid", "nhs_valid", "nl_bsn_valid", "npi_valid", "pl_pesel_valid", "se_personnummer_valid",
    "sg_nric_valid", "vat_valid", "verhoeff_valid",
]  # fmt: skip


def _digits(value: str, length: int | None = None) -> list[int] | None:
    if not value.isascii() or not value.isdigit() or (length is not None and len(value) != length):
        return None
    return [ord(ch) - 48 for ch in value]


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9, at least one) passes the Luhn check."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    # In C: the byte sums of the digits not doubled and of the doubled ones mapped to the
    # digit sum of their double (5 -> 10 -> 1); each byte counts 48 too much.
    kept, doubled = digits[-1::-2].encode(), digits[-2::-2].encode().translate(_LUHN_DOUBLED)
    return (sum(kept) + sum(doubled) - 48 * len(digits)) % 10 == 0


_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


# Registry lengths of IBAN countries (SWIFT IBAN registry, release 2024); unknown prefixes are refused.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# A → "10", B → "11", …, Z → "35": the digit string ISO 7064 mod-97 works on.
_LETTER_DIGITS = {ord(ch): str(ord(ch) - 55) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def iban_valid(candidate: str) -> bool:
    """True when ``candidate`` (spaces and dashes allowed) is an IBAN of a registry
    country with that country's length and a valid ISO 7064 mod-97 checksum."""
    iban = candidate.replace(" ", "").replace("-", "").upper()
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is None or len(iban) != expected or not iban.isascii() or not iban.isalnum():
        return False
    if not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    return int(rearranged.translate(_LETTER_DIGITS)) % 97 == 1


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)  # fmt: skip
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)  # fmt: skip


def verhoeff_valid(digits: str) -> bool:
    """True when ``digits`` passes the Verhoeff dihedral-group check."""
    values = _digits(digits)
    if not values:
        return False
    c = 0
    for i, d in enumerate(reversed(values)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][d]]
    return c == 0


def aadhaar_valid(digits: str) -> bool:
    """Indian Aadhaar (UIDAI): 12 digits, first 2-9, not a palindrome-free test number, Verhoeff."""
    return len(digits) == 12 and digits[0] in "23456789" and verhoeff_valid(digits)


def nhs_valid(digits: str) -> bool:
    """UK NHS number: 10 digits, weights 10..2, check = 11 - sum mod 11 (10 is never issued)."""
    values = _digits(digits, 10)
    if values is None:
        return False
    check = 11 - sum(d * w for d, w in zip(values[:9], range(10, 1, -1), strict=True)) % 11
    if check == 11:
        check = 0
    return check != 10 and check == values[9]


def aba_routing_valid(digits: str) -> bool:
    """US ABA routing transit number: 9 digits, weights 3-7-1, a Federal Reserve prefix."""
    values = _digits(digits, 9)
    if values is None:
        return False
    prefix = values[0] * 10 + values[1]
    if not (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80):
        return False
    return sum(d * w for d, w in zip(values, (3, 7, 1) * 3, strict=True)) % 10 == 0


def npi_valid(digits: str) -> bool:
    """US National Provider Identifier: 10 digits starting 1 or 2, Luhn over ``80840`` + the digits."""
    return len(digits) == 10 and digits[0] in "12" and digits.isdigit() and luhn_valid("80840" + digits)


_DEA_FIRST = frozenset("ABCDEFGHJKLMPRSTUX")


def dea_valid(value: str) -> bool:
    """US DEA registration: registrant-type letter, a letter (or 9), seven digits with the DEA check."""
    if len(value) != 9 or value[0] not in _DEA_FIRST or not (value[1].isalpha() or value[1] == "9"):
        return False
    values = _digits(value[2:], 7)
    if values is None:
        return False
    total = values[0] + values[2] + values[4] + 2 * (values[1] + values[3] + values[5])
    return total % 10 == values[6]


def ca_sin_valid(digits: str) -> bool:
    """Canadian Social Insurance Number: 9 digits, Luhn, first digit never 0 or 8."""
    return len(digits) == 9 and digits.isdigit() and digits[0] not in "08" and luhn_valid(digits)


def au_tfn_valid(digits: str) -> bool:
    """Australian Tax File Number: 8 or 9 digits, weighted sum divisible by 11."""
    values = _digits(digits)
    if values is None or len(values) not in (8, 9):
        return False
    weights = (10, 7, 8, 4, 6, 3, 5, 1) if len(values) == 8 else (1, 4, 3, 7, 5, 8, 6, 9, 10)
    return sum(d * w for d, w in zip(values, weights, strict=True)) % 11 == 0


def au_abn_valid(digits: str) -> bool:
    """Australian Business Number: 11 digits, first minus one, weighted sum divisible by 89."""
    values = _digits(digits, 11)
    if values is None or values[0] == 0:
        return False
    values[0] -= 1
    weights = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    return sum(d * w for d, w in zip(values, weights, strict=True)) % 89 == 0


def au_medicare_valid(digits: str) -> bool:
    """Australian Medicare card: 10 or 11 digits, first 2-6, 9th digit = weighted sum mod 10."""
    values = _digits(digits)
    if values is None or len(values) not in (10, 11) or not 2 <= values[0] <= 6:
        return False
    return sum(d * w for d, w in zip(values[:8], (1, 3, 7, 9, 1, 3, 7, 9), strict=True)) % 10 == values[8]


_NRIC_ST = "JZIHGFEDCBA"
_NRIC_FG = "XWUTRQPNMLK"
_NRIC_M = "KLJNPQRTUWX"


def sg_nric_valid(value: str) -> bool:
    """Singapore NRIC/FIN: S/T/F/G/M, seven digits, a check letter (weights 2,7,6,5,4,3,2)."""
    value = value.upper()
    if len(value) != 9 or value[0] not in "STFGM":
        return False
    values = _digits(value[1:8], 7)
    if values is None:
        return False
    total = sum(d * w for d, w in zip(values, (2, 7, 6, 5, 4, 3, 2), strict=True))
    total += {"S": 0, "T": 4, "F": 0, "G": 4, "M": 3}[value[0]]
    table = _NRIC_ST if value[0] in "ST" else _NRIC_FG if value[0] in "FG" else _NRIC_M
    index = total % 11 if value[0] != "M" else 10 - total % 11
    return table[index] == value[8]


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def kr_rrn_valid(digits: str) -> bool:
    """Korean Resident Registration Number: YYMMDD, a sex/century digit, six more; the
    check digit (weights 2..9,2..5, (11 - sum mod 11) mod 10) of numbers issued before Oct 2020."""
    values = _digits(digits, 13)
    if values is None or values[6] not in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0):
        return False
    century = {1: 1900, 2: 1900, 5: 1900, 6: 1900, 3: 2000, 4: 2000, 7: 2000, 8: 2000, 9: 1800, 0: 1800}
    if not _valid_date(century[values[6]] + int(digits[:2]), int(digits[2:4]), int(digits[4:6])):
        return False
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    check = (11 - sum(d * w for d, w in zip(values[:12], weights, strict=True)) % 11) % 10
    return check == values[12]


_GSTIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def gstin_valid(value: str) -> bool:
    """Indian GSTIN: state code 01-38, a PAN, entity number, 'Z', and a mod-36 check character."""
    value = value.upper()
    if len(value) != 15 or not value[:2].isdigit() or not 1 <= int(value[:2]) <= 38 or value[13] != "Z":
        return False
    total = 0
    for i, ch in enumerate(value[:14]):
        code = _GSTIN_CHARS.find(ch)
        if code < 0:
            return False
        product = code * (2 if i % 2 else 1)
        total += product // 36 + product % 36
    return _GSTIN_CHARS[(36 - total % 36) % 36] == value[14]


def de_tax_id_valid(digits: str) -> bool:
    """German Steuerliche Identifikationsnummer: 11 digits, first not 0, one digit of the first
    ten repeated (twice or three times), ISO 7064 MOD 11,10 check digit."""
    values = _digits(digits, 11)
    if values is None or values[0] == 0:
        return False
    counts = sorted((values[:10].count(d) for d in set(values[:10])), reverse=True)
    if counts[0] not in (2, 3) or (len(counts) > 1 and counts[1] > 1):
        return False
    product = 10
    for d in values[:10]:
        total = (d + product) % 10 or 10
        product = (total * 2) % 11
    return (11 - product) % 10 == values[10]


def fr_nir_valid(value: str) -> bool:
    """French NIR (numéro de sécurité sociale): 13 characters (Corsica: 2A/2B), key = 97 - n mod 97."""
    body, key = value[:13].upper(), value[13:]
    if len(value) != 15 or body[0] not in "1278" or not key.isdigit():
        return False
    body = body.replace("2A", "19").replace("2B", "18") if body[5:7] in ("2A", "2B") else body
    if not body.isdigit():
        return False
    month = int(body[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42):
        return False
    return 97 - int(body) % 97 == int(key)


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni_valid(value: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): letter = number mod 23."""
    value = value.upper()
    if len(value) != 9:
        return False
    head = value[:8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    return head.isdigit() and _DNI_LETTERS[int(head) % 23] == value[8]


_CF_ODD = {
    **dict(zip("0123456789", (1, 0, 5, 7, 9, 13, 15, 17, 19, 21), strict=True)),
    **dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
               (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23),
               strict=True)),
}  # fmt: skip


def it_fiscal_code_valid(value: str) -> bool:
    """Italian codice fiscale: 16 characters; the last is a letter computed from the first 15."""
    value = value.upper()
    if len(value) != 16 or not value.isascii() or not value.isalnum():
        return False
    total = 0
    for i, ch in enumerate(value[:15]):
        if i % 2 == 0:
            total += _CF_ODD[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - 65
    return chr(65 + total % 26) == value[15]


def nl_bsn_valid(digits: str) -> bool:
    """Dutch BSN: 9 digits passing the "11-proef" (weights 9..2, -1)."""
    values = _digits(digits, 9)
    if values is None or digits == "000000000":
        return False
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    return sum(d * w for d, w in zip(values, weights, strict=True)) % 11 == 0


def pl_pesel_valid(digits: str) -> bool:
    """Polish PESEL: 11 digits, a birth date with the century in the month, weights 1,3,7,9 check."""
    values = _digits(digits, 11)
    if values is None:
        return False
    month = int(digits[2:4])
    century = {0: 1900, 20: 2000, 40: 2100, 60: 2200, 80: 1800}[month // 20 * 20]
    if not _valid_date(century + int(digits[:2]), month % 20, int(digits[4:6])):
        return False
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    return (10 - sum(d * w for d, w in zip(values[:10], weights, strict=True)) % 10) % 10 == values[10]


def se_personnummer_valid(value: str) -> bool:
    """Swedish personnummer/samordningsnummer: [YY]YYMMDD, '-' or '+', four digits, Luhn over
    the last ten; the day of a samordningsnummer is +60."""
    digits = value.replace("-", "").replace("+", "")
    if len(digits) == 12:
        digits = digits[2:]
    if len(digits) != 10 or not digits.isdigit():
        return False
    month, day = int(digits[2:4]), int(digits[4:6])
    day = day - 60 if day > 60 else day
    return 1 <= month <= 12 and 1 <= day <= 31 and luhn_valid(digits)


_HETU_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"
_HETU_CENTURY = {"+": 1800, "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
                 "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}  # fmt: skip


def fi_hetu_valid(value: str) -> bool:
    """Finnish henkilötunnus: DDMMYY, a century sign, three digits, a mod-31 check character."""
    value = value.upper()
    if len(value) != 11 or value[6] not in _HETU_CENTURY or not value[:6].isdigit() or not value[7:10].isdigit():
        return False
    year = _HETU_CENTURY[value[6]] + int(value[4:6])
    if not _valid_date(year, int(value[2:4]), int(value[:2])):
        return False
    return _HETU_CHECK[int(value[:6] + value[7:10]) % 31] == value[10]


def _b58decode(value: str) -> bytes | None:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = 0
    for ch in value:
        index = alphabet.find(ch)
        if index < 0:
            return None
        number = number * 58 + index
    pad = len(value) - len(value.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * pad + body


def base58check_valid(value: str) -> bool:
    """A Base58Check string (Bitcoin P2PKH/P2SH address): the last four bytes are the first four
    of SHA-256(SHA-256(payload)) and the payload is a version byte plus a 20-byte hash."""
    raw = _b58decode(value)
    if raw is None or len(raw) != 25:
        return False
    payload, check = raw[:-4], raw[-4:]
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == check


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def bech32_valid(value: str) -> bool:
    """A Bech32 (BIP-173) or Bech32m (BIP-350) string with a valid checksum (segwit addresses)."""
    if value.lower() != value and value.upper() != value:
        return False
    value = value.lower()
    sep = value.rfind("1")
    if sep < 1 or sep + 7 > len(value) or len(value) > 90:
        return False
    hrp, data = value[:sep], value[sep + 1 :]
    if any(ch not in _BECH32_CHARSET for ch in data):
        return False
    expanded = [ord(ch) >> 5 for ch in hrp] + [0] + [ord(ch) & 31 for ch in hrp]
    return _bech32_polymod(expanded + [_BECH32_CHARSET.index(ch) for ch in data]) in (1, 0x2BC830A3)


def _weighted_mod11(values: list[int], weights: tuple[int, ...]) -> int:
    return sum(d * w for d, w in zip(values, weights, strict=False)) % 11


def vat_valid(value: str) -> bool:
    """An EU VAT identification number (country prefix + national number) whose national check
    digit holds, for DE, FR, IT, NL, PL, SE, FI, BE, AT, ES, PT, DK; other prefixes are refused."""
    value = value.replace(" ", "").replace("-", "").replace(".", "").upper()
    country, number = value[:2], value[2:]
    values = _digits(number)
    if country == "DE":
        return values is not None and len(values) == 9 and values[0] != 0 and _mod11_10(values)
    if country == "FR":
        return len(number) == 11 and number[2:].isdigit() and (
            not number[:2].isdigit() or int(number[:2]) == (12 + 3 * (int(number[2:]) % 97)) % 97
        )
    if country == "IT":
        return values is not None and len(values) == 11 and luhn_valid(number)
    if country == "NL":
        body = number[:9]
        if len(number) != 12 or number[9] != "B" or not number[10:].isdigit() or not body.isdigit():
            return False
        if nl_bsn_valid(body):
            return True
        return int(("NL" + number).translate(_LETTER_DIGITS)) % 97 == 1
    if country == "PL":
        return values is not None and len(values) == 10 and (
            _weighted_mod11(values, (6, 5, 7, 2, 3, 4, 5, 6, 7)) == values[9]
        )
    if country == "SE":
        return values is not None and len(values) == 12 and number.endswith("01") and luhn_valid(number[:10])
    if country == "FI":
        if values is None or len(values) != 8:
            return False
        rest = sum(d * w for d, w in zip(values[:7], (7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
        return rest != 1 and (0 if rest == 0 else 11 - rest) == values[7]
    if country == "BE":
        return values is not None and len(values) == 10 and values[0] in (0, 1) and (
            97 - int(number[:8]) % 97 == int(number[8:])
        )
    if country == "AT":
        at = _digits(number[1:])
        if number[:1] != "U" or at is None or len(at) != 8:
            return False
        total = sum(d if i % 2 == 0 else (d * 2 // 10 + d * 2 % 10) for i, d in enumerate(at[:7]))
        return (10 - (total + 4) % 10) % 10 == at[7]
    if country == "ES":
        return len(number) == 9 and (es_dni_valid(number) or (number[0].isalpha() and number[1:8].isdigit()))
    if country == "PT":
        return values is not None and len(values) == 9 and (
            (11 - _weighted_mod11(values, (9, 8, 7, 6, 5, 4, 3, 2))) % 11 % 10 == values[8]
        )
    if country == "DK":
        return values is not None and len(values) == 8 and (
            sum(d * w for d, w in zip(values, (2, 7, 6, 5, 4, 3, 2, 1), strict=True)) % 11 == 0
        )
    return False


def _mod11_10(values: list[int]) -> bool:
    """ISO 7064 MOD 11,10 over all digits but the last, compared with the last."""
    product = 10
    for d in values[:-1]:
        total = (d + product) % 10 or 10
        product = (total * 2) % 11
    return (11 - product) % 10 == values[-1]
