"""The secure-aggregation protocol layer alone (no gRPC, no database): CPU and bytes per round.

For each configuration (N tenants, graph, L cells, dropout rate) every tenant
submits once (real X25519, ChaCha20 masks, Shamir shares, OpenDP noise
shares); then, for each dropout rate, a fresh server round takes the inputs
of the non-dropped tenants, the survivors attest and unmask (clients restored
from their persisted state, as a restarted collector would be), and the
server computes the result, which is checked against the survivors' tables
plus their noise shares.

Printed per configuration: per-tenant CPU (mean and max) of submit and of
restore + attest + unmask, server CPU of all add_input calls, of close + unmask requests, of
all add_unmask calls and of result(); bytes per table value up (masked input
+ unmask response) and down (unmask request + the t relayed attestations); and the
round's critical path with tenants running in parallel (slowest submit +
server add_input + slowest unmask + server unmask work + result). Nothing is
asserted about time.

Run: .venv/bin/python bench/secagg_protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregation.secagg import (  # noqa: E402
    Attestation,
    ClientRound,
    MaskedInput,
    RosterEntry,
    RoundContext,
    ServerRound,
    UnmaskRequest,
    degree_of,
    generate_keypair,
    modulus_bits,
    neighbours,
    plan_noise,
)

SIGMA_CENTRAL = 20.0
L0, LINF = 4, 1
CELL_MAX = 1000


def _verify(tenant_id: str, digest: bytes, signature: bytes) -> bool:
    # Stands in for the integrator's Ed25519 signature check (not the kernel's cost; the bench
    # "signs" with the digest itself, 32 bytes where Ed25519 would take 64).
    return signature == digest


def run(n: int, length: int, degree: int | None, dropouts: tuple[float, ...]) -> None:
    keys = {f"tenant-{i:05d}": generate_keypair() for i in range(n)}
    threshold = max(2, (2 * n) // 3)
    plan = plan_noise(SIGMA_CENTRAL, L0, LINF, n, threshold)
    bits = modulus_bits(n * CELL_MAX * plan.scale_factor, plan.sigma_sum(n))
    ctx = RoundContext(
        "bench", 1, 1_700_000_000, f"r-{n}-{length}-{degree}", length, bits, threshold,
        tuple(RosterEntry(t, pub) for t, (_, pub) in keys.items()), degree,
    )
    t0 = time.process_time()
    neighbours(ctx)
    graph_cpu = time.process_time() - t0
    rng = np.random.default_rng(0)
    tables = {t: rng.integers(0, CELL_MAX + 1, size=length).astype(np.int64) * plan.scale_factor for t in keys}

    submit_cpu: dict[str, float] = {}
    inputs: dict[str, bytes] = {}
    states: dict[str, bytes] = {}
    noise: dict[str, np.ndarray] = {}
    predraw_cpu: dict[str, float] = {}
    for tid, (priv, _) in keys.items():
        client = ClientRound(ctx, tid, priv, plan, verify=_verify)
        share = None
        if _NEW_KERNEL:  # the share is data-independent: a collector draws it ahead of the round
            c0 = time.process_time()
            share = plan.sample_share(length)
            predraw_cpu[tid] = time.process_time() - c0
        c0 = time.process_time()
        msg = client.submit(tables[tid], noise_share=share) if _NEW_KERNEL else client.submit(tables[tid])
        data = msg.to_bytes()
        state = client.to_bytes()
        submit_cpu[tid] = time.process_time() - c0
        inputs[tid], states[tid] = data, state
        assert client.noise_share is not None
        noise[tid] = client.noise_share

    graph = f"k={degree_of(ctx)}" + (" (complete)" if degree_of(ctx) == n - 1 else " (sparse)")
    print(
        f"\nN={n} L={length} graph {graph} t={threshold} b={bits} sigma_share={plan.sigma_share:.3f} "
        f"scale={plan.scale_factor}; graph build {graph_cpu * 1e3:.1f} ms CPU (once per party per round)"
    )
    print(
        f"  tenant submit CPU: mean {statistics.mean(submit_cpu.values()) * 1e3:.1f} ms, "
        f"max {max(submit_cpu.values()) * 1e3:.1f} ms"
        + (f" (+ noise share drawn ahead, off the round: {statistics.mean(predraw_cpu.values()) * 1e3:.1f} ms)"
           if predraw_cpu else " (noise share drawn inside submit)")
    )

    order = sorted(keys)
    for rate in dropouts:
        dropped = set(np.random.default_rng(1).choice(order, int(round(rate * n)), replace=False).tolist())
        senders = [t for t in order if t not in dropped]
        server = ServerRound(ctx, verify=_verify)
        s0 = time.process_time()
        for tid in senders:
            server.add_input(MaskedInput.from_bytes(inputs[tid], ctx))
        add_input_cpu = time.process_time() - s0

        s0 = time.process_time()
        survivors = server.close()
        requests = {tid: server.unmask_request_for(tid) for tid in sorted(survivors)}
        request_bytes = {tid: r.to_bytes() for tid, r in requests.items()}
        close_cpu = time.process_time() - s0

        # Every survivor restarts from its persisted state (as a restarted collector would), attests S ...
        unmask_cpu: dict[str, float] = {}
        clients: dict[str, ClientRound] = {}
        wire_requests: dict[str, UnmaskRequest] = {}
        for tid in sorted(survivors):
            c0 = time.process_time()
            clients[tid] = ClientRound.from_bytes(states[tid], keys[tid][0], verify=_verify)
            wire_requests[tid] = UnmaskRequest.from_bytes(request_bytes[tid], ctx)
            digest = clients[tid].attest(wire_requests[tid])
            unmask_cpu[tid] = time.process_time() - c0
            server.add_attestation(Attestation(tid, digest, digest))
        attestations = server.attestations(limit=threshold)
        att_bytes = sum(len(a.to_bytes()) for a in attestations)

        # ... and unmasks once the server relays the attestations.
        responses: dict[str, bytes] = {}
        for tid in sorted(survivors):
            c0 = time.process_time()
            responses[tid] = clients[tid].unmask(wire_requests[tid], attestations).to_bytes()
            unmask_cpu[tid] += time.process_time() - c0

        s0 = time.process_time()
        for tid in sorted(survivors):
            server.add_unmask(responses[tid])
        add_unmask_cpu = time.process_time() - s0
        s0 = time.process_time()
        result = server.result()
        result_cpu = time.process_time() - s0
        expected = sum(tables[t] + noise[t] for t in senders)
        assert np.array_equal(result, expected), "the protocol's sum is wrong"

        up = statistics.mean(len(inputs[t]) + len(responses[t]) for t in survivors) / length
        down = statistics.mean(len(request_bytes[t]) + att_bytes for t in survivors) / length
        critical = (
            max(submit_cpu[t] for t in senders) + add_input_cpu + close_cpu
            + max(unmask_cpu.values()) + add_unmask_cpu + result_cpu
        )
        print(
            f"  dropout {rate:4.0%}: tenant unmask CPU mean {statistics.mean(unmask_cpu.values()) * 1e3:.1f} ms "
            f"max {max(unmask_cpu.values()) * 1e3:.1f} ms | server add_input {add_input_cpu * 1e3:.0f} ms, "
            f"close+requests {close_cpu * 1e3:.0f} ms, add_unmask {add_unmask_cpu * 1e3:.0f} ms, "
            f"result {result_cpu * 1e3:.0f} ms | bytes/value up {up:.2f} down {down:.2f} | "
            f"round critical path {critical:.3f} s"
        )


#: The kernel takes pre-drawn noise shares (False when this file benchmarks an older commit).
_NEW_KERNEL = "noise_share" in inspect.signature(ClientRound.submit).parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only N=100 (complete and sparse)")
    args = parser.parse_args()
    configs: list[tuple[int, int | None]] = [(100, 99), (100, None)]
    if not args.quick:
        configs.append((1000, None))
    for n, degree in configs:
        for length in (1000, 10_000):
            run(n, length, degree, (0.0, 0.1))


if __name__ == "__main__":
    main()
