"""Redaction stays linear in the input on adversarial text.

Python's ``re`` has no step counter, so linearity is checked by input-size scaling: the CPU
time for an input four times as long must grow less than eight-fold (linear: about four;
quadratic: sixteen). Each measurement is the best of three runs on inputs long enough
(4 to 16 kilobytes) for timer noise to be small, and a ratio over the bound is measured once
more before failing. Over twenty runs of this file on the shared development machine no
linear pattern crossed the bound (observed ratios 3.2-5.6); a quadratic one crosses it every
time. No test here asserts an absolute time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tenant_agent.redact import Redactor
from tenant_agent.redaction.engine import _SCANNERS, _scan
from tenant_agent.redaction.recognizers import BUILTIN, Features

BOUND = 8.0
# Repeating units that drive each kind of pattern to its worst case: long digit runs with
# and without separators, capitals glued to digits, dotted and coloned runs, hex, name-like
# capitalised words after a title, open brackets, unterminated prefixes.
UNITS = [
    "1", "1 ", "1-", "1.", "1/", "1, ", "12 ", "A1", "AB", "1A", "a.", "a-", ":", "a:", "1:", "f:", "ff:",
    "Aa ", "Dr. Aa ", "patient Aa ", "(", "(1", "+1 ", "0", "0 ", "x1", "GB82 ", "ABCD ", "a@", "www.a.",
    "May ", "1 May ", "9", "9-", "S1", "bc1q", "1Zz", "::1.", "%a", "-1", "X-1", "ab-", "Ab ", "ß",
    # street addresses: numbers between names, street words, address words, units
    "1 Aa ", "Aa 1 ", "Via Aa ", "Aa, 1 ", "rue Aa ", "address 1 Aa ", "address rue ", "Flat 1 ", "Aagatan 1 ", "Aa tie 1 ",
]  # fmt: skip


def cpu_time(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return max(best, 1e-6)


def scaling(fn: Callable[[str], object], unit: str, small: int) -> float:
    short, long_ = unit * small, unit * (small * 4)
    ratio = cpu_time(lambda: fn(long_)) / cpu_time(lambda: fn(short))
    if ratio >= BOUND:  # one more measurement before calling it superlinear
        ratio = min(ratio, cpu_time(lambda: fn(long_)) / cpu_time(lambda: fn(short)))
    return ratio


def repeat(unit: str) -> int:
    return max(600, 4_000 // len(unit))


@pytest.mark.parametrize("unit", UNITS)
def test_the_whole_redactor_is_linear(unit: str) -> None:
    redactor = Redactor()
    assert scaling(redactor.redact, unit, repeat(unit)) < BOUND


@pytest.mark.parametrize("index", range(len(BUILTIN)), ids=[f"{r.entity}-{i}" for i, r in enumerate(BUILTIN)])
def test_every_recognizer_pattern_is_linear(index: int) -> None:
    pattern = BUILTIN[index].pattern
    worst = max(scaling(lambda s: sum(1 for _ in pattern.finditer(s)), unit, repeat(unit)) for unit in UNITS)
    assert worst < BOUND, pattern.pattern[:80]


def test_the_single_scan_is_linear_with_every_gate_open() -> None:
    text = "SSN 123-45-6789 card 4111 1111 1111 1111 at 10.1.2.3 :: 2021-01-01 Dr. Aa GB82 WEST aa-bb."
    gates = Features.of(text).gates
    _scan(text, gates, {})
    scanner = _SCANNERS[gates][0]
    assert isinstance(scanner, re.Pattern)
    for unit in UNITS:
        assert scaling(lambda s: _scan(s, gates, {}), unit, repeat(unit)) < BOUND, unit
