"""Helpers of the secure-aggregation end-to-end tests: a harness that serves secure aggregation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.app import SECAGG
from tenant_agent import Collector
from tests.harness import CORE_SERVICES, Harness, start_harness

SECAGG_SERVICES = [*CORE_SERVICES, SECAGG]


def secure_harness(database_url: str, state_dir: Path) -> Harness:
    return start_harness(database_url, state_dir, services=SECAGG_SERVICES, min_tenants=1)


def advance_until(collectors: Sequence[Collector], done: Callable[[], bool], *, run_job: Callable[[], Any],
                  timeout: float = 60.0) -> None:
    """Let every collector move its rounds on (and the server's job run) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("the round did not finish in time")
        for c in collectors:
            c.secure.advance_all()
        run_job()
        time.sleep(0.05)
