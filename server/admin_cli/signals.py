"""``fedsignal admin`` commands of the AdminService.

Two sections, each registered by its own function from :func:`register`:
tenants and audit (server core), signals and reports (server signals).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from server.admin_cli.common import add_connection_args, admin_channel


def register(sub: Any) -> None:
    """Add this module's ``fedsignal admin`` subcommands to ``sub``."""
    register_tenants_and_audit(sub)
    register_signals_and_reports(sub)


# ---------------------------------------------------------------------------
# Tenants: enroll-token, revoke (the audit commands live in server.admin_cli.audit)
# ---------------------------------------------------------------------------


def register_tenants_and_audit(sub: Any) -> None:
    p = sub.add_parser(
        "enroll-token", help="create a one-time enrollment token for a tenant",
        description="Create a one-time, expiring enrollment token that a tenant's collector exchanges "
                    "for its client certificate (`fedsignal agent enroll`). The token is shown once.",
    )
    p.add_argument("--tenant", dest="tenant_id", required=True, help="tenant id (letters, digits, '.', '_', '-')")
    p.add_argument("--cohort", required=True, help="cohort the tenant belongs to")
    p.add_argument("--ttl", type=int, default=0, help="token lifetime in seconds (default: the server's, 24 h)")
    p.add_argument("--json", action="store_true", help="print {token, expires_at} as JSON")
    add_connection_args(p)
    p.set_defaults(func=cmd_enroll_token)

    p = sub.add_parser(
        "revoke", help="revoke a tenant and all its certificates",
        description="Revoke a tenant: every certificate it holds is refused from now on (within seconds "
                    "on every replica) and its pending tokens become void. Recorded in the audit log.",
    )
    p.add_argument("--tenant", dest="tenant_id", required=True, help="tenant id")
    p.add_argument("--reason", required=True, help="why (goes to the audit log)")
    add_connection_args(p)
    p.set_defaults(func=cmd_revoke)


def cmd_enroll_token(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        resp = stub.CreateEnrollmentToken(
            admin_pb2.CreateEnrollmentTokenRequest(tenant_id=args.tenant_id, cohort=args.cohort,
                                                   ttl_seconds=max(0, args.ttl))
        )
    if args.json:
        print(json.dumps({"token": resp.token, "expires_at": resp.expires_at}))
    else:
        print(resp.token)
        print(f"# tenant {args.tenant_id} (cohort {args.cohort}); single use; expires {resp.expires_at}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        resp = admin_pb2_grpc.AdminServiceStub(channel).RevokeTenant(
            admin_pb2.RevokeTenantRequest(tenant_id=args.tenant_id, reason=args.reason)
        )
    print(f"revoked tenant {args.tenant_id}: {resp.certificates_revoked} certificate(s)")
    return 0


# ---------------------------------------------------------------------------
# Signals and reports (owner: server signals): `admin signals`, `admin report`
# ---------------------------------------------------------------------------


def register_signals_and_reports(sub: Any) -> None:
    from pathlib import Path

    p = sub.add_parser(
        "signals", help="print the merged signal table, most significant first",
        description="Print the merged, k-anonymous signals: cohort, window, category, slice, noisy estimate, "
                    "rate (category / turns of the slice) with its confidence interval, tenants, and the "
                    "z-score against the cohort's overall rate of the category, sorted by |z|.",
    )
    _add_signal_filters(p)
    p.add_argument("--include-suppressed", action="store_true",
                   help="also list cells below k tenants (their estimates stay withheld)")
    p.add_argument("--json", action="store_true", help="print one JSON object per cell")
    add_connection_args(p)
    p.set_defaults(func=cmd_signals)

    p = sub.add_parser(
        "report", help="write a self-contained HTML report of rates and intervals over windows",
        description="Write an HTML page with one plot per cohort and category: the rate of the most "
                    "significant slices over the windows, with confidence intervals, and a table of the "
                    "most significant cells. Inline SVG only: it reads offline in any browser.",
    )
    _add_signal_filters(p, default_limit=100_000)
    p.add_argument("--html", required=True, type=Path, metavar="FILE", help="where to write the HTML page")
    add_connection_args(p)
    p.set_defaults(func=cmd_report)


def _add_signal_filters(p: argparse.ArgumentParser, default_limit: int = 50) -> None:
    p.add_argument("--cohort", default="", help="only this cohort (default: all)")
    p.add_argument("--since", type=int, default=0, metavar="UNIX_SECONDS",
                   help="only windows starting at or after this time")
    p.add_argument("--limit", type=int, default=default_limit, help=f"at most this many cells (default {default_limit})")


def _list_signals(args: argparse.Namespace, include_suppressed: bool) -> admin_pb2.ListSignalsResponse:
    """Every cell up to ``--limit``, over as many pages as the server's message limit needs."""
    request = admin_pb2.ListSignalsRequest(cohort=args.cohort, window_start_from=max(0, args.since),
                                           limit=max(0, args.limit), include_suppressed=include_suppressed)
    response = admin_pb2.ListSignalsResponse()
    with admin_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        while True:
            page: admin_pb2.ListSignalsResponse = stub.ListSignals(request)
            response.cells.extend(page.cells)
            response.min_tenants = page.min_tenants
            if not page.next_offset or not page.cells:
                return response
            request.offset = page.next_offset
            if args.limit > 0:
                request.limit = max(1, args.limit - len(response.cells))


def cmd_signals(args: argparse.Namespace) -> int:
    from server.signals.views import DEFAULT_EVIDENCE_FLOOR

    response = _list_signals(args, args.include_suppressed)
    if args.json:
        for c in response.cells:
            print(json.dumps({"cohort": c.cohort, "window_start": c.window_start, "window_end": c.window_end,
                              "category": c.measure, "slice": dict(c.slice), "estimate": c.estimate,
                              "variance": c.variance, "rate": c.rate, "rate_low": c.rate_low,
                              "rate_high": c.rate_high, "tenants": c.tenants, "suppressed": c.suppressed,
                              "enough_data": not c.suppressed and DEFAULT_EVIDENCE_FLOOR.shown_enough(
                                  c.estimate, c.rate_low, c.rate_high),
                              "z": c.z_score}, sort_keys=True))
        return 0
    print(format_signals(response))
    return 0


def format_signals(response: admin_pb2.ListSignalsResponse) -> str:
    """The `admin signals` table: withheld cells say so, cells below the evidence floor say "not enough data"."""
    from datetime import UTC, datetime

    from server.signals.report_html import slice_label
    from server.signals.views import DEFAULT_EVIDENCE_FLOOR, NOT_ENOUGH_DATA

    header = ("cohort", "window (UTC)", "category", "slice", "estimate", "rate [interval]", "tenants", "z")
    rows = []
    for c in response.cells:
        when = datetime.fromtimestamp(c.window_start, UTC).strftime("%Y-%m-%d %H:%M")
        if c.suppressed:
            estimate, rate = "—", f"withheld (< k={response.min_tenants})"
        elif not DEFAULT_EVIDENCE_FLOOR.shown_enough(c.estimate, c.rate_low, c.rate_high):
            estimate, rate = "—", NOT_ENOUGH_DATA
        else:
            estimate, rate = f"{c.estimate:.0f}", f"{c.rate:.1%} [{c.rate_low:.1%}, {c.rate_high:.1%}]"
        z = f"{c.z_score:+.2f}" if rate != NOT_ENOUGH_DATA else "—"
        rows.append((c.cohort, when, c.measure, slice_label(c), estimate, rate, str(c.tenants), z))
    if not rows:
        return f"no merged cell has reached k = {response.min_tenants} tenants yet"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from server.signals.report_html import render_report

    response = _list_signals(args, include_suppressed=False)
    args.html.parent.mkdir(parents=True, exist_ok=True)
    args.html.write_text(render_report(response, generated_at=datetime.now(UTC)), encoding="utf-8")
    print(f"wrote {args.html} ({len(response.cells)} cells)")
    return 0
