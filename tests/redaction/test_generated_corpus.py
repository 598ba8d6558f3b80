"""The redactor meets the issue's goals on the generated corpus, per type.

The corpus is generated with fixed seeds (Faker and ``random``), so the figures are the same on
every run with the pinned Faker major version: the false-failure rate is zero, and a change in
a figure means a change in the redactor or in Faker's data. The generator is written by the
same hands as the recognizers, so these figures are an upper bound for unseen text; the
independent corpus of the issue is the honest measure (see docs/redaction.md).
"""

from __future__ import annotations

import pytest

from tenant_agent.redact import ENTITY_TYPES, Redactor
from tests.redaction.corpus import GENERATORS, UNCOVERED, Score, generate, score

MIN_RECALL = 0.97
MIN_PRECISION = 0.97
MAX_NEGATIVES_TOUCHED = 0.01
COVERED = sorted(set(GENERATORS) - set(UNCOVERED))


@pytest.fixture(scope="module")
def result() -> Score:
    return score(Redactor().redact, generate(seed=14, per_type=120, negatives=1500))


def test_every_built_in_type_is_in_the_corpus() -> None:
    assert set(ENTITY_TYPES) - {"API_KEY", "BEARER_TOKEN"} <= set(GENERATORS)  # secrets: the hand corpus


@pytest.mark.parametrize("label", COVERED)
def test_recall_and_precision_per_type(label: str, result: Score) -> None:
    assert result.tp[label] + result.fn[label] >= 100
    assert result.recall(label) >= MIN_RECALL, (label, result.recall(label), result.misses[:3])
    assert result.precision(label) >= MIN_PRECISION, (label, result.precision(label))


def test_hard_negatives_stay_readable(result: Score) -> None:
    assert result.negatives >= 1000
    assert result.negative_rate <= MAX_NEGATIVES_TOUCHED, result.touched_families
