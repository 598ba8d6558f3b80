"""Redactor behaviour beyond the corpus: checksums, tenant identifiers, stats."""

from __future__ import annotations

import pytest

from tenant_agent.redact import RedactionConfig, RedactionConfigError, Redactor, iban_valid, luhn_valid


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE89 3704 0044 0532 0130")  # wrong length for Germany


def test_card_failing_luhn_stays_readable() -> None:
    r = Redactor()
    assert (
        r.redact("cards 4111 1111 1111 1111 and 4111 1111 1111 1112")
        == "cards <CREDIT_CARD> and 4111 1111 1111 1112"
    )


def test_tenant_patterns_and_dictionaries_run_first() -> None:
    r = Redactor(
        RedactionConfig(
            patterns={"ticket_id": r"\bTCK-[0-9]{6}\b"},
            dictionaries={"project": ["Blue Falcon", "Nightjar"]},
        )
    )
    out = r.redact("TCK-123456 about blue falcon and NIGHTJAR, call +1 415 555 0132")
    assert out == "<TICKET_ID> about <PROJECT> and <PROJECT>, call <PHONE>"
    assert r.stats == {"TICKET_ID": 1, "PROJECT": 2, "PHONE": 1}


def test_secrets_keep_their_names() -> None:
    r = Redactor()
    assert r.redact("api_key=abcd1234efgh, Authorization: Bearer abc.def.ghi123") == (
        "api_key=<API_KEY>, Authorization: Bearer <BEARER_TOKEN>"
    )


def test_stats_count_entities_never_values() -> None:
    r = Redactor()
    r.redact("a@example.com b@example.com")
    r.redact("nothing here")
    assert r.stats == {"EMAIL": 2}


@pytest.mark.parametrize(
    "config",
    [
        RedactionConfig(patterns={"bad": "(unclosed"}),
        RedactionConfig(patterns={"email": "x"}),
        RedactionConfig(dictionaries={"empty": [" "]}),
        RedactionConfig(patterns={"has space!": "x"}),
    ],
)
def test_bad_tenant_config_is_refused(config: RedactionConfig) -> None:
    with pytest.raises(RedactionConfigError):
        Redactor(config)
