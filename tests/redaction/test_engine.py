"""The Redactor's plug-in points and bookkeeping: tenant name dictionaries, entity detectors
(an NER model a tenant installs), the single scan's retry inside refused candidates."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tenant_agent.redact import EntityDetector, RedactionConfig, RedactionConfigError, Redactor


class CityDetector:
    """A detector the way a tenant's NER wrapper would look: spans over the text it is given."""

    def __init__(self, cities: list[str]) -> None:
        self.cities = cities
        self.seen: list[str] = []

    def detect(self, text: str) -> Iterable[tuple[int, int, str]]:
        self.seen.append(text)
        for city in self.cities:
            start = text.find(city)
            if start >= 0:
                yield start, start + len(city), "location"


def test_a_detector_runs_last_on_the_redacted_text_and_its_spans_become_placeholders() -> None:
    detector = CityDetector(["Leeds", "example.org"])
    redactor = Redactor(RedactionConfig(detectors=(detector,)))
    out = redactor.redact("mail jane@example.org from Leeds")
    assert out == "mail <EMAIL> from <LOCATION>"
    assert detector.seen == ["mail <EMAIL> from Leeds"]  # the built-in passes ran first
    assert redactor.stats == {"EMAIL": 1, "LOCATION": 1}


def test_detector_spans_over_placeholders_or_out_of_range_are_ignored() -> None:
    class Wild:
        def detect(self, text: str) -> Iterable[tuple[int, int, str]]:
            return [(0, 3, "PERSON"), (5, 9, "PERSON"), (-1, 2, "PERSON"), (3, 999, "PERSON")]

    out = Redactor(RedactionConfig(detectors=(Wild(),))).redact("Bob <EMAIL> x")
    assert out == "<PERSON> <EMAIL> x"


def test_an_object_without_detect_is_refused() -> None:
    with pytest.raises(RedactionConfigError):
        Redactor(RedactionConfig(detectors=(object(),)))  # type: ignore[arg-type]
    assert isinstance(CityDetector([]), EntityDetector)


def test_tenant_name_dictionary_redacts_names_without_context() -> None:
    redactor = Redactor(RedactionConfig(person_names=["Amara Okafor", "Okafor"]))
    assert redactor.redact("escalated: amara okafor, then Okafor again") == "escalated: <PERSON>, then <PERSON> again"
    with pytest.raises(RedactionConfigError):
        Redactor(RedactionConfig(person_names=["  "]))


def test_names_need_a_title_or_a_role_word() -> None:
    redactor = Redactor()
    assert redactor.redact("Jane Roe called") == "Jane Roe called"  # no cue: that is what detectors are for
    assert redactor.redact("Dear Jane Roe,") == "Dear <PERSON>,"
    assert redactor.redact("Patient: Jane Roe") == "Patient: <PERSON>"


def test_a_refused_candidate_does_not_hide_an_entity_inside_it() -> None:
    # "GB82 …" is an IBAN candidate that fails mod-97; the card inside the same run is still found,
    # and so is a phone after a refused date shape.
    redactor = Redactor()
    assert redactor.redact("ref 1234 4111 1111 1111 1111") == "ref 1234 <CREDIT_CARD>"
    assert redactor.redact("13/45/2020 or 020 7946 0958") == "13/45/2020 or <PHONE>"


def test_labels_are_cached_only_when_unchanged() -> None:
    redactor = Redactor()
    assert redactor.redact_label("refund") == "refund"
    assert "refund" in redactor._plain_labels
    assert redactor.redact_label("call 020 7946 0958") == "call <PHONE>"
    assert "call 020 7946 0958" not in redactor._plain_labels


def test_the_label_fast_path_equals_the_passes_for_the_new_recognizers() -> None:
    import random

    pieces = [
        "bc1", "tb1", "q", "0x", "ff", ".", ".com", "example", "-", "_", "may", "5", "21", "4711", "2020",
        "sess", "ssn", "nhs", "npi", "passport", "aadhaar", "member", "license", "driver", "policy", "medical",
        "mrn", "a", "x", "9", "00", "1", "fe80", "::", "/",
    ]  # fmt: skip
    rng = random.Random(11)
    for _ in range(20_000):
        label = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9)))[:40]
        fast, slow = Redactor(), Redactor()
        assert fast.redact_label(label) == slow.redact(label), label
        assert fast.stats == slow.stats, label


def test_the_recognizers_a_text_opens_are_those_with_open_gates_and_a_keyword_in_it() -> None:
    """_context_before finds keywords by substring searches or, with many, by one alternation
    tried after each non-letter: both give every recognizer whose gates are open and one of whose
    keywords starts a word of the text (what its context needs), also for keywords inside or
    overlapping others ("social insurance", "tax filed"); none without a keyword in the text."""
    import random

    from tenant_agent.redaction.engine import _CONTEXT_BEFORE, _context_before
    from tenant_agent.redaction.recognizers import gates_of

    def at_word_start(keyword: str, lowered: str) -> bool:
        return any(not p or not "a" <= lowered[p - 1] <= "z" for p in _positions(keyword, lowered))

    keywords = sorted({k for rec in _CONTEXT_BEFORE for k in rec.keywords})
    rng = random.Random(7)
    pieces = [*keywords, "social insurance", "tax filed", "ssnhs", "a", " ", "1", "123456789012", "-", "x", ":", "1.2.3", "0123.4567.89ab"]
    checked: set[int] = set()
    for length in (1, 3, 8, 30):
        for _ in range(400):
            lowered = "".join(rng.choice(pieces) for _ in range(length))
            gates = gates_of(lowered)
            open_ = [rec for rec in _CONTEXT_BEFORE if not rec.gates & ~gates]
            anywhere = [rec for rec in open_ if not rec.keywords or any(k in lowered for k in rec.keywords)]
            word_start = [rec for rec in open_ if not rec.keywords or any(at_word_start(k, lowered) for k in rec.keywords)]
            got = list(_context_before(gates, lowered))
            assert [rec for rec in anywhere if rec in got] == got, lowered  # in order, each with a keyword
            assert all(rec in got for rec in word_start), lowered
            checked.update(id(rec) for rec in word_start)
    assert len(checked) == len(_CONTEXT_BEFORE)  # every recognizer was opened at least once


def _positions(keyword: str, text: str) -> list[int]:
    found, at = [], text.find(keyword)
    while at >= 0:
        found.append(at)
        at = text.find(keyword, at + 1)
    return found


def test_a_keyword_inside_a_word_opens_no_recognizer_when_many_keywords_are_scanned() -> None:
    """The alternation looks for keywords at word starts only: "tin" in "routing" or "nhs" in
    "ssnhs" is no cue (the context pass would find none), so NATIONAL_ID / UK_NHS stay closed,
    while the same words standing alone open them."""
    from tenant_agent.redaction.engine import _context_before
    from tenant_agent.redaction.recognizers import gates_of

    digits = " 1234 5678 9012"  # opens every numeric gate, so the plan has many keywords
    for inner, alone, entity in (("routing", "tin", "NATIONAL_ID"), ("xnhs", "nhs", "UK_NHS")):
        hidden, shown = f"{inner}{digits}", f"{inner} {alone}{digits}"
        assert len(hidden) < 60  # short: the alternation, not the substring searches
        assert entity not in [r.entity for r in _context_before(gates_of(hidden), hidden)], hidden
        assert entity in [r.entity for r in _context_before(gates_of(shown), shown)], shown


def test_the_email_pass_finds_exactly_what_the_pattern_substitution_finds() -> None:
    """``_emails`` tries the pattern once per '@': the same output and count as ``_EMAIL.subn`` (fuzzed)."""
    import random

    from tenant_agent.redaction.engine import _EMAIL, _emails

    rng = random.Random(20261202)
    alphabet = "ab.-_+@@ 1x.Z%'\n" + "é"
    fixed = ["a@b.co", "x.y@example.org, z@w.io", "@@a@b.cc", "a..b@c.de", "mail me at jo.doe+tag@sub.example.com."]
    texts = fixed + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) + rng.choice(["", ".com", ".io"])
                     for _ in range(20_000)]
    differing = []
    for text in texts:
        counts: dict[str, int] = {}
        expected, n = _EMAIL.subn("<EMAIL>", text)
        if (_emails(text, counts), counts.get("EMAIL", 0)) != (expected, n):
            differing.append(text)
    assert differing == []
    assert sum(_EMAIL.search(t) is not None for t in texts) > 500  # the fuzz does produce addresses (619)
