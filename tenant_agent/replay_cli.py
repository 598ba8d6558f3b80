"""``fedsignal agent replay-set list|show|purge`` and ``fedsignal agent replay --candidate ID``.

The replay set and the agent harness are configured in ``replay.toml`` in the
collector's state dir (typed, unknown keys refused; absent: the replay set
is off and no harness is configured)::

    [replay_set]
    enabled = true
    retention_days = 30
    max_cases = 1000
    per_category_cap = 200
    refresh_minutes = 60
    store_redacted_text = false

    [harness]
    url = "http://127.0.0.1:8089/replay"
    timeout_seconds = 5.0

``fedsignal agent replay`` runs a candidate of the active bundle through the
harness by hand and prints this tenant's own results: un-noised, local only,
nothing is released or sent.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from aggregation.errors import FedsignalError
from tenant_agent.replay_agent import REPLAY_CONFIG, ReplayConfig, load_replay_config
from tenant_agent.replay_set import ReplaySet


class ReplayCliError(FedsignalError):
    pass


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None],
             load_config: Callable[[argparse.Namespace], Any]) -> None:
    """Add ``replay-set`` and ``replay`` to the ``fedsignal agent`` subcommands.

    ``add_config`` / ``load_config`` are the agent CLI's own (--config / --state-dir), handed in so
    this module never imports the CLI that registers it.
    """
    rs = sub.add_parser("replay-set", help="list, show or purge the local replay set (never sent anywhere)",
                        description="The replay cases this collector keeps inside the tenant's boundary "
                                    f"(configured in {REPLAY_CONFIG} in the state dir).")
    rs_sub = rs.add_subparsers(dest="replay_set_command", metavar="ACTION", required=True)
    p = rs_sub.add_parser("list", help="cases per category, then the newest cases")
    add_config(p)
    p.add_argument("--category", help="only this failure category")
    p.add_argument("--limit", type=int, default=20, help="cases to list (default 20)")
    p.set_defaults(func=cmd_list, load_config=load_config)
    p = rs_sub.add_parser("show", help="one case as the harness would receive it")
    add_config(p)
    p.add_argument("case_id")
    p.set_defaults(func=cmd_show, load_config=load_config)
    p = rs_sub.add_parser("purge", help="delete every case (or one category's)")
    add_config(p)
    p.add_argument("--category", help="only this failure category")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.set_defaults(func=cmd_purge, load_config=load_config)

    p = sub.add_parser("replay", help="replay a candidate of the active bundle through the harness, locally",
                       description="Run the replay set's cases of the candidate's category through this tenant's "
                                   "agent harness with the stable and the candidate artifacts, and print this "
                                   "tenant's own un-noised results. Nothing is released or sent.")
    add_config(p)
    p.add_argument("--candidate", required=True, help="candidate id (the active bundle's candidate or a stable set)")
    p.add_argument("--max-cases", type=int, default=500, help="cases to replay at most (default 500)")
    p.set_defaults(func=cmd_replay, load_config=load_config)


def _open(args: argparse.Namespace) -> tuple[Any, ReplaySet, ReplayConfig]:
    cfg = args.load_config(args)
    replay_cfg = load_replay_config(cfg.state_dir)
    return cfg, ReplaySet(cfg.state_dir, replay_cfg.policy()), replay_cfg


def cmd_list(args: argparse.Namespace) -> int:
    _, rs, replay_cfg = _open(args)
    try:
        counts = rs.counts()
        state = "on" if replay_cfg.replay_set.enabled else "off (enable it in replay.toml)"
        print(f"replay set: {state}; {sum(counts.values())} case(s) in {rs.path}")
        for category, n in sorted(counts.items()):
            print(f"  {category:<20} {n}")
        cases = rs.cases(args.category)[-args.limit:]
        for c in cases:
            gold = ", ".join(f"{k}={v}" for k, v in sorted(c.gold.items())) or "no gold label"
            print(f"{c.case_id}  {c.category:<17} intent {c.intent or '-':<13} {gold}")
    finally:
        rs.close()
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, rs, _ = _open(args)
    try:
        case = rs.show(args.case_id)
    finally:
        rs.close()
    if case is None:
        raise ReplayCliError(f"no case {args.case_id!r}; `fedsignal agent replay-set list` shows them")
    print(json.dumps(case.to_json(), indent=2, sort_keys=True))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    _, rs, _ = _open(args)
    try:
        if not args.yes:
            what = f"every {args.category} case" if args.category else "every case"
            if input(f"delete {what} of the replay set? [y/N] ").strip().lower() != "y":
                print("nothing deleted")
                return 1
        print(f"deleted {rs.purge(args.category)} case(s)")
    finally:
        rs.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tenant_agent.collector import Collector
    from tenant_agent.replay import HarnessClient, ReplayRunner, bundle_artifacts

    cfg, rs, replay_cfg = _open(args)
    try:
        with Collector(cfg) as collector:
            bundle = collector.resolver.active()
            if bundle is None:
                raise ReplayCliError("no bundle installed: `fedsignal agent run` pulls one")
            chosen = [s for s in (*bundle.stable, *([bundle.candidate] if bundle.candidate else ()))
                      if s.candidate_id == args.candidate]
            if not chosen:
                raise ReplayCliError(f"candidate {args.candidate!r} is not in the active bundle v{bundle.version}")
            approved = chosen[0]
            stable, candidate = bundle_artifacts(bundle) if approved is bundle.candidate else ([], [])
            if approved is not bundle.candidate:
                from tenant_agent.replay import ArtifactContent

                candidate = [ArtifactContent(n, approved.label, bundle.content(approved, n))
                             for n in sorted(approved.artifacts)]
                stable = [ArtifactContent(n, "baseline", b"") for n in sorted(approved.artifacts)]
            harness = (HarnessClient(replay_cfg.harness.url, collector.tenant_id,
                                     timeout_seconds=replay_cfg.harness.timeout_seconds)
                       if replay_cfg.harness.url else None)
            intents = sorted(bundle.exposure.intents) if bundle.exposure and approved is bundle.candidate else []
            run = ReplayRunner(collector, rs, harness, max_cases=args.max_cases).run(
                "manual", approved.candidate_id, approved.category, stable, candidate, intents=intents, release=False)
    finally:
        rs.close()
    for line in run.summary_lines():
        print(line)
    print("(local, un-noised results for this tenant's operator; nothing was released or sent)")
    return 0 if run.status in ("ok", "no_cases") else 1
