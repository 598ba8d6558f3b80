"""A collector in a separate process, driven by the crash and concurrency tests.

Run as ``python -m tests.tenant_agent.collector.worker MODE STATE_DIR [ARGS...]``. Every
line it prints is flushed, so the parent can kill it at a precise point.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from aggregation.clock import from_unix
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, ReleaseConfig
from tenant_agent.serving import serve

from .fakes import HOUR, T0, make_config, turn


def config(state_dir: Path, rho_per_period: float = 10.0):  # type: ignore[no-untyped-def]
    return make_config(state_dir, budget=BudgetConfig(rho_per_period=rho_per_period), release=ReleaseConfig(rho=0.5))


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> int:
    mode, state_dir = argv[0], Path(argv[1])
    if mode == "close":
        # Wait for the parent's start signal so two processes race for real.
        budget, now, go = float(argv[2]), float(argv[3]), Path(argv[4])
        with Collector(config(state_dir, budget)) as c:
            say("ready")
            while not go.exists():
                time.sleep(0.005)
            outcomes = c.close_windows(now=from_unix(now))
            say(json.dumps([[o.window_start, o.state] for o in outcomes]))
        return 0
    if mode == "seal_then_hang":
        start = float(argv[2]) if len(argv) > 2 else T0
        with Collector(config(state_dir)) as c:
            c.record_many([turn(f"s{i}", start + i, tool_error=i % 3 == 0) for i in range(50)])
            outcomes = c.close_windows(now=from_unix(start + HOUR))
            say("sealed " + ",".join(o.release_key or "" for o in outcomes))
            time.sleep(120)  # killed here: sealed, never sent
        return 1
    if mode == "deliver_hang":
        # Sends to the enrolled server, which holds the reply; the parent kills us mid-RPC.
        start = float(argv[2])
        with Collector(config(state_dir)) as c:
            say("delivering")
            c.deliver(now=from_unix(start + HOUR))
            say("returned")
        return 1
    if mode == "record_loop":
        batches, size = int(argv[2]), int(argv[3])
        with Collector(config(state_dir)) as c:
            say("ready")
            for b in range(batches):
                events = [
                    replace(turn(f"s{b}-{i}", T0 + (b * size + i) % 3000), event_id=f"e{b}-{i}")
                    for i in range(size)
                ]
                c.record_many(events)
                say(f"acked {b}")
        return 0
    if mode == "record_until":
        # Records into one window until the stop file appears, reporting each ack.
        size, stop = int(argv[2]), Path(argv[3])
        with Collector(config(state_dir)) as c:
            b = 0
            while not stop.exists():
                result = c.record_many([turn(f"r{b}-{i}", T0 + (b + i) % 3000) for i in range(size)])
                say(f"acked {result.recorded} {result.late_dropped}")
                b += 1
            say("done")
        return 0
    if mode == "serve":
        # `agent run` in miniature: OTLP + resolve listeners and the loops.
        from tenant_agent.config import LoopConfig

        cfg = config(state_dir).model_copy(update=dict(
            otlp_listen="127.0.0.1:0",
            resolve_listen="127.0.0.1:0",
            loops=LoopConfig(close_interval_seconds=3600, deliver_interval_seconds=3600,
                             bundle_interval_seconds=3600),
        ))
        with Collector(cfg) as c:
            serve(c, ready=lambda serving: say(f"serving {serving.otlp_port}"))
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
