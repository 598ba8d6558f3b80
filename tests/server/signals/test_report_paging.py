"""`admin report --html` pages the cells instead of failing with RESOURCE_EXHAUSTED (issue 13, item 10).

Before, ListSignals answered every cell in one message; once the data grew past the
message limit (9.2 MB against 4 MiB in the report) the call failed. The server now cuts
each answer to fit and names the next offset; the CLI follows the pages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from fedsignal_cli.main import main as fedsignal
from server.admin.service import PAGE_HEADROOM_BYTES
from server.admin_cli.common import mtls_channel
from server.signals.views import list_signals
from tests.server.signals.helpers import make_context
from tests.server.signals.test_admin_report import populate, serve

# A message limit that holds only a handful of cells per answer.
SMALL_LIMIT = PAGE_HEADROOM_BYTES + 2_000


def test_report_follows_pages_when_the_cells_exceed_the_message_limit(tmp_path: Path) -> None:
    ctx = make_context(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "state")
    populate(ctx)
    ctx.settings = ctx.settings.with_changes(max_message_bytes=SMALL_LIMIT)
    with ctx.sessions() as s:
        every = list_signals(s, ctx.settings, admin_pb2.ListSignalsRequest(limit=100_000))
    assert every.ByteSize() > SMALL_LIMIT  # one answer could not carry them all
    running, admin_dir = serve(ctx, tmp_path)
    try:
        with mtls_channel(f"127.0.0.1:{running.port}", admin_dir) as ch:
            first = admin_pb2_grpc.AdminServiceStub(ch).ListSignals(admin_pb2.ListSignalsRequest(limit=100_000))
        assert 0 < len(first.cells) < len(every.cells)
        assert first.next_offset == len(first.cells)
        assert list(first.cells) == list(every.cells[: len(first.cells)])

        page = tmp_path / "report.html"
        assert fedsignal(["admin", "report", "--html", str(page), "--server", f"127.0.0.1:{running.port}",
                          "--credentials", str(admin_dir)]) == 0
        assert page.exists()
        limited = fedsignal(["admin", "signals", "--limit", str(len(first.cells) + 3), "--json",
                             "--server", f"127.0.0.1:{running.port}", "--credentials", str(admin_dir)])
        assert limited == 0
    finally:
        running.stop(0)
        ctx.engine.dispose()


def test_report_prints_how_many_cells_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = make_context(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "state")
    populate(ctx)
    ctx.settings = ctx.settings.with_changes(max_message_bytes=SMALL_LIMIT)
    with ctx.sessions() as s:
        every = list_signals(s, ctx.settings, admin_pb2.ListSignalsRequest(limit=100_000))
    running, admin_dir = serve(ctx, tmp_path)
    conn = ["--server", f"127.0.0.1:{running.port}", "--credentials", str(admin_dir)]
    try:
        capsys.readouterr()
        assert fedsignal(["admin", "report", "--html", str(tmp_path / "r.html"), *conn]) == 0
        wrote = re.search(r"\((\d+) cells\)", capsys.readouterr().out)
        assert wrote is not None and int(wrote.group(1)) == len(every.cells)
        assert fedsignal(["admin", "signals", "--limit", "7", "--json", *conn]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 7
    finally:
        running.stop(0)
        ctx.engine.dispose()
