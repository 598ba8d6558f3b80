"""A self-contained HTML report of merged signals: rates and intervals over windows.

One inline SVG per (cohort, measure) plots the rate of the most significant
slices over the windows, each point with its confidence interval as a
vertical bar. No scripts, fonts or stylesheets are fetched: the file reads
offline in any browser. Input is what ``AdminService.ListSignals`` returns.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from fedsignal.v1 import admin_pb2

from server.signals.views import DEFAULT_EVIDENCE_FLOOR, NOT_ENOUGH_DATA, harm

# Series per plot: the slices with the most harmful deviation in any window.
MAX_SERIES = 6
TABLE_ROWS = 60
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 200, 18, 44
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
p.meta { color: #555; }
svg.rate-plot { border: 1px solid #ddd; background: #fff; margin: 0.5rem 0 1.5rem; }
svg text { font-size: 11px; fill: #333; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def slice_label(cell: admin_pb2.MergedCell) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(cell.slice.items())) or "all"


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _legend_order(item: tuple[str, str]) -> tuple[bool, str]:
    return item[0] == "artifact_version", item[0]


def _harm(cell: admin_pb2.MergedCell) -> float:
    return harm(cell.measure, cell.z_score)


def _informative(cell: admin_pb2.MergedCell) -> bool:
    """False below the evidence floor (a negative estimate, or an interval too wide to read)."""
    return DEFAULT_EVIDENCE_FLOOR.shown_enough(cell.estimate, cell.rate_low, cell.rate_high)


def _axis_top(highest: float) -> float:
    return next((top for top in (0.05, 0.1, 0.2, 0.25, 0.5, 0.75) if highest <= top), 1.0)


def _short_time(ts: int, span: int) -> str:
    fmt = "%m-%d" if span > 4 * 86400 else "%m-%d %H:%M"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def _plot(cohort: str, measure: str, cells: Sequence[admin_pb2.MergedCell]) -> str | None:
    """One SVG plot, or None when no slice of the measure has an informative rate."""
    by_slice: dict[str, list[admin_pb2.MergedCell]] = defaultdict(list)
    for c in cells:
        by_slice[slice_label(c)].append(c)
    candidates = [s for s in by_slice if any(_informative(c) for c in by_slice[s])]
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda s: (-max(_harm(c) for c in by_slice[s]), s))[:MAX_SERIES]
    shown = [c for s in ranked for c in by_slice[s]]
    starts = sorted({c.window_start for c in shown})
    x0, x1 = starts[0], starts[-1]
    y1 = _axis_top(max(c.rate_high for c in shown if _informative(c)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ts: int) -> float:
        return LEFT + (plot_w / 2 if x1 == x0 else (ts - x0) / (x1 - x0) * plot_w)

    def y(rate: float) -> float:
        return TOP + plot_h - min(rate, y1) / y1 * plot_h

    parts = [
        f'<svg class="rate-plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" data-cohort="{_esc(cohort)}" data-measure="{_esc(measure)}" '
        f'aria-label="{_esc(measure)} rate per window, cohort {_esc(cohort)}">',
        f"<title>{_esc(measure)} / turns, cohort {_esc(cohort)}</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#888"/>',
    ]
    for i in range(5):
        rate = y1 * i / 4
        parts.append(
            f'<line x1="{LEFT - 4}" y1="{y(rate):.1f}" x2="{LEFT + plot_w}" y2="{y(rate):.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">{rate:.0%}</text>'
        )
    ticks = sorted({starts[round(i * (len(starts) - 1) / 4)] for i in range(5)})
    for ts in ticks:
        parts.append(
            f'<line x1="{x(ts):.1f}" y1="{TOP + plot_h}" x2="{x(ts):.1f}" y2="{TOP + plot_h + 4}" stroke="#888"/>'
            f'<text x="{x(ts):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
            f"{_esc(_short_time(ts, x1 - x0))}</text>"
        )
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">window start (UTC)</text>')
    parts.append(f'<text x="{LEFT + plot_w + 14}" y="{TOP}">slice (intent · artifact version)</text>')
    for n, label in enumerate(ranked):
        color = PALETTE[n % len(PALETTE)]
        series = sorted((c for c in by_slice[label] if _informative(c)), key=lambda c: c.window_start)
        points = " ".join(f"{x(c.window_start):.1f},{y(c.rate):.1f}" for c in series)
        parts.append(f'<g class="series" data-slice="{_esc(label)}">')
        if len(series) > 1:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for c in series:
            cx = x(c.window_start)
            tip = (
                f"{label} · {_when(c.window_start)}: {c.rate:.1%} "
                f"[{c.rate_low:.1%}, {c.rate_high:.1%}], {c.tenants} tenants"
            )
            parts.append(
                f'<line class="interval" x1="{cx:.1f}" y1="{y(c.rate_low):.1f}" x2="{cx:.1f}" '
                f'y2="{y(c.rate_high):.1f}" stroke="{color}" stroke-width="2" opacity="0.55"/>'
                f'<circle class="estimate" cx="{cx:.1f}" cy="{y(c.rate):.1f}" r="3.5" fill="{color}">'
                f"<title>{_esc(tip)}</title></circle>"
            )
        legend_y = TOP + 30 + n * 16
        short = " · ".join(v for _, v in sorted(series[0].slice.items(), key=_legend_order))
        parts.append(
            f'<rect x="{LEFT + plot_w + 14}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{LEFT + plot_w + 30}" y="{legend_y}">{_esc(short[:32])}<title>{_esc(label)}</title></text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(cells: Sequence[admin_pb2.MergedCell]) -> str:
    rows = [
        "<table><thead><tr><th>cohort</th><th>window</th><th>category</th><th>slice</th>"
        "<th>estimate</th><th>rate</th><th>interval</th><th>tenants</th><th>z</th></tr></thead><tbody>"
    ]
    for c in cells[:TABLE_ROWS]:
        if not _informative(c):
            rows.append(
                f"<tr><td>{_esc(c.cohort)}</td><td>{_esc(_when(c.window_start))}</td><td>{_esc(c.measure)}</td>"
                f"<td>{_esc(slice_label(c))}</td><td class=num>—</td><td colspan=2>{NOT_ENOUGH_DATA}</td>"
                f"<td class=num>{c.tenants}</td><td class=num>—</td></tr>"
            )
            continue
        rows.append(
            f"<tr><td>{_esc(c.cohort)}</td><td>{_esc(_when(c.window_start))}</td><td>{_esc(c.measure)}</td>"
            f"<td>{_esc(slice_label(c))}</td><td class=num>{c.estimate:.0f}</td><td class=num>{c.rate:.1%}</td>"
            f"<td class=num>[{c.rate_low:.1%}, {c.rate_high:.1%}]</td><td class=num>{c.tenants}</td>"
            f"<td class=num>{c.z_score:+.2f}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def hotspots_table(hotspots: Sequence[admin_pb2.HotspotAge]) -> str:
    """Open hotspots with age and remediation SLA, overdue first."""
    if not hotspots:
        return "<h2>Open hotspots</h2><p>No open hotspot.</p>"
    rows = "".join(
        f"<tr><td>{_esc(h.cohort)}</td><td>{_esc(h.category)}</td><td>{_esc(h.stage)}</td>"
        f"<td>{h.age_seconds / 3600:.1f} h</td><td>{h.sla_seconds / 3600:.1f} h</td>"
        f"<td>{'<strong>OVERDUE</strong>' if h.overdue else 'within SLA'}</td><td>{h.reopened}</td>"
        f"<td>{_esc(h.candidate_id)}</td></tr>"
        for h in hotspots
    )
    return ("<h2>Open hotspots</h2><table><tr><th>cohort</th><th>category</th><th>stage</th><th>age</th>"
            f"<th>SLA</th><th>status</th><th>reopened</th><th>candidate</th></tr>{rows}</table>")


def render_report(response: admin_pb2.ListSignalsResponse, *, generated_at: datetime) -> str:
    """The whole HTML document for the released cells of ``response``."""
    released = [c for c in response.cells if not c.suppressed]
    grouped: dict[str, dict[str, list[admin_pb2.MergedCell]]] = defaultdict(lambda: defaultdict(list))
    for c in released:
        grouped[c.cohort][c.measure].append(c)
    body = [
        "<h1>fedsignal — merged signals</h1>",
        f'<p class="meta">Generated {_esc(generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))}. '
        f"Cells are shown only when at least k = {response.min_tenants} distinct tenants contributed. "
        "Rates are measure / turns of the same slice; bars are confidence intervals that include the DP "
        f"noise. Measures and slices are ordered by their most harmful deviation from the cohort's rate "
        f"(rises of failure rates, drops of task success); each plot shows the {MAX_SERIES} most significant "
        "slices.</p>",
    ]
    body.append(hotspots_table(response.hotspots))
    if not released:
        body.append("<p>No merged cell has reached k tenants yet.</p>")
    for cohort in sorted(grouped):
        body.append(f"<h2>Cohort {_esc(cohort)}</h2>")
        # The measure with the most harmful deviation first: a hotspot leads the page.
        measures = grouped[cohort]
        for measure in sorted(measures, key=lambda m: (-max(_harm(c) for c in measures[m]), m)):
            plot = _plot(cohort, measure, grouped[cohort][measure])
            if plot is not None:
                body.append(f"<h3>{_esc(measure)}</h3>{plot}")
    if released:
        body.append("<h2>Most significant cells</h2>")
        body.append(_table(released))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>fedsignal merged signals</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
