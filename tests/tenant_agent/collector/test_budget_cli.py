"""`agent budget` says what its rho totals mean in epsilon, where the ledger gives that view."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregation.budget import BudgetStatus
from fedsignal_cli.main import main

CONFIG = 'state_dir = "state"\ntenant_id = "tenant-1"\ncohort = "cohort-a"\n\n[budget]\nrho_per_period = 1.0\n'


def test_budget_prints_the_totals_in_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(BudgetStatus, "in_epsilon"):
        pytest.skip("the ledger's epsilon view (aggregation.budget.BudgetStatus.in_epsilon) is not on this branch")
    (tmp_path / "collector.toml").write_text(CONFIG)
    assert main(["agent", "budget", "--config", str(tmp_path / "collector.toml")]) == 0
    out = capsys.readouterr().out
    assert "rho 1 per period" in out
    assert "epsilon:   at delta 1e-06: period limit" in out and "zCDP composes in rho" in out
