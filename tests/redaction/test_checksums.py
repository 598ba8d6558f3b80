"""Check-digit algorithms: published examples hold, every single-digit corruption is refused."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tenant_agent.redaction import checksums as ck
from tests.redaction import corpus as gen

# (validator, published or generated valid examples)
VALID: list[tuple[Callable[[str], bool], list[str]]] = [
    (ck.luhn_valid, ["4111111111111111", "79927398713"]),
    (ck.iban_valid, ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"]),
    (ck.verhoeff_valid, ["2363", "1428570"]),
    (ck.aadhaar_valid, ["499118665246"]),
    (ck.nhs_valid, ["9434765919", "4010232137"]),
    (ck.aba_routing_valid, ["021000021", "011000015"]),
    (ck.npi_valid, ["1234567893"]),
    (ck.dea_valid, ["AB1234563"]),
    (ck.ca_sin_valid, ["130692544"]),
    (ck.au_tfn_valid, ["123456782"]),
    (ck.au_abn_valid, ["51824753556"]),
    (ck.au_medicare_valid, ["2123456701"]),
    (ck.sg_nric_valid, ["S1234567D"]),
    (ck.gstin_valid, ["27AAPFU0939F1ZV"]),
    (ck.es_dni_valid, ["12345678Z", "X1234567L"]),
    (ck.it_fiscal_code_valid, ["RSSMRA85T10A562S"]),
    (ck.nl_bsn_valid, ["111222333"]),
    (ck.pl_pesel_valid, ["44051401359"]),
    (ck.se_personnummer_valid, ["811218-9876"]),
    (ck.fi_hetu_valid, ["131052-308T"]),
    (ck.fr_nir_valid, ["255081416802538"]),
    (ck.de_tax_id_valid, ["86095742719"]),
    (ck.base58check_valid, ["1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"]),
    (ck.bech32_valid, ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                       "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297"]),
    (ck.vat_valid, ["DE136695976", "IT00743110157", "NL004495445B01", "PL5260250274", "SE556188840401",
                    "FI20774740", "BE0403019261", "ATU13585627", "FR40303265045", "PT501964843", "DK13585628"]),
]  # fmt: skip

# Generated identifiers (tests/redaction/corpus.py finds their check digits by searching with the
# validators, or, for VAT, SE and the wallets, by computing them itself): both agree.
GENERATED: list[tuple[Callable[[str], bool], Callable[[random.Random], str]]] = [
    (ck.nhs_valid, gen.nhs), (ck.npi_valid, gen.npi), (ck.dea_valid, gen.dea), (ck.aba_routing_valid, gen.aba),
    (ck.ca_sin_valid, gen.ca_sin), (ck.au_tfn_valid, gen.au_tfn), (ck.au_abn_valid, gen.au_abn),
    (ck.au_medicare_valid, gen.au_medicare), (ck.aadhaar_valid, gen.aadhaar), (ck.gstin_valid, gen.gstin),
    (ck.sg_nric_valid, gen.sg_nric), (ck.kr_rrn_valid, gen.kr_rrn), (ck.de_tax_id_valid, gen.de_tax_id),
    (ck.vat_valid, gen.vat), (ck.base58check_valid, gen.btc_base58), (ck.bech32_valid, gen.btc_bech32),
]  # fmt: skip


@pytest.mark.parametrize(("valid", "examples"), VALID, ids=lambda v: getattr(v, "__name__", ""))
def test_published_examples_hold(valid: Callable[[str], bool], examples: list[str]) -> None:
    for example in examples:
        assert valid(example), example


def corruptions(value: str) -> list[str]:
    """Every string that differs from ``value`` in one digit, or in its last character when
    that is a check letter: the substitutions check digits exist to catch."""
    out: list[str] = []
    for i, ch in enumerate(value):
        if ch.isdigit():
            alphabet = "0123456789"
        elif i == len(value) - 1 and ch.isupper():
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        else:
            continue
        out.extend(value[:i] + other + value[i + 1 :] for other in alphabet if other != ch)
    return out


# The share of single substitutions a scheme cannot catch, by its design: the DEA check doubles
# three of its seven digits (d and d+5 collide there: 3 of 63); the Medicare card's tenth digit
# (the issue number) is outside its check (9 of 90). Every other scheme catches all of them.
TOLERATED_MISSES = {"dea_valid": 3 / 63, "au_medicare_valid": 9 / 90}


@pytest.mark.parametrize(("valid", "examples"), VALID[:-3], ids=lambda v: getattr(v, "__name__", ""))
def test_single_character_corruptions_are_refused(valid: Callable[[str], bool], examples: list[str]) -> None:
    for example in examples:
        bad = [c for c in corruptions(example) if valid(c)]
        allowed = TOLERATED_MISSES.get(valid.__name__, 0.0)
        assert len(bad) <= allowed * len(corruptions(example)), (example, bad[:5])


@pytest.mark.parametrize(("valid", "make"), GENERATED, ids=lambda v: getattr(v, "__name__", ""))
def test_generated_identifiers_validate_and_their_corruptions_mostly_fail(
    valid: Callable[[str], bool], make: Callable[[random.Random], str]
) -> None:
    rng = random.Random(7)
    for _ in range(30):
        value = make(rng)
        assert valid(value), value
    if make in (gen.btc_base58, gen.btc_bech32):
        value = make(rng)
        flipped = value[:-1] + ("q" if value[-1] != "q" else "p") if make is gen.btc_bech32 else (
            value[:-1] + ("2" if value[-1] != "2" else "3"))
        assert not valid(flipped)


def test_malformed_input_is_false_never_an_exception() -> None:
    for validator, _ in VALID + [(ck.kr_rrn_valid, [])]:
        for junk in ["", "x", "ÄÖÜ", "-- --", "0x00", "٣٤٥٦٧٨٩٠١٢"]:  # the last: Arabic-Indic digits
            assert validator(junk) is False, (validator.__name__, junk)
        if validator not in (ck.luhn_valid, ck.verhoeff_valid):  # pure algorithms: any length
            for junk in ["12", "1" * 40]:
                assert validator(junk) is False, (validator.__name__, junk)


def test_iban_registry_length_and_country_are_enforced() -> None:
    assert not ck.iban_valid("DE89 3704 0044 0532 0130")  # too short for Germany
    assert not ck.iban_valid("QQ82WEST12345698765432")  # no such registry country
    assert ck.iban_valid("GB82-WEST-1234-5698-7654-32")  # dashes are separators
