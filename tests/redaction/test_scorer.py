"""The corpus scorer counts what it claims to: a planted miss is a miss, a planted false alarm
is a false positive, a wrong type is a miss that still counts as redacted."""

from __future__ import annotations

import pytest

from tests.redaction.corpus import Doc, generate, matches, redacted_spans, score

TEXT = "call +44 20 7946 0958 or mail jane@example.org today"
PHONE = (5, 21, "PHONE")
EMAIL = (30, 46, "EMAIL")
DOCS = [Doc(TEXT, (PHONE, EMAIL), "positive"), Doc("order 4711 shipped", (), "hard_negative", family="order")]


def test_redacted_spans_align_placeholders_with_the_original() -> None:
    redacted = "call <PHONE> or mail <EMAIL> today"
    assert redacted_spans(TEXT, redacted) == [PHONE, EMAIL]
    assert redacted_spans(TEXT, TEXT) == []
    with pytest.raises(ValueError):
        redacted_spans(TEXT, "something else <PHONE>")


def test_a_perfect_redactor_scores_perfectly() -> None:
    result = score(lambda t: t.replace("+44 20 7946 0958", "<PHONE>").replace("jane@example.org", "<EMAIL>"), DOCS)
    assert (result.tp["PHONE"], result.tp["EMAIL"], sum(result.fn.values()), sum(result.fp.values())) == (1, 1, 0, 0)
    assert result.negative_rate == 0.0


def test_a_planted_miss_is_counted_as_a_miss() -> None:
    result = score(lambda t: t.replace("jane@example.org", "<EMAIL>"), DOCS)  # the phone leaks
    assert result.fn["PHONE"] == 1 and result.tp["PHONE"] == 0 and result.recall("PHONE") == 0.0
    assert result.misses and result.misses[0][0] == "PHONE"


def test_a_planted_false_alarm_is_counted() -> None:
    result = score(lambda t: t.replace("4711", "<PHONE>").replace("today", "<DATE>"), DOCS)
    assert result.fp["PHONE"] == 1 and result.fp["DATE"] == 1
    assert result.negatives_touched == 1 and result.touched_families == {"order": 1}
    assert result.negative_rate == 1 / 1


def test_a_wrong_type_is_a_miss_but_still_redacted() -> None:
    result = score(lambda t: t.replace("+44 20 7946 0958", "<US_SSN>").replace("jane@example.org", "<EMAIL>"), DOCS)
    assert result.fn["PHONE"] == 1 and result.redacted_any["PHONE"] == 1 and result.any_recall("PHONE") == 1.0
    assert result.fp["US_SSN"] == 1


def test_a_placeholder_covering_less_than_half_is_a_miss() -> None:
    assert not matches(PHONE, (5, 9, "PHONE"))  # "+44 " of sixteen characters
    assert matches(PHONE, (8, 21, "PHONE"))
    result = score(lambda t: t.replace("+44 ", "<PHONE>").replace("jane@example.org", "<EMAIL>"), DOCS)
    assert result.fn["PHONE"] == 1


def test_the_corpus_is_deterministic_and_labelled_where_the_values_are() -> None:
    first, second = generate(seed=3, per_type=4, negatives=20), generate(seed=3, per_type=4, negatives=20)
    assert first == second
    assert generate(seed=4, per_type=4, negatives=20) != first
    for doc in first:
        for start, end, _ in doc.entities:
            assert 0 <= start < end <= len(doc.text)
            assert doc.text[start:end].strip() == doc.text[start:end]
    assert {d.kind for d in first} == {"positive", "hard_negative"}
