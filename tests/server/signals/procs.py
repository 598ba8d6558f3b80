"""Real server processes for the replica and crash tests (`fedsignal server serve` in a subprocess)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from server.context import ServerContext
from server.signals.models import MergedWindow, SignalReport

REPO = Path(__file__).resolve().parents[3]


def fedsignal_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedsignal_cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=True)


class ServerProcess:
    """One `fedsignal server serve` replica on an ephemeral port, with merge jobs every ``job_interval``."""

    def __init__(self, state_dir: Path, database_url: str, log: Path, *, job_interval: float = 0.3,
                 min_tenants: int = 2, workers: int = 8) -> None:
        self.args = [sys.executable, "-m", "fedsignal_cli.main", "server", "serve", "--state-dir", str(state_dir),
                     "--database-url", database_url, "--listen", "127.0.0.1:0", "--job-interval", str(job_interval),
                     "--min-tenants", str(min_tenants), "--grace", "5", "--workers", str(workers)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 90) -> ServerProcess:
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._log_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"listening on \S*:(\d+)", self.log.read_bytes())
            if found:
                self.port = int(found.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"server did not start within {timeout}s: {self.log.read_text()[-2000:]}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no flush."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log_file.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
            self._log_file.close()


def wait_until_merged(ctx: ServerContext, expected_reports: int, timeout: float = 120) -> None:
    """Wait until the replicas' own jobs merged every stored report (no merging from the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx.sessions() as session:
            pending = session.scalar(select(SignalReport.id).where(SignalReport.merge_generation.is_(None)).limit(1))
            merged = sum(session.scalars(select(MergedWindow.reports)))
        if pending is None and merged >= expected_reports:
            return
        time.sleep(0.3)
    raise AssertionError(f"reports not merged within {timeout}s (merged {merged} of {expected_reports})")


def assert_every_window_sums_its_reports(ctx: ServerContext) -> int:
    """Each merged window == the sum of its stored reports; returns the number of merged reports."""
    with ctx.sessions() as session:
        reports = session.execute(select(SignalReport.cohort, SignalReport.window_start, SignalReport.schema_version,
                                         SignalReport.cells, SignalReport.merge_generation)).all()
        merged = session.scalars(select(MergedWindow)).all()
    by_unit: dict[tuple[str, int, int], list[bytes]] = {}
    for r in reports:
        assert r.merge_generation is not None
        by_unit.setdefault((r.cohort, r.window_start, r.schema_version), []).append(r.cells)
    assert {(m.cohort, m.window_start, m.schema_version) for m in merged} == set(by_unit)
    for m in merged:
        cells = by_unit[(m.cohort, m.window_start, m.schema_version)]
        expected = np.sum([np.frombuffer(c, dtype="<i8") for c in cells], axis=0)
        assert np.array_equal(np.frombuffer(m.cells, dtype="<i8"), expected), (m.cohort, m.window_start)
        assert m.reports == m.tenants == len(cells)
    return sum(m.reports for m in merged)
