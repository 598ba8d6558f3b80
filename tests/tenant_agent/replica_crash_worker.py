"""A collector replica that stops at a chosen point, to be killed there (for test_replicas_crash.py).

``python -m tests.tenant_agent.replica_crash_worker MODE STORE_URL STATE_DIR ARGS...``; every line is flushed.
The stops are made here, in the test's process, by wrapping a store step the real code calls; the
collector code has no test hook.

- ``seal_hold NOW``: closes due windows; inside the first seal, after its spend and sealed report are
  written and before the transaction commits (the ledger's advisory lock and the window's row lock held),
  prints ``sealing <window start>`` and waits to be killed.
- ``seal NOW``: closes due windows; prints ``table <window start> <json cells>`` for the exact bounded
  table of every window it seals (before noise), then the outcomes as JSON.
- ``record_hold REPLICA BATCHES HOLD``: records BATCHES batches of ``replica_worker.loop_batch``, printing
  ``acked <batch>`` after each; batch HOLD stops inside its transaction, after its contributions are
  written and before they commit, printing ``holding <batch>``, and waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from aggregation.clock import from_unix
from tenant_agent import windows
from tenant_agent.collector import Collector
from tenant_agent.store import CollectorStore

from .collector.fakes import make_config
from .replica_worker import loop_batch


def say(line: str) -> None:
    print(line, flush=True)


def wait_to_be_killed() -> None:
    while True:
        time.sleep(1)


def main(argv: list[str]) -> int:
    mode, url, state_dir = argv[0], argv[1], Path(argv[2])
    with Collector(make_config(state_dir, store_url=url)) as c:
        if mode == "seal_hold":
            forget = windows.WindowBook.forget_contributions

            def hold(conn: Any, window_start: int) -> None:
                forget(conn, window_start)
                say(f"sealing {window_start}")
                wait_to_be_killed()

            windows.WindowBook.forget_contributions = staticmethod(hold)  # type: ignore[method-assign]
            say("ready")
            c.close_windows(now=from_unix(float(argv[3])))
            raise SystemExit("sealed without stopping")
        if mode == "seal":
            bounded = windows.WindowBook.bounded_table

            def table_of(conn: Any, window_start: int, schema: Any) -> Any:
                table = bounded(conn, window_start, schema)
                say(f"table {window_start} {json.dumps([int(v) for v in table])}")
                return table

            windows.WindowBook.bounded_table = staticmethod(table_of)  # type: ignore[method-assign]
            say("ready")
            outcomes = c.close_windows(now=from_unix(float(argv[3])))
            say(json.dumps([[o.window_start, o.state, o.release_key] for o in outcomes]))
            return 0
        if mode == "record_hold":
            replica, count, hold_at = int(argv[3]), int(argv[4]), int(argv[5])
            add_counters = CollectorStore.add_counters
            say("ready")
            for b in range(count):
                if b == hold_at:

                    def hold_batch(conn: Any, deltas: dict[str, int], b: int = b) -> None:
                        say(f"holding {b}")
                        wait_to_be_killed()

                    CollectorStore.add_counters = staticmethod(hold_batch)  # type: ignore[method-assign]
                c.record_many(loop_batch(replica, b))
                CollectorStore.add_counters = staticmethod(add_counters)  # type: ignore[method-assign]
                say(f"acked {b}")
            say("done")
            return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
