"""Street addresses: the shapes of the corpus locales, units and PO boxes, what stays readable."""

from __future__ import annotations

import pytest

from tenant_agent.redact import Redactor
from tenant_agent.redaction import addresses


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # number first: US / UK / CA / AU / IN, with units before and after
        ("ship to 2471 Wagner Groves today", "ship to <STREET_ADDRESS> today"),
        ("deliver 12 Oak St. by noon", "deliver <STREET_ADDRESS> by noon"),
        ("home: 38580 Dale Cape Apt. 988, Springfield", "home: <STREET_ADDRESS>, Springfield"),
        ("note Flat 33v Charles Grove was wrong", "note <STREET_ADDRESS> was wrong"),
        ("Level 0 4 Jenna Dip (AU)", "<STREET_ADDRESS> (AU)"),
        ("at 350 5th Avenue Suite 12", "at <STREET_ADDRESS>"),
        ("H.No. 16, Manne Road", "<STREET_ADDRESS>"),
        # number first: French
        ("client au 415, rue Thierry Seguin depuis", "client au <STREET_ADDRESS> depuis"),
        ("6, boulevard de Gros", "<STREET_ADDRESS>"),
        # number last, glued or standing street type: DE / NL / SE / FI / DK
        ("Albert-Mitschke-Straße 7 in Berlin", "<STREET_ADDRESS> in Berlin"),
        ("Budigstr. 90/10", "<STREET_ADDRESS>"),
        ("wohnt Kyrkogatan 37, Uppsala", "wohnt <STREET_ADDRESS>, Uppsala"),
        ("van der Dussenallee 57", "<STREET_ADDRESS>"),
        ("Nyminde Allé 36", "<STREET_ADDRESS>"),
        ("Taavetti Laitisen tie 9", "<STREET_ADDRESS>"),
        ("Jesperboulevard 7", "<STREET_ADDRESS>"),
        # number last, street word first: ES / IT / PT / PL / TR
        ("Via Tarchetti, 829 Piano 3", "<STREET_ADDRESS>"),
        ("C. de Aurelia Solé 265", "<STREET_ADDRESS>"),
        ("Glorieta Lisandro Donoso 533 Piso 9", "<STREET_ADDRESS>"),
        ("Praia João Sampaio, 88", "<STREET_ADDRESS>"),
        ("ul. Podmiejska 42", "<STREET_ADDRESS>"),
        ("aleja Srebrna 30/82", "<STREET_ADDRESS>"),
        ("Atatürk Cad. No: 5", "<STREET_ADDRESS>"),
        # PO boxes
        ("mail to P.O. Box 4471 please", "mail to <STREET_ADDRESS> please"),
        ("Postfach 1234", "<STREET_ADDRESS>"),
        # after an address word: no number, or no street type
        ("lives at rue Guillaume Alves", "lives at <STREET_ADDRESS>"),
        ("address 44, Kuruvilla", "address <STREET_ADDRESS>"),
        ("address Elinering 3", "address <STREET_ADDRESS>"),
    ],
)
def test_street_addresses_are_redacted(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "took 350 ms after 3 retries",
        "step 4 of 17",
        "sent via Stripe 2 times",
        "Spring 2024 release",
        "String 5 chars",
        "Monitoring 3 services",
        "returned 3 Results",
        "Python 3 and Windows 11",
        "listening on port 8080",
        "order #12345 shipped via UPS",
        "Tuesday 12 May at 10:30",
        "HTTP 404 Not Found",
        "batch of 500 rows",
        "rue",  # the word alone
        "Elinering 3",  # -ering without an address word: may be English
        "Box 12 of 40",  # a bare box is no PO box
        "see 3 Search Results End",  # generic road types need an address word
        "BP 120/80",  # blood pressure, not a boîte postale
    ],
)
def test_look_alikes_stay_readable(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text


def test_stats_count_addresses(redactor: Redactor) -> None:
    r = Redactor()
    r.redact("ship to 2471 Wagner Groves or Kyrkogatan 37")
    assert r.stats == {"STREET_ADDRESS": 2}


def test_find_returns_non_overlapping_spans() -> None:
    text = "lives at 1913 Fletcher Via Apt. 053 and Via Tarchetti, 829"
    spans = addresses.find(text)
    assert [text[s:e] for s, e in spans] == ["1913 Fletcher Via Apt. 053", "Via Tarchetti, 829"]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_other_entities_keep_their_types(redactor: Redactor) -> None:
    out = redactor.redact("ship to 2471 Wagner Groves, call +44 20 7946 0958, SSN 123-45-6789")
    assert out == "ship to <STREET_ADDRESS>, call <PHONE>, SSN <US_SSN>"
