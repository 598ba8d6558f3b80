"""Noise in empty slices proposes nothing and reads as "not enough data" (issue 13.5).

DP noise lands in every cell, so a slice with no events still has a "rate": a few noisy turns and a few
noisy failures make 100 % in [20 %, 100 %]. A merged window here holds one real hotspot (1000 turns,
30 % wrong tool) and slices with nothing but noise; only the real one may become a candidate, and the
views print "not enough data" for the others instead of intervals and negative counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fedsignal.v1 import admin_pb2

from server.admin_cli.signals import format_signals
from server.db import transaction
from server.review.candidates import detect
from server.review.workflow import get_candidate
from server.signals.models import MergedWindow
from server.signals.report_html import render_report
from server.signals.views import DEFAULT_EVIDENCE_FLOOR, NOT_ENOUGH_DATA, list_signals, merged_cells
from tests.server.review.world import ServerWorld

COHORT = "c1"
WINDOW = 1_793_534_400
#: Summed noise variance of the window's cells (sigma 1): the issue's case, 100 % in [20 %, 100 %].
VARIANCE = 1.0


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> ServerWorld:
    return ServerWorld.create(database_url, tmp_path / "state")


def _merged_window(world: ServerWorld, counts: dict[tuple[str, str], int]) -> None:
    """One merged window of ``COHORT``: ``counts[(measure, intent)]``; every other cell is 0."""
    with transaction(world.ctx.sessions) as s:
        from server.signals.schemas import current_schema

        schema = current_schema(s, COHORT)
        cells = np.zeros(schema.size, dtype="<i8")
        for (measure, intent), value in counts.items():
            cells[schema.cell_index({"measure": measure, "intent": intent, "artifact_version": "baseline"})] = value
        s.add(MergedWindow(cohort=COHORT, window_start=WINDOW, window_end=WINDOW + 3600,
                           schema_version=schema.version, cells=cells.tobytes(), variance=VARIANCE, tenants=6,
                           reports=6, generation=1, updated_at=world.clock()))


NOISE_ONLY = {
    # refund: no events at all; the noise gave 3 "turns" and 3 "unsupported claims" (rate 100 %).
    ("turns", "refund"): 3, ("unsupported_claim", "refund"): 3, ("policy_violation", "refund"): 2,
    # account: noise made a negative failure count beside a few noisy turns.
    ("turns", "account"): 4, ("wrong_tool", "account"): -3,
}
HOTSPOT = {("turns", "order_status"): 1000, ("wrong_tool", "order_status"): 300}


def test_noise_in_empty_slices_proposes_no_candidate_but_a_real_hotspot_does(world: ServerWorld) -> None:
    _merged_window(world, {**NOISE_ONLY, **HOTSPOT})
    with transaction(world.ctx.sessions) as s:
        noisy = next(c for c in merged_cells(s, COHORT, world.ctx.settings)
                     if c.measure == "unsupported_claim" and c.slice["intent"] == "refund")
        assert noisy.rate_low > 0.08  # above the category's threshold: today's rule would fire on it
        assert not DEFAULT_EVIDENCE_FLOOR.admits(noisy)
        created = detect(s, world.ctx)
        assert [(c.category, get_candidate(s, c.id).kind) for c in created] == [("wrong_tool", "routing_rule")]
        assert "order_status" in created[0].evidence_json


def test_views_say_not_enough_data_instead_of_intervals_and_negative_counts(
        world: ServerWorld, capsys: pytest.CaptureFixture[str]) -> None:
    _merged_window(world, {**NOISE_ONLY, **HOTSPOT})
    with transaction(world.ctx.sessions) as s:
        response = list_signals(s, world.ctx.settings, admin_pb2.ListSignalsRequest(cohort=COHORT))
    cells = {(c.measure, c.slice["intent"]): c for c in response.cells}
    assert cells[("unsupported_claim", "refund")].z_score == 0.0  # noise is not significant either
    assert response.cells[0].measure == "wrong_tool" and response.cells[0].slice["intent"] == "order_status"

    page = render_report(response, generated_at=datetime(2026, 11, 2, tzinfo=UTC))
    assert NOT_ENOUGH_DATA in page
    assert "100.0%]" not in page and ">-3<" not in page

    lines = format_signals(response).splitlines()

    def row(measure: str, intent: str) -> str:
        return next(line for line in lines if f" {measure} " in line and f"intent={intent}" in line)

    assert NOT_ENOUGH_DATA in row("unsupported_claim", "refund")
    assert NOT_ENOUGH_DATA in row("wrong_tool", "account") and "-3" not in row("wrong_tool", "account")
    assert "30.0% [" in row("wrong_tool", "order_status")
