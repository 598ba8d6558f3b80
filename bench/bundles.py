"""Bundle figures: verify + install one bundle of 10 artifacts, and 1,000 steady-state pulls.

Prints figures only (nothing asserts a time). Run: ``.venv/bin/python bench/bundles.py``.

1. Kernel verify (signatures, hashes) of a 10-artifact bundle, verify + atomic install
   (fsync'ed files, symlink swap) into a fresh state dir, and the resolver's reload of the
   installed bundle (read back and re-hashed by ``verify_installed``): median of 30 runs.
2. 1,000 consecutive ``BundleClient.pull()`` calls against a real server (SQLite, insecure-dev
   gRPC on localhost) when nothing is new: median and total.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.bundle import RolloutExposure, TrustedBundleState  # noqa: E402
from server.admin_cli.common import insecure_identity_channel  # noqa: E402
from server.app import build_server  # noqa: E402
from server.context import ServerContext, ServerSettings  # noqa: E402
from server.db import transaction  # noqa: E402
from server.migrate import init_db  # noqa: E402
from server.review.bundles import issue_cohort_bundle  # noqa: E402
from server.review.trust_root import current_root_bytes  # noqa: E402
from tenant_agent.bundles import BundleClient  # noqa: E402
from tenant_agent.bundles.store import BundleStore  # noqa: E402
from tests.bundle_factory import NOW, World  # noqa: E402
from tests.server.review.world import ServerWorld  # noqa: E402

ARTIFACT = b'{"kind":"routing_rule","intent":"billing","tool":"invoice_lookup","note":"' + b"x" * 2000 + b'"}'


def bench_install(runs: int = 30) -> None:
    world = World()
    root = world.make_root()
    arts = [(f"artifact_{i}", "routing_rule", ARTIFACT + bytes([48 + i])) for i in range(10)]
    data, artifacts = world.bundle(1, [world.approval("cand-a", risk="high", artifacts=arts)])
    verify, total, reload = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            state = TrustedBundleState(root, "c1")
            bundle = state.update_bundle(data, artifacts, NOW)
            t1 = time.perf_counter()
            store = BundleStore(Path(d))
            store.install(bundle)
            t2 = time.perf_counter()
            active = store.active_dir()
            assert active is not None
            store.load(active)  # what the resolver does when `current` changes: read back, re-hash
            t3 = time.perf_counter()
            verify.append(t1 - t0)
            total.append(t2 - t0)
            reload.append(t3 - t2)
    print(f"bundle: 10 artifacts x {len(ARTIFACT)} B, high risk (2 reviewer signatures), metadata {len(data)} B")
    print(f"  verify (root load + signatures + hashes), median of {runs}: {statistics.median(verify) * 1e3:.2f} ms")
    print(f"  verify + atomic install (fsync, symlink swap), median of {runs}: {statistics.median(total) * 1e3:.2f} ms")
    print(f"  resolver reload (read back + re-hash, verify_installed), median of {runs}: "
          f"{statistics.median(reload) * 1e3:.2f} ms")


def bench_steady_state(pulls: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        world = ServerWorld.create(f"sqlite:///{base / 's.db'}", base / "state")
        cid = world.approved(risk="high")
        ctx = ServerContext.create(
            ServerSettings(database_url=f"sqlite:///{base / 's.db'}", state_dir=base / "state",
                           listen="127.0.0.1:0", insecure_dev=True), clock=world.clock)
        init_db(ctx.engine)
        with transaction(ctx.sessions) as s:
            issue_cohort_bundle(s, ctx, "c1", RolloutExposure("r1", cid, 0, 10.0, 0.5, ["t1"]))
            root = current_root_bytes(s)
        server = build_server(ctx, jobs=False)
        try:
            state = base / "tenant"
            (state / "trust").mkdir(parents=True)
            (state / "trust" / "root.json").write_bytes(root)
            channel = insecure_identity_channel(f"127.0.0.1:{server.port}", "t1", "tenant", "c1")
            client = BundleClient(channel, state, "t1", "c1", world.clock)
            t0 = time.perf_counter()
            first = client.pull()
            first_s = time.perf_counter() - t0
            times = []
            for _ in range(pulls):
                t = time.perf_counter()
                assert client.pull().status == "up_to_date"
                times.append(time.perf_counter() - t)
            print(f"first pull over gRPC (fetch + verify + install): {first_s * 1e3:.1f} ms ({first.status})")
            print(f"steady state: {pulls} pulls with nothing new: total {sum(times):.2f} s, "
                  f"median {statistics.median(times) * 1e3:.2f} ms, p95 {sorted(times)[int(0.95 * pulls)] * 1e3:.2f} ms")
            channel.close()
        finally:
            server.stop(None)


if __name__ == "__main__":
    bench_install()
    bench_steady_state()
