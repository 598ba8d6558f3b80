"""The bundle loop over a real server (server.app, insecure-dev) and the real CLI.

Reviewers create keys and the root with `fedsignal admin`, approve with
their own keys; the server issues the bundle; tenants pull, verify, install
and resolve; `admin audit verify` checks the chain and names an edited row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregation.bundle import RolloutExposure
from fedsignal_cli.main import main
from server.admin_cli.common import insecure_identity_channel
from server.app import build_server
from server.audit import AuditRecord
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.migrate import init_db
from server.review.bundles import issue_cohort_bundle
from server.review.trust_root import current_root_bytes
from tenant_agent.bundles import BundleClient, Resolver, serve_resolve
from tests.server.review.world import FakeClock


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[ServerContext, str]]:
    ctx = ServerContext.create(
        ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", state_dir=tmp_path / "state",
                       listen="127.0.0.1:0", insecure_dev=True),
        clock=FakeClock(),
    )
    init_db(ctx.engine)
    server = build_server(ctx, jobs=False)
    yield ctx, f"127.0.0.1:{server.port}"
    server.stop(None)


def cli(address: str, *args: str) -> int:
    return main(["admin", *args, "--server", address, "--insecure-dev"])


def test_review_sign_issue_pull_resolve_and_audit(running, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    ctx, address = running
    monkeypatch.setenv("FEDSIGNAL_KEY_PASSPHRASE", "correct horse battery")
    monkeypatch.setenv("FEDSIGNAL_REVIEW_STATE", str(tmp_path / "reviews"))
    keys = tmp_path / "keys"
    for name in ("alice", "bob"):
        assert main(["admin", "keygen", "--out", str(keys), "--name", name]) == 0
    assert "ENCRYPTED" in (keys / "alice.key").read_text()
    assert cli(address, "root", "init", "--reviewer", str(keys / "alice.pub.json"), "--reviewer",
               str(keys / "bob.pub.json"), "--key", str(keys / "alice.key"), "--key", str(keys / "bob.key"),
               "--threshold", "critical=2") == 0

    from server.review.workflow import create_candidate

    with transaction(ctx.sessions) as s:
        rec = create_candidate(s, cohort="c1", category="wrong_tool", kind="routing_rule", risk_class="high",
                               artifacts=[("routing_rule.billing", "routing_rule", b'{"kind":"routing_rule"}')],
                               evidence={"rule": "above_threshold"}, rollout_plan_json="{}", dedupe_key="k1",
                               now=ctx.clock())
        assert rec is not None
        cid = rec.id
    capsys.readouterr()
    assert cli(address, "candidates", "list") == 0
    assert cid in capsys.readouterr().out
    assert cli(address, "candidates", "show", cid) == 0  # reviewers sign only what they were shown
    assert cli(address, "approve", cid, "--key", str(keys / "alice.key")) == 0
    assert "signatures 1/2" in capsys.readouterr().out
    assert cli(address, "approve", cid, "--key", str(keys / "bob.key")) == 0
    assert "bundled" in capsys.readouterr().out

    with transaction(ctx.sessions) as s:
        issue_cohort_bundle(s, ctx, "c1", RolloutExposure("r1", cid, 0, 100.0, 1.0, ["t1"]))
        root = current_root_bytes(s)

    for tenant, cohort in (("t1", "c1"), ("t2", "c2")):
        state = tmp_path / tenant
        (state / "trust").mkdir(parents=True)
        (state / "trust" / "root.json").write_bytes(root)
        channel = insecure_identity_channel(address, tenant, "tenant", cohort)
        client = BundleClient(channel, state, tenant, cohort, ctx.clock)
        assert client.pull().status == "installed"
        assert client.pull().status == "up_to_date"
    t1 = Resolver(tmp_path / "t1", "t1", clock=ctx.clock).resolve("routing_rule.billing", "s1")
    assert (t1.version, t1.arm) == (cid, "candidate")
    # t2 is in another cohort: it gets its own cohort's (empty) bundle, never c1's candidate.
    assert Resolver(tmp_path / "t2", "t2", clock=ctx.clock).resolve("routing_rule.billing", "s1").version == "baseline"

    http = serve_resolve(Resolver(tmp_path / "t1", "t1", clock=ctx.clock), "127.0.0.1", 0)
    try:
        import urllib.request

        url = f"http://127.0.0.1:{http.port}/v1/resolve?artifact=routing_rule.billing&session=s1"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["version"] == cid and doc["arm"] == "candidate" and json.loads(doc["content"])["kind"] == "routing_rule"
    finally:
        http.close()

    capsys.readouterr()
    assert cli(address, "audit", "verify") == 0
    assert "verified end to end" in capsys.readouterr().out
    with transaction(ctx.sessions) as s:
        row = s.get(AuditRecord, 3)
        assert row is not None
        row.actor = "someone-else"
    assert cli(address, "audit", "verify") == 2
    assert "seq 3" in capsys.readouterr().err


def test_cli_root_rotation_with_offline_signatures_reject_and_edit(running, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    ctx, address = running
    monkeypatch.setenv("FEDSIGNAL_KEY_PASSPHRASE", "correct horse battery")
    monkeypatch.setenv("FEDSIGNAL_REVIEW_STATE", str(tmp_path / "reviews"))
    keys = tmp_path / "keys"
    for name in ("alice", "bob", "carol"):
        assert main(["admin", "keygen", "--out", str(keys), "--name", name]) == 0
    pubs = [f"--reviewer={keys / n}.pub.json" for n in ("alice", "bob")]
    assert cli(address, "root", "init", *pubs, "--key", str(keys / "alice.key"), "--key", str(keys / "bob.key"),
               "--root-threshold", "2", "--threshold", "critical=2") == 0
    # v2 adds carol; written to a file, signed on two machines, then submitted.
    draft = tmp_path / "root-v2.json"
    assert cli(address, "root", "rotate", *pubs, f"--reviewer={keys / 'carol'}.pub.json", "--root-threshold", "2",
               "--key", str(keys / "carol.key"), "--out", str(draft)) == 0
    capsys.readouterr()
    assert cli(address, "root", "submit", str(draft)) == 3  # only carol signed: refused by the server
    assert "keys of v1" in capsys.readouterr().err
    assert main(["admin", "root", "sign", str(draft), "--key", str(keys / "alice.key")]) == 0
    assert main(["admin", "root", "sign", str(draft), "--key", str(keys / "bob.key")]) == 0
    assert cli(address, "root", "submit", str(draft)) == 0
    capsys.readouterr()
    assert cli(address, "root", "show") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and len(shown["root"]["keyids"]) == 3

    # A wrong passphrase is a one-line error, not a traceback.
    monkeypatch.setenv("FEDSIGNAL_KEY_PASSPHRASE", "not the passphrase")
    assert main(["admin", "root", "sign", str(draft), "--key", str(keys / "alice.key")]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv("FEDSIGNAL_KEY_PASSPHRASE", "correct horse battery")

    from server.review.workflow import create_candidate

    with transaction(ctx.sessions) as s:
        ids = []
        for k in ("k1", "k2"):
            rec = create_candidate(s, cohort="c1", category="timeout", kind="timeout_retry_policy", risk_class="low",
                                   artifacts=[("timeout_retry_policy.billing", "timeout_retry_policy", b"{}")],
                                   evidence={}, rollout_plan_json="{}", dedupe_key=k, now=ctx.clock())
            assert rec is not None
            ids.append(rec.id)
    assert cli(address, "reject", ids[0], "--reason", "covered by another fix") == 0
    assert cli(address, "approve", ids[0], "--key", str(keys / "alice.key")) == 3  # FAILED_PRECONDITION
    new_content = tmp_path / "policy.json"
    new_content.write_text('{"kind":"timeout_retry_policy","retries":3}')
    assert cli(address, "edit", ids[1], "--artifact", f"timeout_retry_policy.billing={new_content}") == 0
    capsys.readouterr()
    assert cli(address, "candidates", "show", ids[1], "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "edited" and json.loads(doc["artifacts"][0]["content"])["retries"] == 3
    assert cli(address, "candidates", "show", ids[1]) == 0  # the reviewer's view (recorded as shown)
    assert cli(address, "approve", ids[1], "--key", str(keys / "carol.key")) == 0  # carol counts under root v2
    assert "bundled" in capsys.readouterr().out
