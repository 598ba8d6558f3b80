"""`agent run`: the collector's listeners and periodic loops.

The OTLP receiver (INGEST's servicers) stores each export through
``Collector.record_many`` before it answers, the resolve endpoint (BUNDLES)
answers agents' artifact lookups, and one loop thread closes due windows,
delivers the outbox and pulls bundles on their intervals. Stopping is
graceful: listeners drain, the loop finishes its current step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from aggregation.events import DecisionEvent
from tenant_agent import replay_agent

if TYPE_CHECKING:
    from tenant_agent.bundles import ResolveServer
    from tenant_agent.collector import Collector
    from tenant_agent.ingest.otlp_server import OtlpReceiver

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class Serving:
    collector: Collector
    otlp_server: grpc.Server
    otlp_port: int
    resolve_server: ResolveServer
    resolve_port: int
    receiver: OtlpReceiver
    _last: dict[str, float] = field(default_factory=dict)

    def _due(self, name: str, interval: float, now: float) -> bool:
        last = self._last.get(name)
        if last is None or now - last >= interval:
            self._last[name] = now
            return True
        return False

    def tick(self) -> None:
        """One pass of the periodic work, each step isolated from the others' failures."""
        c = self.collector
        loops = c.config.loops
        now = c.clock()
        steps: list[tuple[str, float, Callable[[], object]]] = [
            # Turns whose trace root never came are due after the mapper's timeout.
            ("otlp_flush", 1.0, lambda: self.receiver.flush()),
            ("close", loops.close_interval_seconds, lambda: c.close_windows(now)),
            ("deliver", loops.deliver_interval_seconds, lambda: c.deliver(now) if c.has_server else None),
            ("bundle", loops.bundle_interval_seconds, lambda: c.pull_bundle() if c.has_server else None),
            # In a rollout's replay stage: replay new cases in the background (validation-stages).
            ("replay", loops.bundle_interval_seconds, lambda: replay_agent.tick(c)),
        ]
        for name, interval, step in steps:
            if not self._due(name, interval, now):
                continue
            try:
                step()
            except Exception as exc:  # a failing step must not stop the collector
                log.warning("%s step failed: %s", name, exc)

    def run_loops(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(poll_seconds)

    def stop(self, grace: float = 5.0) -> None:
        self.otlp_server.stop(grace).wait()
        self.receiver.flush(force=True)
        self.resolve_server.close()


def start_serving(collector: Collector) -> Serving:
    """Start the OTLP receiver and the resolve endpoint on the configured addresses."""
    from tenant_agent.bundles import serve_resolve
    from tenant_agent.ingest.otlp_server import add_otlp_services

    cfg = collector.config
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

    def sink(events: Sequence[DecisionEvent]) -> None:
        collector.record_many(events)  # durable before the Export call answers

    receiver = add_otlp_services(otlp, sink, tenant_id=collector.tenant_id, redactor=collector.redactor)
    otlp_port = otlp.add_insecure_port(cfg.otlp_listen)
    otlp.start()
    host, port = split_listen(cfg.resolve_listen)
    resolve = serve_resolve(collector.resolver, host, port)
    resolve_port = resolve.port
    log.info("collector %s serving OTLP on port %s, resolve on port %s", collector.tenant_id, otlp_port, resolve_port)
    return Serving(collector, otlp, otlp_port, resolve, resolve_port, receiver)
