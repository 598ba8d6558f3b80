"""Ingest load benchmark: many collectors submitting 2,000-cell DP reports over mutual TLS.

Starts `fedsignal server serve` (one or more replicas, merge jobs on) against a fresh
PostgreSQL schema, enrolls --tenants tenants with real client certificates, and drives the
server from --clients concurrent collector streams on loopback (grpc.aio) for --seconds.
Each report is a distinct (tenant, window) release of a 2,040-cell table (15 measures x
8 intents x 17 artifact versions). Prints reports/s, p50/p99 latency and the error count;
asserts nothing.

    FEDSIGNAL_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/load.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import grpc
import numpy as np
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedsignal.v1 import common_pb2, signals_pb2  # noqa: E402

from aggregation import dp  # noqa: E402
from aggregation.schema import SignalSchema  # noqa: E402
from server.context import ServerContext, ServerSettings  # noqa: E402
from server.db import transaction  # noqa: E402
from server.identity.ca import CertificateAuthority  # noqa: E402
from server.identity.enrollment import ensure_tenant, record_certificate  # noqa: E402
from server.signals.schemas import publish_artifact_versions  # noqa: E402
from tests.server.signals.procs import ServerProcess, fedsignal_cli  # noqa: E402

COHORT = "bench"
SUBMIT = "/fedsignal.v1.SignalService/SubmitReport"


def fresh_schema_url(base: str) -> tuple[str, str]:
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://"):]
    schema = "bench_" + uuid.uuid4().hex[:10]
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return base + f"{sep}options={quote(f'-csearch_path={schema}')}", schema


def drop_schema(base: str, schema: str) -> None:
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base[len("postgresql://"):]
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def bench_schema(ctx: ServerContext) -> SignalSchema:
    with transaction(ctx.sessions) as session:
        return publish_artifact_versions(session, COHORT, ["baseline", *(f"cand-{i}" for i in range(15))])


def enroll(ctx: ServerContext, ca: CertificateAuthority, tenants: list[str]) -> dict[str, tuple[bytes, bytes]]:
    creds = {}
    with transaction(ctx.sessions) as session:
        for tenant in tenants:
            key, issued = ca.issue_key_and_cert(tenant, COHORT, "tenant")
            now = ctx.clock()
            ensure_tenant(session, tenant, COHORT, now)
            record_certificate(session, issued.serial, tenant, "tenant", COHORT, issued.not_after, now)
            creds[tenant] = (key, issued.certificate_pem)
    return creds


def build_reports(schema: SignalSchema, tenant: str, windows: list[int], seed: int) -> list[bytes]:
    """Serialized releases, one per window (built before timing starts)."""
    params = dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, 6.0, schema.max_cells_per_unit,
                              schema.max_count_per_cell)
    loss = dp.privacy_loss(params).to_proto()
    rng = np.random.default_rng(seed)
    base = rng.integers(-20, 200, size=schema.size).tolist()
    out = []
    for w in windows:
        msg = common_pb2.DpReport(
            idempotency_key=f"{tenant}/{w}", tenant_id=tenant, cohort=COHORT, schema_version=schema.version,
            taxonomy_version=schema.taxonomy_version, window_start=w, window_end=w + schema.window_seconds,
            mechanism=dp.mechanism_to_proto(params.mechanism), noise_scale=params.scale,
            sensitivity=params.sensitivity, max_cells_per_unit=schema.max_cells_per_unit,
            max_count_per_cell=schema.max_count_per_cell, privacy_loss=loss, cells=base, collector_version="bench",
        )
        out.append(msg.SerializeToString())
    return out


async def drive(addresses: list[str], ca_pem: bytes, creds: dict[str, tuple[bytes, bytes]],
                outboxes: dict[str, list[bytes]], clients: int, seconds: float) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    errors = 0
    tenants = sorted(outboxes)
    channels = {}
    for i, tenant in enumerate(tenants):
        key, cert = creds[tenant]
        channels[tenant] = grpc.aio.secure_channel(addresses[i % len(addresses)],
                                                   grpc.ssl_channel_credentials(ca_pem, key, cert))
    calls = {t: channels[t].unary_unary(SUBMIT, request_serializer=None,
                                        response_deserializer=signals_pb2.SubmitReportResponse.FromString)
             for t in tenants}
    # warm up every connection (TLS handshakes are not what we measure)
    await asyncio.gather(*(ch.channel_ready() for ch in channels.values()))
    deadline = time.perf_counter() + seconds

    async def collector(n: int) -> None:
        nonlocal errors
        mine = tenants[n::clients]
        while time.perf_counter() < deadline:
            progressed = False
            for tenant in mine:
                if not outboxes[tenant] or time.perf_counter() >= deadline:
                    continue
                payload = outboxes[tenant].pop()
                progressed = True
                started = time.perf_counter()
                try:
                    reply = await calls[tenant](payload, timeout=30)
                    if reply.outcome != signals_pb2.SubmitReportResponse.ACCEPTED:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1
            if not progressed:  # this collector's outboxes are empty
                return

    started = time.perf_counter()
    await asyncio.gather(*(collector(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    for ch in channels.values():
        await ch.close(None)
    return latencies, errors, int(elapsed * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("FEDSIGNAL_TEST_DATABASE_URL"),
                        help="PostgreSQL URL (env FEDSIGNAL_TEST_DATABASE_URL); a fresh schema is created in it")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to drive load (default 20)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent collector streams (default 64)")
    parser.add_argument("--tenants", type=int, default=256, help="enrolled tenants (default 256)")
    parser.add_argument("--replicas", type=int, default=1, help="server processes on the same database (default 1)")
    parser.add_argument("--workers", type=int, default=64, help="request threads per server (default 64)")
    parser.add_argument("--job-interval", type=float, default=10.0,
                        help="seconds between merge/detection/rollout job runs (default 10, the server's default)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema and state directory")
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgresql"):
        parser.error("a PostgreSQL --database-url (or FEDSIGNAL_TEST_DATABASE_URL) is required")

    url, pg_schema = fresh_schema_url(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="fedsignal-load-"))
    state = workdir / "state"
    servers: list[ServerProcess] = []
    try:
        fedsignal_cli("server", "init", "--state-dir", str(state), "--database-url", url,
                      "--admin-out", str(workdir / "admin"))
        ctx = ServerContext.create(ServerSettings(database_url=url, state_dir=state))
        schema = bench_schema(ctx)
        ca = CertificateAuthority.load(state)
        tenants = [f"tenant-{i:03d}" for i in range(args.tenants)]
        creds = enroll(ctx, ca, tenants)
        # enough distinct closed windows per tenant for the run (a generous 1,500 reports/s)
        per_tenant = int(1500 * args.seconds / len(tenants)) + 10
        last = int(time.time()) // schema.window_seconds * schema.window_seconds - schema.window_seconds
        windows = [last - i * schema.window_seconds for i in range(per_tenant)]
        outboxes = {t: build_reports(schema, t, windows, seed=i) for i, t in enumerate(tenants)}
        print(f"schema: {schema.size} cells; report size {len(outboxes[tenants[0]][0])} bytes; "
              f"{args.tenants} tenants, {args.clients} concurrent clients, {args.replicas} replica(s), "
              f"{args.seconds:.0f} s, mTLS", flush=True)
        for i in range(args.replicas):
            server = ServerProcess(state, url, workdir / f"server{i}.log", job_interval=args.job_interval,
                                   workers=args.workers)
            servers.append(server.start())
        latencies, errors, elapsed_ms = asyncio.run(
            drive([s.address for s in servers], ca.certificate_pem, creds, outboxes, args.clients, args.seconds)
        )
        elapsed = elapsed_ms / 1000
        ok = len(latencies)
        lat = sorted(latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else float("nan")
        print(f"accepted reports: {ok} in {elapsed:.1f} s -> {ok / elapsed:.0f} reports/s")
        print(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        print(f"errors: {errors}")
        ctx.engine.dispose()
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            drop_schema(args.database_url, pg_schema)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept schema {pg_schema} and {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
