"""A real server on loopback with real TLS, on both stores, plus credentials helpers.

Seams for tests a healthy server cannot play, built in rather than monkeypatched:

* :class:`CallTap`, a server interceptor on every harness server: it records each request a
  method receives (duplicates included, as the bytes the client sent) and can hold a method's
  reply open after the real servicer has handled the call, until the test releases it;
* :meth:`Harness.stop_server` / :meth:`Harness.start_server`: an outage, then a new server
  instance on the same addresses over the same store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from fedsignal.v1 import admin_pb2, admin_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select

from aggregation.clock import Clock, FakeClock, system_clock
from aggregation.schema import LOCAL, SignalSchema
from server.app import ADMIN, ENROLLMENT, SECAGG, SIGNALS, RunningServer, Service, build_server
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.auth import require
from server.identity.ca import CertificateAuthority, generate_key, key_pem, make_csr
from server.migrate import init_db
from server.signals.models import SignalReport, SignalSchemaVersion
from server.signals.schemas import current_schema, fix_legacy_noise, fixed_noise_scale, publish_aggregation
from tenant_agent.transport import enroll as enroll_collector

CORE_SERVICES = [ENROLLMENT, ADMIN, SIGNALS]
SUBMIT_REPORT = "/fedsignal.v1.SignalService/SubmitReport"
#: Client channel options for a test that restarts the server: reconnect quickly once it is back.
FAST_RECONNECT: list[tuple[str, object]] = [("grpc.initial_reconnect_backoff_ms", 100),
                                            ("grpc.min_reconnect_backoff_ms", 100),
                                            ("grpc.max_reconnect_backoff_ms", 500)]


@dataclass
class Hold:
    """A held reply: ``arrived`` is set once the servicer has handled the call; the reply waits for ``release``."""

    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    timeout: float = 30.0


class CallTap(grpc.ServerInterceptor):
    """Records every unary request per method and holds a method's reply when asked (a test seam)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[str, list[bytes]] = {}
        self._holds: dict[str, Hold] = {}

    def received(self, method: str = SUBMIT_REPORT) -> list[bytes]:
        """Every request ``method`` received so far, in order, re-serialized deterministically."""
        with self._lock:
            return list(self._received.get(method, []))

    def hold(self, method: str = SUBMIT_REPORT, timeout: float = 30.0) -> Hold:
        """Hold the reply of the next call of ``method`` (handled and committed, not yet answered)."""
        hold = Hold(timeout=timeout)
        with self._lock:
            self._holds[method] = hold
        return hold

    def release_all(self) -> None:
        with self._lock:
            holds, self._holds = list(self._holds.values()), {}
        for hold in holds:
            hold.release.set()

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method, behaviour = handler_call_details.method, handler.unary_unary

        def tapped(request: Any, context: grpc.ServicerContext) -> Any:
            data = request.SerializeToString(deterministic=True) if hasattr(request, "SerializeToString") else request
            with self._lock:
                self._received.setdefault(method, []).append(data)
            response = behaviour(request, context)
            with self._lock:
                hold = self._holds.pop(method, None)
            if hold is not None:
                hold.arrived.set()
                hold.release.wait(hold.timeout)
            return response

        return grpc.unary_unary_rpc_method_handler(tapped, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


@dataclass
class Credentials:
    key: bytes
    cert: bytes
    subject: str


@dataclass
class Harness:
    ctx: ServerContext
    running: RunningServer
    ca: CertificateAuthority
    state_dir: Path
    admin: Credentials
    probe_started: threading.Event = field(default_factory=threading.Event)
    probe_release: threading.Event = field(default_factory=threading.Event)
    #: Without the secure-aggregation service no round can run: cohorts are published in local mode.
    local_cohorts: bool = True
    #: zCDP rho per window of a local cohort's fixed noise (the test collectors' ``[release] rho``).
    local_rho: float = 0.5
    services: Sequence[Service] = field(default_factory=lambda: list(CORE_SERVICES))
    tap: CallTap = field(default_factory=CallTap)
    #: False between :meth:`stop_server` and :meth:`start_server`.
    serving: bool = True

    def stop_server(self) -> None:
        """Take the server down (its store stays): clients see UNAVAILABLE until :meth:`start_server`."""
        self.tap.release_all()
        self.probe_release.set()
        self.running.stop(0)
        self.ctx.engine.dispose()
        self.serving = False

    def start_server(self) -> None:
        """A new server instance (new context, caches and servicers) on the same addresses and store."""
        if self.serving:
            raise RuntimeError("the server is running; stop_server() first")
        settings = self.ctx.settings.model_copy(update={"listen": f"127.0.0.1:{self.running.port}"})
        enroll_listen = f"127.0.0.1:{self.running.enrollment_port}"
        self.ctx = ServerContext.create(settings, clock=self.ctx.clock)
        self.probe_started, self.probe_release = threading.Event(), threading.Event()
        self.running = _serve(self.ctx, self.services, self.tap, (self.probe_started, self.probe_release),
                              enrollment_listen=enroll_listen)
        self.serving = True

    def close(self) -> None:
        if self.serving:
            self.stop_server()

    def reports(self, tenant: str = "tenant-1") -> list[SignalReport]:
        """The reports the server stored for ``tenant``, in arrival order."""
        with self.ctx.sessions() as session:
            return list(session.scalars(
                select(SignalReport).where(SignalReport.tenant_id == tenant).order_by(SignalReport.id)))

    def seed_schema(self, schema: SignalSchema) -> None:
        """Store ``schema`` as its cohort's version ``schema.version``, as an earlier server published it.

        For a collector store made by an earlier release, whose sealed reports name a schema version
        this server must know exactly (the publishing API only ever adds the next version). Call it
        before anything creates the cohort's first version (:meth:`token` does); refuses a version the
        cohort already has.
        """
        with transaction(self.ctx.sessions) as session:
            known = session.scalars(select(SignalSchemaVersion.version).where(
                SignalSchemaVersion.cohort == schema.cohort, SignalSchemaVersion.version == schema.version)).first()
            if known is not None:
                raise ValueError(f"cohort {schema.cohort!r} already has schema version {schema.version}")
            session.add(SignalSchemaVersion(cohort=schema.cohort, version=schema.version,
                                            document=schema.to_json(), created_at=self.ctx.clock()))
            # An upgraded server's store: the legacy version was followed by the cut-over to a fixed scale.
            session.flush()
            fix_legacy_noise(session, self.ctx.clock())

    @property
    def mtls_target(self) -> str:
        return f"localhost:{self.running.port}"

    @property
    def enroll_target(self) -> str:
        return f"localhost:{self.running.enrollment_port}"

    def channel(self, creds: Credentials | None, *, ca_pem: bytes | None = None, port: int | None = None,
                options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        ca = ca_pem or self.ca.certificate_pem
        tls = grpc.ssl_channel_credentials(ca, creds.key, creds.cert) if creds else grpc.ssl_channel_credentials(ca)
        return grpc.secure_channel(f"localhost:{port or self.running.port}", tls, options=options or [])

    def enroll_channel(self) -> grpc.Channel:
        return self.channel(None, port=self.running.enrollment_port)

    def admin_stub(self, creds: Credentials | None = None) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel(creds or self.admin))

    def token(self, tenant: str, cohort: str = "retail", ttl: int = 3600) -> str:
        """A one-time enrollment token. A harness that serves no secure-aggregation rounds publishes
        the cohort in local mode (per-tenant reports at the scale the schema fixes for ``local_rho``)."""
        if self.local_cohorts:
            with transaction(self.ctx.sessions) as session:
                current = current_schema(session, cohort, clock=self.ctx.clock)
                publish_aggregation(session, cohort, LOCAL, fixed_noise_scale(current, self.local_rho),
                                    clock=self.ctx.clock)
        resp = self.admin_stub().CreateEnrollmentToken(
            admin_pb2.CreateEnrollmentTokenRequest(tenant_id=tenant, cohort=cohort, ttl_seconds=ttl), timeout=10
        )
        return str(resp.token)

    def enroll(self, token: str, name: str = "x") -> tuple[Credentials, enrollment_pb2.EnrollResponse]:
        key = generate_key()
        with self.enroll_channel() as ch:
            resp = enrollment_pb2_grpc.EnrollmentServiceStub(ch).Enroll(
                enrollment_pb2.EnrollRequest(token=token, csr_pem=make_csr(key, name)), timeout=10
            )
        return Credentials(key_pem(key), resp.client_certificate_pem, resp.tenant_id), resp

    def tenant(self, tenant: str, cohort: str = "retail") -> Credentials:
        return self.enroll(self.token(tenant, cohort), tenant)[0]

    def enroll_collector(self, state_dir: Path, tenant: str = "tenant-1", cohort: str = "cohort-a") -> None:
        """Enroll a collector state directory as ``tenant`` (credentials, server address and schema)."""
        enroll_collector(self.enroll_target, self.token(tenant, cohort), state_dir, self.ca.certificate_pem,
                         signals_address=self.mtls_target)

    def whoami(self, creds: Credentials | None, claimed: str = "", port: int | None = None) -> str:
        with self.channel(creds, port=port) as ch:
            return bytes(ch.unary_unary(PROBE_WHOAMI, None, None)(claimed.encode(), timeout=10)).decode()


PROBE_WHOAMI = "/fedsignal.test.Probe/WhoAmI"
PROBE_SLOW = "/fedsignal.test.Probe/Slow"


def probe_servicer(ctx: ServerContext, harness_events: tuple[threading.Event, threading.Event]) -> Callable[
        [grpc.Server], None]:
    """A tiny service: WhoAmI answers the certificate's tenant, ignoring the tenant named in the request."""
    started, release = harness_events

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        who = require(context, ctx, "tenant")
        ctx.metrics.report_outcome("accepted")
        return f"{who.subject}/{who.cohort}".encode()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        require(context, ctx, "any")
        started.set()
        release.wait(10)
        return b"finished"

    def add(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("fedsignal.test.Probe", {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami),
                "Slow": grpc.unary_unary_rpc_method_handler(slow),
            })
        ])

    return add


@contextmanager
def running_harness(database_url: str, state_dir: Path, **kwargs: Any) -> Iterator[Harness]:
    """:func:`start_harness`, closed (server stopped, store released) on the way out."""
    h = start_harness(database_url, state_dir, **kwargs)
    try:
        yield h
    finally:
        h.close()


@contextmanager
def harness_for_sealed_store(database_url: str, state_dir: Path, *, schema: SignalSchema, at: float,
                             tenant: str = "tenant-1") -> Iterator[tuple[Harness, grpc.Channel]]:
    """The real server for a collector store whose reports were sealed at a fixed past time (a fixture).

    The server knows ``schema`` (the version the store sealed under, see :meth:`Harness.seed_schema`);
    ``tenant`` enrolls at the real time (TLS checks certificates against it), then the server's clock
    reads ``at``, so the fixture's windows are as old to it as when they were sealed. Yields the
    harness and an mTLS channel of ``tenant``.
    """
    clock = FakeClock(time.time())
    with running_harness(database_url, state_dir, clock=clock) as h:
        h.seed_schema(schema)
        channel = h.channel(h.tenant(tenant, schema.cohort))
        clock.set(at)
        try:
            yield h, channel
        finally:
            channel.close()


def make_pki(state_dir: Path) -> CertificateAuthority:
    ca = CertificateAuthority.create(state_dir)
    ca.write_server_cert(state_dir)
    return ca


def start_harness(database_url: str, state_dir: Path, *, services: Sequence[Service] = CORE_SERVICES,
                  clock: Clock = system_clock, **settings_overrides: object) -> Harness:
    from server.review.trust_root import bootstrap_root

    ca = make_pki(state_dir)
    settings = ServerSettings(database_url=database_url, state_dir=state_dir, listen="127.0.0.1:0",
                              **settings_overrides)  # type: ignore[arg-type]
    ctx = ServerContext.create(settings, clock=clock)
    init_db(ctx.engine)
    now = clock()
    key, issued = ca.issue_key_and_cert("root-admin", None, "admin", now=now)
    with transaction(ctx.sessions) as session:
        identity.record_admin_certificate(session, "root-admin", issued.serial, issued.not_after, "test", now)
        bootstrap_root(session, state_dir=state_dir, reviewers=[CryptoSigner.generate_ed25519() for _ in range(3)],
                       now=now)
    started, release = threading.Event(), threading.Event()
    tap = CallTap()
    running = _serve(ctx, services, tap, (started, release))
    return Harness(ctx, running, ca, state_dir, Credentials(key, issued.certificate_pem, "root-admin"),
                   started, release, local_cohorts=SECAGG not in services, services=list(services), tap=tap)


def _serve(ctx: ServerContext, services: Sequence[Service], tap: CallTap,
           probe_events: tuple[threading.Event, threading.Event], *, enrollment_listen: str | None = None
           ) -> RunningServer:
    running = build_server(ctx, jobs=False, metrics_port=0, services=services, enrollment_listen=enrollment_listen,
                           extra_servicers=[probe_servicer(ctx, probe_events)], interceptors=[tap])
    ctx.revocations.clear()
    return running
