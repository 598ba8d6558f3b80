"""One collector replica in its own process, on a shared PostgreSQL store (for test_replicas.py).

``python -m tests.tenant_agent.replica_worker MODE STORE_URL STATE_DIR ARGS...``; every line is
flushed, so the parent can kill it at a precise point.

- ``record REPLICA REPLICAS GO``: waits for the file GO, then records its share of ``events()``
  (every REPLICAS-th batch, starting at REPLICA) and prints ``acked <batch>`` after each.
- ``record_loop REPLICA BATCHES``: records BATCHES batches of distinct events with ids
  (``loop_batch``), printing ``acked <batch>`` after each.
- ``close NOW GO``: waits for GO, closes due windows, prints the outcomes as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from aggregation.clock import from_unix
from aggregation.events import DecisionEvent
from tenant_agent.collector import Collector

from .collector.fakes import HOUR, T0, make_config, turn

BATCH = 100
LOOP_SIZE = 100


def events() -> list[DecisionEvent]:
    """Three hourly windows; 60 sessions with several turns each, some failing, so L∞ and L0 bind."""
    out = []
    for i in range(1200):
        session = f"s{i % 60}"
        at = T0 + (i * 7) % int(3 * HOUR)
        out.append(turn(session, at, tool_error=i % 5 == 0, intent=["billing", "refund", None][i % 3]))
    return out


def batches() -> list[list[DecisionEvent]]:
    evs = events()
    return [evs[i : i + BATCH] for i in range(0, len(evs), BATCH)]


def loop_batch(replica: int, b: int) -> list[DecisionEvent]:
    return [
        replace(turn(f"r{replica}-{b}-{i}", T0 + (b * LOOP_SIZE + i) % 3000), event_id=f"r{replica}-e{b}-{i}")
        for i in range(LOOP_SIZE)
    ]


def say(line: str) -> None:
    print(line, flush=True)


def wait_for(go: Path) -> None:
    while not go.exists():
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    mode, url, state_dir = argv[0], argv[1], Path(argv[2])
    with Collector(make_config(state_dir, store_url=url)) as c:
        say("ready")
        if mode == "record":
            replica, replicas, go = int(argv[3]), int(argv[4]), Path(argv[5])
            wait_for(go)
            for b, batch in enumerate(batches()):
                if b % replicas == replica:
                    c.record_many(batch)
                    say(f"acked {b}")
            say("done")
            return 0
        if mode == "record_loop":
            replica, count = int(argv[3]), int(argv[4])
            for b in range(count):
                c.record_many(loop_batch(replica, b))
                say(f"acked {b}")
            say("done")
            return 0
        if mode == "close":
            now, go = float(argv[3]), Path(argv[4])
            wait_for(go)
            outcomes = c.close_windows(now=from_unix(now))
            say(json.dumps([[o.window_start, o.state, o.release_key] for o in outcomes]))
            return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
