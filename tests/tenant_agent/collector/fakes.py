"""Shared helpers of the collector's tests: configs, decision events, worker processes, fixed times.

Tests that need a server run the real one (``tests/harness.py``: real gRPC, mTLS, the server's
store); there is no stand-in server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from aggregation.events import DecisionEvent, ToolCall
from tenant_agent.config import BudgetConfig, CollectorConfig, DeliveryConfig, ReleaseConfig

HOUR = 3600.0
DAY = 24 * HOUR
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window boundary


def recent_t0(days: int = 2) -> float:
    """The UTC day boundary ``days`` before today: windows from there to now have ended, and the real
    server accepts them (it refuses windows that have not ended or are more than 400 days old)."""
    return (int(time.time() // DAY) - days) * DAY


def make_config(state_dir: Path, **overrides: Any) -> CollectorConfig:
    doc: dict[str, Any] = {
        "state_dir": state_dir,
        "tenant_id": "tenant-1",
        "cohort": "cohort-a",
        "budget": BudgetConfig(rho_per_period=10.0),
        "release": ReleaseConfig(rho=0.5),
        "delivery": DeliveryConfig(backoff_base_seconds=60.0, backoff_cap_seconds=4 * HOUR, rpc_timeout_seconds=5.0),
    }
    doc.update(overrides)
    return CollectorConfig(**doc)


def turn(session: str, at: float, *, intent: str | None = "billing", tool_error: bool = False,
         user: str | None = None, text: str | None = None, artifact_version: str | None = "baseline") -> DecisionEvent:
    calls = (ToolCall("lookup_order", error="http_500" if tool_error else None),)
    return DecisionEvent(
        tenant_id="tenant-1",
        session_id=session,
        timestamp=at,
        user_id=user,
        intent=intent,
        tool_calls=calls,
        outcome="failure" if tool_error else "success",
        error_type="http_500" if tool_error else None,
        artifact_version=artifact_version,
        text=text,
    )


REPO_ROOT = Path(__file__).resolve().parents[3]


def spawn_worker(*args: str) -> Any:
    """Start ``tests.tenant_agent.collector.worker`` in a real subprocess (stdout piped, line-buffered text)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tenant_agent.collector.worker", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(proc: Any) -> Any:
    """A queue fed by a thread reading ``proc``'s stdout (None at EOF), made on first use.

    Reading through a thread avoids mixing select() on the pipe with the text
    wrapper's read-ahead, which can hold complete lines select() never sees.
    """
    import queue

    lines = getattr(proc, "_fedsignal_lines", None)
    if lines is None:
        lines = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        proc._fedsignal_lines = lines
    return lines


def read_line(proc: Any, prefix: str, timeout: float = 60.0) -> str:
    """The next stdout line of ``proc`` starting with ``prefix`` (fails on EOF or timeout)."""
    import queue
    import time

    lines = _lines(proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"worker printed no {prefix!r} line in {timeout}s") from None
        if line is None:
            raise AssertionError(f"worker exited before {prefix!r}: {proc.stderr.read()}")
        if line.startswith(prefix):
            return str(line)


def remaining_lines(proc: Any, timeout: float = 60.0) -> list[str]:
    """Every stdout line not read yet, up to the process's exit."""
    lines = _lines(proc)
    out: list[str] = []
    while True:
        line = lines.get(timeout=timeout)
        if line is None:
            return out
        out.append(line)


def finish(proc: Any) -> list[str]:
    """The rest of a worker's output once it exits cleanly (killed if it has not exited by then)."""
    try:
        lines = remaining_lines(proc, timeout=120)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        return lines
    finally:
        if proc.poll() is None:
            proc.kill()

