"""Assemble and run the gRPC server: TLS, servicers, health, reflection, metrics, jobs.

Ports. Python gRPC can either require a verified client certificate at the TLS
layer or not request one at all — it cannot *request* one optionally. So a
secure server listens twice, on one ``grpc.Server`` (same servicers):

* ``port`` (``settings.listen``): mutual TLS. A client certificate signed by
  the server CA is required and verified by TLS; a certificate of another CA
  never gets past the handshake. Every tenant and admin call goes here.
* ``enrollment_port`` (``enrollment_listen``; default: the listen port + 1,
  or an ephemeral port when listening on port 0): server-authenticated TLS
  without a client certificate. Only ``Enroll`` and the health check succeed
  there; every other method finds no certificate and is refused by
  :func:`server.identity.auth.require` with ``UNAUTHENTICATED``.

With ``settings.insecure_dev`` both are one plaintext port. Optionally
(``health_listen``) a third, plaintext port serves only the gRPC health
service, for orchestrators whose probes speak no TLS (Kubernetes ``grpc``
probes).

Services and periodic jobs are listed as code in ``SERVICES`` and ``JOBS``: a
service whose module is missing fails the import at start, never silently.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from sqlalchemy.exc import OperationalError

from aggregation.errors import FedsignalError
from server import observability
from server.admin import service as admin_service
from server.audit import run_audit_checkpoint
from server.context import ServerContext, ServerSettings
from server.db import database_error_line
from server.evaluation.sla import run_sla
from server.identity import service as identity_service
from server.identity.ca import server_tls_files
from server.observability import log_event
from server.review import bundle_service
from server.review import service as review_service
from server.review.candidates import run_detection
from server.review.trust_root import current_root_bytes
from server.rollout import service as rollout_service
from server.rollout.controller import run_controller
from server.secagg import service as secagg_service
from server.secagg.job import run_secagg
from server.signals import service as signals_service
from server.signals.merge import run_merge
from server.signals.schemas import current_schema

log = logging.getLogger("fedsignal.server")

INSECURE_WARNING = (
    "*** fedsignal server running with --insecure-dev: NO TLS, NO client certificates; callers "
    "choose their identity with x-fedsignal-* metadata. Never use this outside local development. ***"
)

Job = Callable[[ServerContext], None]


@dataclass(frozen=True)
class Service:
    """One gRPC service: its full name (health, reflection) and how to add its servicer."""

    name: str
    add_to_server: Callable[[grpc.Server, ServerContext], None]


def _add_enrollment(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    """Enrollment hands a new tenant the trust root and its cohort's schema besides its certificate."""
    package = identity_service.EnrollmentPackage(
        trust_root=current_root_bytes,
        signal_schema=lambda session, cohort: current_schema(session, cohort, clock=ctx.clock).to_proto(),
    )
    identity_service.add_to_server(grpc_server, ctx, package)


ENROLLMENT = Service("fedsignal.v1.EnrollmentService", _add_enrollment)
ADMIN = Service("fedsignal.v1.AdminService", admin_service.add_to_server)
SIGNALS = Service("fedsignal.v1.SignalService", signals_service.add_to_server)
REVIEW = Service("fedsignal.v1.ReviewService", review_service.add_to_server)
BUNDLES = Service("fedsignal.v1.BundleService", bundle_service.add_to_server)
ROLLOUT = Service("fedsignal.v1.RolloutService", rollout_service.add_to_server)
SECAGG = Service("fedsignal.v1.SecureAggregationService", secagg_service.add_to_server)

#: Every service the server runs, registered explicitly: a missing module is an import error at start.
SERVICES: tuple[Service, ...] = (ENROLLMENT, ADMIN, SIGNALS, REVIEW, BUNDLES, ROLLOUT, SECAGG)

#: The periodic jobs, in the order one pass runs them; each is safe under concurrent replicas.
JOBS: tuple[tuple[str, Job], ...] = (
    ("secagg", run_secagg),
    ("merge", run_merge),
    ("detect", run_detection),
    ("rollout", run_controller),
    ("audit-head", run_audit_checkpoint),
    ("sla", run_sla),
)


def run_jobs_once(ctx: ServerContext, jobs: Sequence[tuple[str, Job]] | None = None) -> dict[str, str | None]:
    """Run every periodic job once, in order; returns job → error text (None when it succeeded).

    A failing job is logged and does not stop the others.
    """
    outcome: dict[str, str | None] = {}
    for spec, fn in jobs if jobs is not None else JOBS:
        started = time.perf_counter()
        try:
            fn(ctx)
            outcome[spec] = None
            log_event(log, "job finished", logging.DEBUG, job=spec, seconds=round(time.perf_counter() - started, 4))
        except OperationalError as exc:
            # The database is down, refused the connection or timed out on a lock: every job says
            # so until it is back, one line each (the traceback only at debug level).
            reason = database_error_line(exc)
            outcome[spec] = f"database error: {reason}"
            log_event(log, "job failed: database error", logging.WARNING, job=spec, error=reason)
            log.debug("job failed: database error", exc_info=True, extra={"fields": {"job": spec}})
        except Exception as exc:  # one broken job must not stop the loop
            outcome[spec] = f"{type(exc).__name__}: {exc}"
            log.exception("job failed", extra={"fields": {"job": spec}})
    return outcome


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every call by method and status code; logs it (never its payload)."""

    def __init__(self, metrics: observability.ServerMetrics) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        metrics = self._metrics

        def finish(context: Any, started: float, failed: BaseException | None) -> None:
            code = context.code() if hasattr(context, "code") else None
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed is not None else grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            seconds = time.perf_counter() - started
            metrics.observe_request(method, name, seconds)
            log_event(log, "rpc", logging.INFO if name == "OK" else logging.WARNING,
                      method=method, code=name, ms=round(seconds * 1000, 2))

        def wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                failed: BaseException | None = None
                try:
                    return behavior(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, started, failed)

            return wrapped

        def wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                failed: BaseException | None = None
                try:
                    yield from behavior(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, started, failed)

            return wrapped

        kinds = [
            ("unary_unary", grpc.unary_unary_rpc_method_handler, wrap_unary),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, wrap_stream),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, wrap_unary),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, wrap_stream),
        ]
        for attr, make, wrap in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                return make(wrap(behavior), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler


class JobLoop:
    """Runs the periodic jobs every ``interval`` seconds on a daemon thread."""

    def __init__(self, ctx: ServerContext, jobs: Sequence[tuple[str, Job]], interval: float) -> None:
        self._ctx, self._jobs, self._interval = ctx, jobs, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedsignal-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            run_jobs_once(self._ctx, self._jobs)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


@dataclass
class RunningServer:
    """A started server. ``stop(grace)`` finishes in-flight calls for up to ``grace`` seconds."""

    server: grpc.Server
    port: int
    enrollment_port: int
    host: str
    metrics: observability.ServerMetrics
    health: health.HealthServicer
    services: list[str]
    metrics_port: int | None = None
    health_port: int | None = None
    _health_server: grpc.Server | None = None
    _job_loop: JobLoop | None = None
    _metrics_http: Any = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def enrollment_address(self) -> str:
        return f"{self.host}:{self.enrollment_port}"

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish (up to ``grace`` s), stop jobs and metrics."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        if self._job_loop is not None:
            self._job_loop.stop(timeout=grace)
        self.server.stop(grace).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._stopped.set()
        log_event(log, "server stopped", port=self.port)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` finished (or ``timeout`` passed); True when it did."""
        return self._stopped.wait(timeout)


class InsecureDevRefused(FedsignalError):
    """``insecure_dev`` asked for where it would expose an unauthenticated server."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_insecure_dev(settings: ServerSettings) -> None:
    """Refuse ``insecure_dev`` off loopback or on a database other than SQLite.

    Without TLS any caller picks its identity, so the mode is for a developer's own
    machine; ``insecure_dev_anywhere`` is the explicit second switch that allows more.
    """
    if not settings.insecure_dev or settings.insecure_dev_anywhere:
        return
    host, _port = _split_host_port(settings.listen)
    if not _is_loopback(host):
        raise InsecureDevRefused(
            f"--insecure-dev listens only on a loopback address, not {host!r} (anyone reaching it could act "
            "as any tenant or admin); use 127.0.0.1, or add --insecure-dev-anywhere if you really mean it"
        )
    if not settings.database_url.startswith("sqlite"):
        raise InsecureDevRefused(
            "--insecure-dev runs only on a SQLite database, not a production store; drop --database-url, "
            "or add --insecure-dev-anywhere if you really mean it"
        )


def _split_host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_server(ctx: ServerContext, *, jobs: bool = True, job_interval: float = 10.0,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 enrollment_listen: str | None = None, health_listen: str | None = None, workers: int = 16,
                 services: Sequence[Service] = SERVICES,
                 extra_servicers: list[Callable[[grpc.Server], None]] | None = None,
                 interceptors: Sequence[grpc.ServerInterceptor] = ()) -> RunningServer:
    """Build, start and return the server described by ``ctx.settings``.

    ``metrics_port`` None: no Prometheus HTTP endpoint (0: an ephemeral port).
    ``health_listen`` HOST:PORT: also serve the health service alone, in plaintext, there.
    ``extra_servicers``: callables that add more servicers to the grpc server (tests).
    ``interceptors``: more server interceptors, after the metrics one (tests: a seam that records or holds calls).
    """
    settings = ctx.settings
    check_insecure_dev(settings)
    metrics = ctx.metrics
    limit = settings.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedsignal-rpc"),
        interceptors=[MetricsInterceptor(metrics), *interceptors],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    registered: list[str] = []
    for service in services:
        service.add_to_server(server, ctx)
        registered.append(service.name)
    for add in extra_servicers or []:
        add(server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*registered, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )

    host, port = _split_host_port(settings.listen)
    if settings.insecure_dev:
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
        log_event(log, INSECURE_WARNING, logging.WARNING)
        bound_port = server.add_insecure_port(_bind(host, port))
        enroll_port = bound_port
    else:
        key, cert, ca_pem = server_tls_files(settings.state_dir)
        mtls = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca_pem, require_client_auth=True)
        bound_port = server.add_secure_port(_bind(host, port), mtls)
        if enrollment_listen is None:
            enroll_host, enroll_req = host, (port + 1 if port else 0)
        else:
            enroll_host, enroll_req = _split_host_port(enrollment_listen)
        enroll_port = server.add_secure_port(_bind(enroll_host, enroll_req), grpc.ssl_server_credentials([(key, cert)]))
    if not bound_port or not enroll_port:
        raise OSError(f"could not bind {settings.listen}")

    metrics_http = None
    bound_metrics_port = None
    if metrics_port is not None:
        metrics_http, _thread = start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
        bound_metrics_port = int(metrics_http.server_port)

    health_server = None
    bound_health_port = None
    if health_listen is not None:
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="fedsignal-health"),
                                    options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        bound_health_port = health_server.add_insecure_port(_bind(*_split_host_port(health_listen)))
        health_server.start()

    server.start()
    for service_name in ["", *registered]:
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        server=server, port=bound_port, enrollment_port=enroll_port, host=host, metrics=metrics,
        health=health_servicer, services=registered, metrics_port=bound_metrics_port, _metrics_http=metrics_http,
        health_port=bound_health_port, _health_server=health_server,
    )
    if jobs:
        running._job_loop = JobLoop(ctx, JOBS, job_interval)
        running._job_loop.start()
    log_event(log, "server started", port=bound_port, enrollment_port=enroll_port, metrics_port=bound_metrics_port,
              health_port=bound_health_port, services=registered, insecure_dev=settings.insecure_dev)
    return running
