"""Whole secure-aggregation rounds over real gRPC (mutual TLS, loopback) against the real server.

The server runs in its own process (``server.app.build_server`` with every service and
the job loop, SQLite); N in-process tenant clients hold real enrolled certificates, run
the kernel (``aggregation.secagg``), verify the signed roster (once per client, like a
collector, which keeps its verified roster) and the survivors' attestations (every round),
and talk to the server through the SecureAggregationService stubs. Dropouts are roster
members that never submit: the server waits for its submission deadline, so the table
prints the wall time both with and without that idle wait.

Figures, not assertions. Run: .venv/bin/python bench/secagg.py [--quick] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import inspect
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# gRPC's own log of channels closed at teardown (GOAWAY) is noise here; set before grpc loads.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from fedsignal.v1 import (  # noqa: E402
    admin_pb2,
    admin_pb2_grpc,
    enrollment_pb2,
    enrollment_pb2_grpc,
    secagg_pb2,
    secagg_pb2_grpc,
)

from aggregation.clock import system_clock  # noqa: E402
from aggregation.dp import DEFAULT_DELTA  # noqa: E402
from aggregation.schema import SignalSchema  # noqa: E402
from aggregation.secagg import (  # noqa: E402
    Attestation,
    ClientRound,
    RoundContext,
    UnmaskRequest,
    generate_keypair,
    plan_noise,  # noqa: E402
    word_dtype,
)
from tenant_agent.secagg import ATTESTATION_DOMAIN, RosterVerifier, roster_statement  # noqa: E402

#: The kernel takes pre-drawn noise shares and an agreement cache (False when this file benchmarks an older commit).
_NEW_KERNEL = "noise_share" in inspect.signature(ClientRound.submit).parameters
#: The kernel and server send a round's context without the roster to a tenant that holds it.
_HEADERS = hasattr(RoundContext, "header_bytes")
#: The unmask request names tenants by roster position and parses with the round's context.
_POSITIONS = "ctx" in inspect.signature(UnmaskRequest.from_bytes).parameters
FLOWER = "Flower SecAgg+ (issue 11, same machine): N=100, L=1000, 9 neighbours: 5.5-7.6 s; N=50: 2.7 s; N=200: 11-12 s"
COHORT = "bench"
#: In-process tenant clients run on this many threads (their RPCs overlap; their Python work shares one GIL).
THREADS = 8


def _schema(length: int) -> SignalSchema:
    half = length // 2
    return SignalSchema.from_dict({
        "cohort": COHORT, "version": 1, "taxonomy_version": "1.0.0",
        "dimensions": [{"name": "measure", "values": ["turns", "other"]},
                       {"name": "cell", "values": [f"c{i}" for i in range(half - 1)] + ["other"]}],
        "noise_scale": 28.284271247461902, "aggregation_mode": "secure",
    })


def _serve(db_url: str, state_dir: str, length: int, submit_seconds: float, pipe: Any) -> None:
    import logging

    from server.app import build_server
    from server.context import ServerContext, ServerSettings
    from server.db import transaction
    from server.identity import enrollment as identity
    from server.identity.ca import CertificateAuthority
    from server.migrate import init_db
    from server.review.trust_root import bootstrap_root
    from server.secagg.rounds import SecAggSettings, configure
    from server.signals.models import SignalSchemaVersion

    # The server logs every refused call at WARNING; here those are the expected late unmask
    # responses after a release (DEADLINE_EXCEEDED), one line each. Errors still show.
    for name in ("fedsignal.server", "server"):
        logging.getLogger(name).setLevel(logging.ERROR)
    state = Path(state_dir)
    ca = CertificateAuthority.create(state)
    ca.write_server_cert(state)
    ctx = ServerContext.create(ServerSettings(database_url=db_url, state_dir=state, listen="127.0.0.1:0",
                                              max_message_bytes=64 << 20))
    init_db(ctx.engine)
    now = datetime.now(UTC)
    key, issued = ca.issue_key_and_cert("bench-admin", None, "admin", now=now)
    from securesystemslib.signer import CryptoSigner

    with transaction(ctx.sessions) as session:
        identity.record_admin_certificate(session, "bench-admin", issued.serial, issued.not_after, "bench", now)
        bootstrap_root(session, state_dir=state, reviewers=[CryptoSigner.generate_ed25519() for _ in range(3)], now=now)
        session.add(SignalSchemaVersion(cohort=COHORT, version=1, document=_schema(length).to_json(), created_at=now))
    configure(ctx, SecAggSettings(submit_seconds=submit_seconds, unmask_seconds=60.0))
    from server.app import JOBS, JobLoop

    # The server's own job loops: the secure-aggregation job (it closes a round at its submission
    # deadline) every 50 ms, the others at the production default of 10 s.
    running = build_server(ctx, jobs=False)
    loops = [JobLoop(ctx, [j for j in JOBS if j[0] == "secagg"], 0.05),
             JobLoop(ctx, [j for j in JOBS if j[0] != "secagg"], 10.0)]
    for loop in loops:
        loop.start()
    pipe.send((running.port, running.enrollment_port, ca.certificate_pem, key, issued.certificate_pem))
    profile = os.environ.get("FEDSIGNAL_BENCH_PROFILE")
    if profile:  # a wall-clock profile of every server thread (yappi is not a dependency: cProfile per thread)
        import cProfile
        import threading

        profilers: list[cProfile.Profile] = []

        def tracer(*_: Any) -> None:
            prof = cProfile.Profile()
            profilers.append(prof)
            prof.enable()

        threading.setprofile(tracer)
    pipe.recv()  # stop
    for loop in loops:
        loop.stop(5)
    running.stop(0)
    if profile:
        import pstats

        threading.setprofile(None)  # type: ignore[arg-type]
        for prof in profilers:
            prof.disable()
        stats = pstats.Stats(*profilers) if profilers else None
        if stats is not None:
            stats.sort_stats("cumulative").dump_stats(profile)


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Tenant:
    tenant_id: str
    identity: ec.EllipticCurvePrivateKey
    private: bytes
    public: bytes
    stub: secagg_pb2_grpc.SecureAggregationServiceStub
    verifier: RosterVerifier | None = None
    up: int = 0
    down: int = 0
    #: X25519 agreements kept across rounds (the masking keys are long-term), like a collector's.
    pair_secrets: dict[bytes, bytes] = field(default_factory=dict)
    #: This window's noise share, drawn ahead of the round (a collector draws it when the window opens).
    noise: np.ndarray | None = None
    #: The roster of the last round (a collector keeps the one it verified).
    roster: tuple[Any, ...] = ()


def _enroll(port: int, enroll_port: int, ca: bytes, admin_key: bytes, admin_cert: bytes, n: int) -> list[Tenant]:
    admin = admin_pb2_grpc.AdminServiceStub(grpc.secure_channel(
        f"localhost:{port}", grpc.ssl_channel_credentials(ca, admin_key, admin_cert)))
    enroller = enrollment_pb2_grpc.EnrollmentServiceStub(
        grpc.secure_channel(f"localhost:{enroll_port}", grpc.ssl_channel_credentials(ca)))
    from server.identity.ca import make_csr

    tenants = []
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    for i in range(n):
        tid = f"tenant-{i:04d}"
        token = admin.CreateEnrollmentToken(admin_pb2.CreateEnrollmentTokenRequest(
            tenant_id=tid, cohort=COHORT, ttl_seconds=3600)).token
        key = ec.generate_private_key(ec.SECP256R1())
        resp = enroller.Enroll(enrollment_pb2.EnrollRequest(token=token, csr_pem=make_csr(key, tid)))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        channel = grpc.secure_channel(f"localhost:{port}",
                                      grpc.ssl_channel_credentials(ca, pem, resp.client_certificate_pem), options)
        stub = secagg_pb2_grpc.SecureAggregationServiceStub(channel)
        private, public = generate_keypair()
        sig = key.sign(roster_statement(COHORT, tid, public), ec.ECDSA(hashes.SHA256()))
        stub.RegisterMaskingKey(secagg_pb2.RegisterMaskingKeyRequest(public_key=public, signature=sig))
        tenants.append(Tenant(tid, key, private, public, stub))
    return tenants


def _run_round(tenants: list[Tenant], live: list[Tenant], window: int, schema: SignalSchema, ca: bytes,
               table: np.ndarray) -> dict[str, float]:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    clients: dict[str, ClientRound] = {}
    rid = ""

    def submit(t: Tenant) -> None:
        nonlocal rid
        query = secagg_pb2.GetRoundRequest(window_start=window, schema_version=1, omit_roster=True)
        if t.roster and _HEADERS:  # the roster of the last round: the context comes without it when unchanged
            query.roster_digest = roster_digest(t.roster)
        info = t.stub.GetRound(query)
        t.down += info.ByteSize()
        if getattr(info, "context_header", b""):
            ctx = RoundContext.from_header(info.context_header, t.roster)
        else:
            ctx = RoundContext.from_bytes(info.context)
        t.roster = ctx.roster
        assert t.verifier is not None and all(t.verifier.knows(e) for e in ctx.roster)  # verified once, kept
        plan = plan_noise(info.sigma_central, schema.max_cells_per_unit, schema.max_count_per_cell,
                          len(ctx.roster), ctx.threshold, info.delta)
        if _NEW_KERNEL:
            client = ClientRound(ctx, t.tenant_id, t.private, plan, pair_secrets=t.pair_secrets)
            msg = client.submit(plan.scale_table(table), noise_share=t.noise).to_bytes()
        else:  # this file run against an older kernel (before/after comparisons): noise drawn inline
            client = ClientRound(ctx, t.tenant_id, t.private, plan)
            msg = client.submit(plan.scale_table(table)).to_bytes()
        t.noise = None
        req = secagg_pb2.SubmitMaskedInputRequest(round_id=info.round_id, masked_input=msg)
        t.up += req.ByteSize()
        rid = info.round_id
        try:
            t.stub.SubmitMaskedInput(req)
        except grpc.RpcError as exc:  # past the submission deadline: this tenant is a dropout
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            return
        clients[t.tenant_id] = client

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(submit, live))
    t_last_input = time.perf_counter()
    late = len(live) - len(clients)
    live = [t for t in live if t.tenant_id in clients]
    ref = secagg_pb2.RoundRef(round_id=rid)
    while True:
        view = live[0].stub.GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid, omit_request=True,
                                                                    omit_attestations=True))
        if view.phase != secagg_pb2.COLLECTING:
            break
        time.sleep(0.005)
    t_closed = time.perf_counter()
    requests: dict[str, UnmaskRequest] = {}
    relayed: dict[str, list[Attestation]] = {}  # attestations a tenant's SubmitAttestation reply carried (>= t)

    def attest(t: Tenant) -> None:
        view = t.stub.GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid, omit_attestations=True))
        t.down += view.ByteSize()
        req = (UnmaskRequest.from_bytes(view.unmask_request, clients[t.tenant_id].ctx) if _POSITIONS
               else UnmaskRequest.from_bytes(view.unmask_request))  # type: ignore[call-arg]
        requests[t.tenant_id] = req
        digest = clients[t.tenant_id].attest(req)
        att = Attestation(t.tenant_id, digest, t.identity.sign(ATTESTATION_DOMAIN + digest, ec.ECDSA(hashes.SHA256())))
        msg = secagg_pb2.SubmitAttestationRequest(round_id=rid, attestation=att.to_bytes())
        t.up += msg.ByteSize()
        reply = t.stub.SubmitAttestation(msg)
        t.down += reply.ByteSize()
        carried = _attestations_of(clients[t.tenant_id].ctx, getattr(reply, "attestations", ()))
        if len(carried) >= clients[t.tenant_id].ctx.threshold:  # enough attested before this one
            relayed[t.tenant_id] = carried

    def unmask(t: Tenant) -> None:
        atts = relayed.get(t.tenant_id)
        if atts is None:
            view = t.stub.GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid, omit_request=True))
            t.down += view.ByteSize()
            atts = _attestations_of(clients[t.tenant_id].ctx, view.attestations)
        assert t.verifier is not None
        resp = clients[t.tenant_id].unmask(requests[t.tenant_id], atts, t.verifier.verify_attestation)
        msg2 = secagg_pb2.SubmitUnmaskResponseRequest(round_id=rid, unmask_response=resp.to_bytes())
        t.up += msg2.ByteSize()
        try:
            t.stub.SubmitUnmaskResponse(msg2)
        except grpc.RpcError as exc:  # the job released as soon as the responses sufficed
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(attest, live))
    t_attested = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(unmask, live))
    t_answered = time.perf_counter()
    while live[0].stub.GetRoundStatus(ref).phase != secagg_pb2.DONE:
        time.sleep(0.002)
    t_done = time.perf_counter()
    idle = max(0.0, t_closed - t_last_input) if len(live) < len(tenants) else 0.0
    if os.environ.get("FEDSIGNAL_BENCH_PHASES"):
        print(f"  phases: submit {t_last_input - t0:.3f} close {t_closed - t_last_input:.3f} "
              f"attest {t_attested - t_closed:.3f} unmask {t_answered - t_attested:.3f} "
              f"release {t_done - t_answered:.3f}", flush=True)
    return {"wall": t_done - t0, "idle": idle, "client_cpu": time.process_time() - cpu0, "late": late}


def roster_digest(roster: tuple[Any, ...]) -> bytes:
    from aggregation.secagg import roster_digest as digest

    return digest(roster)


def _attestations_of(ctx: RoundContext, relayed: Any) -> list[Attestation]:
    """The relayed attestations of a reply: canonical RelayedAttestations bytes, or (a server from
    before the compact relay) a list of canonical Attestation bytes."""
    if isinstance(relayed, bytes):
        from tenant_agent.secagg.round import relayed_attestations  # the collector's own parse

        return relayed_attestations(ctx, relayed)
    return [Attestation.from_bytes(a) for a in relayed]


def _payload_bytes_per_value(bits: int) -> float:
    """Bytes of one value of the masked vector: b-bit packed, or a whole uint32/uint64 word (older kernels)."""
    try:
        from aggregation.secagg.arithmetic import packed_width
    except ImportError:
        return float(np.dtype(word_dtype(bits)).itemsize)
    return packed_width(bits) / 8


def _bits_of(t: Tenant, window: int) -> int:
    info = t.stub.GetRound(secagg_pb2.GetRoundRequest(window_start=window, schema_version=1, omit_roster=True))
    return RoundContext.from_bytes(info.context).modulus_bits


def _predraw(live: list[Tenant], schema: SignalSchema, n: int) -> float:
    """Draw each live tenant's noise share for the next window (off the round's path); seconds per tenant."""
    from server.secagg.rounds import DEFAULT_SETTINGS, threshold_for

    plan = plan_noise(schema.noise_scale, schema.max_cells_per_unit, schema.max_count_per_cell, n,
                      threshold_for(n, DEFAULT_SETTINGS.threshold_fraction), DEFAULT_DELTA)
    if not _NEW_KERNEL:
        return 0.0
    started = time.process_time()
    for t in live:
        t.noise = plan.sample_share(schema.size)
    return (time.process_time() - started) / len(live)


@contextmanager
def _database(tmp: str, postgres: str | None) -> Iterator[str]:
    """The server's store for one grid row: a SQLite file, or a fresh PostgreSQL database on the
    server of ``postgres`` (created, then dropped)."""
    if postgres is None:
        yield f"sqlite:///{tmp}/server.db"
        return
    from sqlalchemy import create_engine, make_url, text

    url = make_url(postgres.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"fedsignal_secagg_bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "", 1)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench(n: int, length: int, dropout: float, rounds: int, deadline: float | None,
          postgres: str | None = None) -> dict[str, float]:
    schema = _schema(length)
    live_n = n - int(round(dropout * n))
    with tempfile.TemporaryDirectory(prefix="fedsignal-secagg-bench-") as tmp, _database(tmp, postgres) as db_url:
        # Without dropouts the round closes when the last roster member submits; with dropouts it
        # closes at its submission deadline, which is then part of the measured wall time.
        submit_seconds = (deadline if deadline is not None else 0.5 + 0.03 * n * (1 + length / 4000)) \
            if dropout else 20.0 + 0.3 * n * (1 + length / 2000)
        parent, child = mp.Pipe()
        proc = mp.get_context("spawn").Process(
            target=_serve, args=(db_url, f"{tmp}/state", length, submit_seconds, child))
        proc.start()
        port, enroll_port, ca, admin_key, admin_cert = parent.recv()
        try:
            tenants = _enroll(port, enroll_port, ca, admin_key, admin_cert, n)
            rng = np.random.default_rng(1)
            table = rng.integers(0, 20, size=schema.size).astype(np.int64)
            base = (int(time.time()) // 3600 - 50) * 3600
            for t in tenants:  # a collector verifies the long-term roster once and keeps it
                t.verifier = RosterVerifier(ca, COHORT, system_clock)
                for entry in t.stub.GetRoster(secagg_pb2.GetRosterRequest()).entries:
                    t.verifier.verify(entry)
            _predraw(tenants, schema, n)
            _run_round(tenants, tenants, base - 3600, schema, ca, table)  # warm-up
            results = []
            for r in range(rounds):
                for t in tenants:
                    t.up = t.down = 0
                live = tenants[:live_n]
                predraw = _predraw(live, schema, n)
                assert proc.pid is not None
                cpu_server = _cpu_of(proc.pid)
                out = _run_round(tenants, live, base + r * 3600, schema, ca, table)
                out["server_cpu"] = _cpu_of(proc.pid) - cpu_server
                out["predraw"] = predraw
                out["payload_bpv"] = _payload_bytes_per_value(_bits_of(live[0], base + r * 3600))
                out["up_bpv"] = sum(t.up for t in live) / len(live) / length
                out["down_bpv"] = sum(t.down for t in live) / len(live) / length
                results.append(out)
        finally:
            parent.send("stop")
            proc.join(30)
    return {k: float(np.median([r[k] for r in results])) for k in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N=10 and one N=100 row only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=None,
                        help="submission deadline in seconds of the dropout rows (default: 0.5 s + 30 ms x N x (1 + L/4000))")
    parser.add_argument("--only", metavar="N,L,DROPOUT", action="append", default=[],
                        help="run only this grid row (repeatable), e.g. --only 100,1000,0.1")
    parser.add_argument("--database-url", default=None, metavar="postgresql://...",
                        help="run the server on PostgreSQL (a fresh database per grid row on that server) instead of SQLite")
    args = parser.parse_args()
    grid = [(100, 1000, 0.0)] if os.environ.get("FEDSIGNAL_BENCH_PROFILE") else [(10, 1000, 0.0), (100, 1000, 0.0), (100, 1000, 0.1)] if args.quick else [
        (n, length, d) for n in (10, 100) for length in (1000, 10000) for d in (0.0, 0.1)]
    if args.only:
        grid = [(int(n), int(length), float(d)) for n, length, d in (row.split(",") for row in args.only)]
    print(FLOWER)
    print(f"server store: {'PostgreSQL' if args.database_url else 'SQLite'}")
    print(f"{'N':>4} {'L':>6} {'drop':>5} {'wall s':>8} {'wall-idle s':>11} {'server CPU s':>12} "
          f"{'tenant CPU ms':>13} {'noise ms':>8} {'up B/val':>9} {'down B/val':>10} {'payload B/val':>13} {'late':>4}")
    for n, length, d in grid:
        r = bench(n, length, d, args.rounds, args.deadline, args.database_url)
        live = n - int(round(d * n))
        print(f"{n:>4} {length:>6} {d:>5.0%} {r['wall']:>8.3f} {r['wall'] - r['idle']:>11.3f} "
              f"{r['server_cpu']:>12.3f} {1000 * r['client_cpu'] / live:>13.1f} {1000 * r['predraw']:>8.1f} "
              f"{r['up_bpv']:>9.2f} {r['down_bpv']:>10.2f} {r['payload_bpv']:>13.2f} {r['late']:>4.0f}", flush=True)
    print(f"wall: first GetRound to release (clients in one process, {THREADS} threads); wall-idle: minus the wait for the")
    print("submission deadline (dropouts only); tenant CPU: this process's CPU per live tenant (kernel, TLS, ECDSA)")
    print("during the round; noise ms: CPU per tenant drawing its noise share with OpenDP's exact sampler ahead of the")
    print("round (off the critical path, not in tenant CPU); up/down B/val: every byte of every secure-aggregation")
    print("message per live tenant per value (protobuf sizes); payload B/val: the masked vector alone (packed b-bit words);")
    print("late: tenants meant to be live whose input missed the submission deadline (they became dropouts too).")
    _ = math


if __name__ == "__main__":
    main()
