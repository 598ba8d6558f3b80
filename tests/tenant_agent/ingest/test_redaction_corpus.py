"""Precision and recall of the Redactor per entity type on a labelled corpus.

``tests/data/redaction_corpus.jsonl``: synthesized texts with gold spans, and
near-misses (cards failing Luhn, IBANs failing mod-97, order numbers,
versions, times) that must stay untouched. Run with ``-s`` to see the table.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tenant_agent.redact import ENTITY_TYPES, Redactor

CORPUS = Path(__file__).resolve().parents[2] / "data" / "redaction_corpus.jsonl"
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
# The entity types this hand-written corpus covers (the first redactor's types); the
# generated corpus (tests/redaction/test_generated_corpus.py) covers the others.
CORPUS_TYPES = (
    "URL", "API_KEY", "BEARER_TOKEN", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "MRN", "IP_ADDRESS", "DATE", "PHONE",
)
assert set(CORPUS_TYPES) <= set(ENTITY_TYPES)
MIN_PRECISION = 0.95
MIN_RECALL = 0.95

Span = tuple[int, int, str]


def redacted_spans(original: str, redacted: str) -> list[Span]:
    """Where the placeholders of ``redacted`` sit in ``original``.

    The redacted text is the original with substrings replaced: literal
    pieces between placeholders are found in order in the original, and a
    placeholder covers the gap between them.
    """
    pieces = PLACEHOLDER.split(redacted)  # literal, label, literal, label, ..., literal
    literals, labels = pieces[0::2], pieces[1::2]
    assert original.startswith(literals[0])
    spans: list[Span] = []
    position = len(literals[0])
    for label, literal in zip(labels, literals[1:], strict=True):
        if literal:
            end = original.find(literal, position + 1)
            if literal == literals[-1] and label == labels[-1]:
                end = len(original) - len(literal)  # the last literal ends the text
            assert end > position, (original, redacted)
        else:
            end = position + 1
        spans.append((position, end, label))
        position = end + len(literal)
    return spans


def matches(gold: Span, found: Span) -> bool:
    start, end = max(gold[0], found[0]), min(gold[1], found[1])
    union = max(gold[1], found[1]) - min(gold[0], found[0])
    return gold[2] == found[2] and end > start and (end - start) / union >= 0.5


def score_corpus() -> tuple[Counter[str], Counter[str], Counter[str], int]:
    redactor = Redactor()
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    near_miss_touched = 0
    for line in CORPUS.read_text().splitlines():
        doc = json.loads(line)
        gold = [(e["start"], e["end"], e["label"]) for e in doc["entities"]]
        found = redacted_spans(doc["text"], redactor.redact(doc["text"]))
        if doc["kind"] == "near_miss" and found:
            near_miss_touched += 1
        unmatched = list(found)
        for g in gold:
            hit = next((f for f in unmatched if matches(g, f)), None)
            if hit is None:
                fn[g[2]] += 1
            else:
                tp[g[2]] += 1
                unmatched.remove(hit)
        for f in unmatched:
            fp[f[2]] += 1
    return tp, fp, fn, near_miss_touched


@pytest.fixture(scope="module")
def scores() -> tuple[Counter[str], Counter[str], Counter[str], int]:
    tp, fp, fn, touched = score_corpus()
    print(f"\n{'entity':<14}{'support':>8}{'tp':>6}{'fp':>6}{'fn':>6}{'precision':>11}{'recall':>8}")
    for label in CORPUS_TYPES:
        support = tp[label] + fn[label]
        precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 1.0
        recall = tp[label] / support if support else 1.0
        print(
            f"{label:<14}{support:>8}{tp[label]:>6}{fp[label]:>6}{fn[label]:>6}{precision:>11.3f}{recall:>8.3f}"
        )
    print(f"near-miss texts with any redaction: {touched}")
    return tp, fp, fn, touched


def test_corpus_covers_every_entity_type(
    scores: tuple[Counter[str], Counter[str], Counter[str], int],
) -> None:
    tp, _, fn, _ = scores
    assert {label for label in CORPUS_TYPES if tp[label] + fn[label] >= 25} == set(CORPUS_TYPES)


@pytest.mark.parametrize("label", CORPUS_TYPES)
def test_precision_and_recall_per_entity_type(
    label: str, scores: tuple[Counter[str], Counter[str], Counter[str], int]
) -> None:
    tp, fp, fn, _ = scores
    precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
    recall = tp[label] / (tp[label] + fn[label])
    assert precision >= MIN_PRECISION, f"{label} precision {precision:.3f}"
    assert recall >= MIN_RECALL, f"{label} recall {recall:.3f}"


def test_near_misses_stay_readable(scores: tuple[Counter[str], Counter[str], Counter[str], int]) -> None:
    assert scores[3] == 0
