"""`agent run`: the collector's listeners and periodic loops.

The OTLP receiver stores each export through ``Collector.record_many``
before it answers, the resolve endpoint answers agents' artifact lookups, and
one loop thread closes due windows, delivers the outbox and pulls bundles on
their intervals. Stopping is graceful: listeners drain, the loop finishes its
current step.

This module drives a :class:`~tenant_agent.collector.Collector`; the
collector does not know about it (no import back).

Both listeners refuse an address already in use: gRPC would otherwise bind
with ``SO_REUSEPORT`` and a second collector on the same port would silently
take half of the first one's telemetry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from aggregation.clock import to_unix
from aggregation.errors import FedsignalError
from aggregation.events import DecisionEvent
from tenant_agent import replay_agent
from tenant_agent.bundles import ResolveServer, serve_resolve
from tenant_agent.collector import Collector
from tenant_agent.ingest.otlp_server import OtlpReceiver, add_otlp_services

log = logging.getLogger(__name__)

#: No SO_REUSEPORT: a port already in use is an error, not a shared port.
GRPC_LISTEN_OPTIONS = (("grpc.so_reuseport", 0),)


class ListenError(FedsignalError):
    """A listener could not bind its address (in use, or not a local address)."""

    exit_code = 2


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenError(f"listen address {listen!r} must be HOST:PORT")
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
        at = c.clock()
        now = to_unix(at)
        steps: list[tuple[str, float, Callable[[], object]]] = [
            # Turns whose trace root never came are due after the mapper's timeout.
            ("otlp_flush", 1.0, lambda: self.receiver.flush()),
            ("close", loops.close_interval_seconds, lambda: c.close_windows(at)),
            ("deliver", loops.deliver_interval_seconds, lambda: c.deliver(at) if c.has_server else None),
            ("bundle", loops.bundle_interval_seconds, lambda: c.pull_bundle() if c.has_server else None),
            # In a rollout's replay stage: replay new cases in the background.
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
    """Start the OTLP receiver and the resolve endpoint on the configured addresses.

    Raises :class:`ListenError` when either address cannot be bound (nothing is left running).
    """
    cfg = collector.config
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=list(GRPC_LISTEN_OPTIONS))

    def sink(events: Sequence[DecisionEvent]) -> None:
        # Durable before the Export call answers; with the texts the mapper held unredacted
        # (``defer`` mode: replay capture redacts only those of the cases it stores).
        collector.record_many(events, held=receiver.mapper.take_held())

    receiver = add_otlp_services(otlp, sink, mapper=collector.otlp_mapper())  # its redactor and text decision
    try:
        otlp_port = otlp.add_insecure_port(cfg.otlp_listen)
    except RuntimeError:
        otlp_port = 0
    if not otlp_port:
        raise ListenError(
            f"cannot listen for OTLP on {cfg.otlp_listen}: the address is in use (another collector?) or not local; "
            "set otlp_listen in the collector config"
        )
    otlp.start()
    host, port = split_listen(cfg.resolve_listen)
    try:
        resolve = serve_resolve(collector.resolver, host, port)
    except OSError as exc:
        otlp.stop(0).wait()
        raise ListenError(
            f"cannot serve resolve on {cfg.resolve_listen}: {exc.strerror or exc} (another collector?); "
            "set resolve_listen in the collector config"
        ) from None
    log.info("collector %s serving OTLP on port %s, resolve on port %s", collector.tenant_id, otlp_port, resolve.port)
    return Serving(collector, otlp, otlp_port, resolve, resolve.port, receiver)


def serve(collector: Collector, stop: threading.Event | None = None, *,
          ready: Callable[[Serving], None] | None = None) -> None:
    """Serve OTLP and resolve endpoints and run the periodic loops until ``stop`` is set.

    ``ready`` is called with the running listeners (their bound ports) once
    they accept calls. Without ``stop`` this serves until the process ends.
    """
    stop = stop or threading.Event()
    serving = start_serving(collector)
    try:
        if ready is not None:
            ready(serving)
        serving.run_loops(stop)
    finally:
        serving.stop()
