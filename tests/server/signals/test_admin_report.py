"""`fedsignal admin signals` and `fedsignal admin report --html`, end to end over mTLS;
the HTML page is rendered in headless Chromium and must contain the plots."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aggregation.schema import SignalSchema
from fedsignal_cli.main import main as fedsignal
from server.app import ADMIN, RunningServer, build_server
from server.context import ServerContext
from server.signals.ingest import ReportIngest, Submitter
from server.signals.merge import merge_pending
from tests.server.signals.helpers import COHORT, WINDOW, cohort_schema, make_context, make_report
from tests.server.signals.pki import Pki

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TENANTS = ("a", "b", "c")
INTENTS = ("billing", "refund", "shipping")


def window_table(schema: SignalSchema, rng: np.random.Generator, hot: bool) -> np.ndarray:
    cells = np.zeros(schema.size, dtype=np.int64)
    for intent in INTENTS:
        key = {"intent": intent, "artifact_version": "baseline"}
        cells[schema.cell_index({**key, "measure": "turns"})] = 200 + rng.integers(-5, 5)
        wrong = 60 if (hot and intent == "billing") else 12
        cells[schema.cell_index({**key, "measure": "wrong_tool"})] = wrong + rng.integers(-4, 4)
        cells[schema.cell_index({**key, "measure": "timeout"})] = 8 + rng.integers(-4, 4)
    return cells


def populate(ctx: ServerContext, windows: int = 4) -> None:
    schema = cohort_schema(ctx)
    rng = np.random.default_rng(7)
    ingest = ReportIngest(ctx)
    for w in range(windows):
        start = WINDOW - 3600 * w
        for tenant in TENANTS:
            cells = window_table(schema, rng, hot=w < 2)
            ingest.submit(Submitter(tenant, COHORT), make_report(schema, tenant, window_start=start, cells=cells))
    merge_pending(ctx)


def serve(ctx: ServerContext, tmp_path: Path) -> tuple[RunningServer, Path]:
    pki = Pki.create(tmp_path / "state")
    ctx.settings = ctx.settings.with_changes(state_dir=pki.state_dir, listen="127.0.0.1:0", insecure_dev=False)
    admin_dir = tmp_path / "admin"
    pki.issue(ctx, "ops", role="admin", directory=admin_dir)
    return build_server(ctx, jobs=False, services=[ADMIN]), admin_dir


@pytest.fixture
def served(ctx: ServerContext, tmp_path: Path) -> Iterator[tuple[RunningServer, list[str]]]:
    populate(ctx)
    running, admin_dir = serve(ctx, tmp_path)
    try:
        yield running, ["--server", f"127.0.0.1:{running.port}", "--credentials", str(admin_dir)]
    finally:
        running.stop(0)


def test_admin_signals_prints_the_table_hotspot_first(served: tuple[RunningServer, list[str]],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, conn = served
    assert fedsignal(["admin", "signals", "--cohort", COHORT, "--limit", "5", *conn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["cohort", "window", "(UTC)", "category"]
    assert len(lines) == 6
    top = lines[1]
    assert "wrong_tool" in top and "intent=billing" in top and re.search(r"\d+\.\d% \[\d+\.\d%, \d+\.\d%\]", top)
    assert top.split()[-2] == "3"  # tenants


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package `chromium`); "
                    "CI must install it for this test to run")
def test_html_report_renders_its_plots_in_headless_chromium(tmp_path: Path) -> None:
    ctx = make_context(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "state")
    populate(ctx)
    running, admin_dir = serve(ctx, tmp_path)
    page = tmp_path / "out" / "report.html"
    try:
        assert fedsignal(["admin", "report", "--html", str(page), "--server", f"127.0.0.1:{running.port}",
                          "--credentials", str(admin_dir)]) == 0
    finally:
        running.stop(0)
        ctx.engine.dispose()
    source = page.read_text()
    # self-contained: no scripts, no external stylesheets, images or fonts
    assert "<script" not in source and "<link" not in source and "<img" not in source
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", source)
    assert "@import" not in source and "url(" not in source

    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    plots = dict(re.findall(r'<svg class="rate-plot"[^>]*data-measure="([^"]+)"[^>]*>(.*?)</svg>', dom, re.S))
    assert {"wrong_tool", "timeout"} <= set(plots)
    series = dict(re.findall(r'<g class="series" data-slice="([^"]+)">(.*?)</g>', plots["wrong_tool"], re.S))
    hot = series["artifact_version=baseline, intent=billing"]
    assert len(re.findall(r'<circle class="estimate"', hot)) == 4  # one point per window
    assert len(re.findall(r'<line class="interval"', hot)) == 4
    assert "<polyline" in hot
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


def test_report_puts_the_most_harmful_measure_first() -> None:
    from datetime import UTC, datetime

    from fedsignal.v1 import admin_pb2

    from server.signals.report_html import render_report

    def cell(measure: str, z: float, intent: str) -> admin_pb2.MergedCell:
        return admin_pb2.MergedCell(cohort="c", window_start=0, window_end=3600, measure=measure,
                                    slice={"intent": intent, "artifact_version": "baseline"}, estimate=10,
                                    variance=4, rate=0.2, rate_low=0.1, rate_high=0.3, tenants=5, z_score=z)

    response = admin_pb2.ListSignalsResponse(min_tenants=5, cells=[
        cell("escalated", -6.0, "billing"),      # unusually clean: not harm
        cell("task_success", -3.0, "billing"),   # a drop: harm 3
        cell("wrong_tool", 5.0, "refund"),       # a rise: harm 5
    ])
    page = render_report(response, generated_at=datetime.now(UTC))
    order = [page.index(f"<h3>{m}</h3>") for m in ("wrong_tool", "task_success", "escalated")]
    assert order == sorted(order)
