"""Helpers of the secure-aggregation end-to-end tests: a harness that serves secure aggregation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.app import SECAGG
from server.secagg.rounds import SecAggSettings, configure
from tenant_agent import Collector, CollectorConfig, enroll
from tenant_agent.config import BudgetConfig
from tests.harness import CORE_SERVICES, Harness, start_harness

SECAGG_SERVICES = [*CORE_SERVICES, SECAGG]


def secure_harness(database_url: str, state_dir: Path) -> Harness:
    return start_harness(database_url, state_dir, services=SECAGG_SERVICES, min_tenants=1)


@contextmanager
def serving(database_url: str, state_dir: Path, settings: SecAggSettings | None = None) -> Iterator[Harness]:
    """A running secure harness (with these round settings), stopped and disposed afterwards."""
    harness = secure_harness(database_url, state_dir)
    if settings is not None:
        configure(harness.ctx, settings)
    try:
        yield harness
    finally:
        harness.running.stop(0)
        harness.ctx.engine.dispose()


def secure_collector(h: Harness, tmp: Path, tenant: str, *, cohort: str = "retail", server: str | None = None,
                     register: bool = True) -> Collector:
    """An enrolled collector of ``tenant`` talking to ``server`` (the harness by default); with
    ``register``, its masking key is in the roster and it holds the cohort's schema."""
    address = server or h.mtls_target
    tdir = tmp / tenant
    enroll(h.enroll_target, h.token(tenant, cohort), tdir, h.ca.certificate_pem, signals_address=address)
    c = Collector(CollectorConfig(state_dir=tdir, server=address, budget=BudgetConfig(rho_per_period=10.0)))
    if register:
        assert c.secure.register_key()
        c.refresh_schema()
    return c


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
