"""Secure aggregation on two server replicas of one PostgreSQL store.

The in-process server of the harness and a `fedsignal server serve` subprocess share the
database; each collector talks to one of them, so one round's inputs, attestations and
unmask responses arrive at both, and both replicas' jobs try to close and release it (each
process with its own caches of round facts and revocation verdicts). The round is released
once, from every tenant, with the sum of their tables; a second window's round after it too.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedsignal.v1 import secagg_pb2
from sqlalchemy import func, select

from aggregation.secagg import MaskedInput, RoundContext
from fedsignal_cli.simulator import AgentNetwork, SimTenant
from server.audit import iter_audit, verify_audit
from server.secagg.job import run_rounds
from server.secagg.models import DONE, ParticipantRecord, RoundRecord
from server.secagg.rounds import SecAggSettings
from server.secagg.service import SERVICE_NAME
from server.signals.models import MergedWindow
from tenant_agent import Collector
from tenant_agent.windows import WindowBook
from tests.e2e.secagg_support import advance_until, secure_collector, serving
from tests.harness import Harness
from tests.server.signals.procs import ServerProcess

pytestmark = pytest.mark.slow
WINDOW = 3600


@pytest.fixture
def h(postgres_url: str, tmp_path: Path) -> Iterator[Harness]:
    with serving(postgres_url, tmp_path / "server", SecAggSettings(submit_seconds=60.0, unmask_seconds=60.0)) as h:
        yield h


def _rounds(h: Harness) -> list[RoundRecord]:
    with h.ctx.sessions() as session:
        return list(session.scalars(select(RoundRecord).order_by(RoundRecord.window_start)).all())


def _released(h: Harness, start: int) -> bool:
    return any(r.window_start == start and r.phase == DONE for r in _rounds(h))


def test_rounds_spread_over_two_replicas_are_released_once_each(h: Harness, tmp_path: Path) -> None:
    replica = ServerProcess(h.state_dir, h.ctx.settings.database_url, tmp_path / "replica.log", job_interval=0.1)
    replica.start()
    collectors: list[Collector] = []
    try:
        servers = [h.mtls_target, f"localhost:{replica.port}"]
        tenants = [f"t{i}" for i in range(5)]
        collectors = [secure_collector(h, tmp_path, t, server=servers[i % 2]) for i, t in enumerate(tenants)]
        schema = collectors[0].schema
        assert schema.aggregation_mode == "secure"
        net = AgentNetwork([SimTenant(t, "retail", 25) for t in tenants], seed=9)
        first = (int(time.time()) // WINDOW - 3) * WINDOW
        truths = []
        for start in (first, first + WINDOW):
            truth = np.zeros(schema.size, dtype=np.int64)
            for sim, c in zip(net.tenants, collectors, strict=True):
                c.record_many(net.window_events(sim, start, WINDOW))
                with c.store.engine.connect() as conn:
                    truth += WindowBook.bounded_table(conn, start, schema)
                assert [o.state for o in c._sealer.close_due(start + WINDOW + 1, schema)] == ["sealed"]
            truths.append(truth)
            # Every collector moves its round on through its own replica; this process's job runs
            # too, as the replica's own job loop does every 0.1 s.
            advance_until(collectors, functools.partial(_released, h, start), run_job=lambda: run_rounds(h.ctx), timeout=90)
        rounds = _rounds(h)
        assert [(r.window_start, r.phase) for r in rounds] == [(first, DONE), (first + WINDOW, DONE)]
        with h.ctx.sessions() as session:
            merged = session.scalars(select(MergedWindow).order_by(MergedWindow.window_start)).all()
            released = [e for e in iter_audit(session) if e.kind == "secagg.round.released"]
            assert len(released) == 2 and verify_audit(session).ok
            assert session.scalar(select(func.count()).select_from(ParticipantRecord)
                                  .where(ParticipantRecord.masked_input.is_not(None))) == 0
        assert [(m.window_start, m.tenants, m.generation) for m in merged] == [(first, 5, 1), (first + WINDOW, 5, 1)]
        for row, truth in zip(merged, truths, strict=True):
            cells = np.frombuffer(row.cells, dtype="<i8")
            assert np.all(np.abs(cells - truth) < 8 * np.sqrt(row.variance))
        # Both replicas served the rounds: this process saw the inputs of t0, t2 and t4 only.
        inputs = h.tap.received(f"/{SERVICE_NAME}/SubmitMaskedInput")
        senders = sorted(MaskedInput.from_bytes(secagg_pb2.SubmitMaskedInputRequest.FromString(b).masked_input,
                                                RoundContext.from_bytes(r.context)).sender
                         for b in inputs for r in rounds
                         if secagg_pb2.SubmitMaskedInputRequest.FromString(b).round_id == r.round_id)
        assert senders == ["t0", "t0", "t2", "t2", "t4", "t4"]
        assert replica.proc is not None and replica.proc.poll() is None
        log = (tmp_path / "replica.log").read_text()
        assert "Traceback" not in log
        for c in collectors:
            c.secure.advance_all()
            assert c.secure.loss_summary().rounds_done == 2
    finally:
        for c in collectors:
            c.close()
        replica.stop()
