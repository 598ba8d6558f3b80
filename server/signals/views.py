"""What reviewers see of the merged signals.

A window may hold merged rows of several schema versions (a rollout adds
artifact versions mid-window); they are combined here by cell key, never by
index: a cell's estimate, variance and tenant count are summed over the
versions whose layout contains that key.

k-anonymity: a cell is *released* only when at least ``settings.min_tenants``
distinct tenants contributed to it. A suppressed cell keeps its key and
tenant count but its estimate, variance and rate are withheld (zero) unless
a server-internal caller explicitly asks with ``reveal_suppressed=True``.

Rates: every measure other than ``turns`` is divided by the ``turns``
estimate of the same slice; the interval comes from
:func:`aggregation.stats.ratio_interval`, which accounts for the DP noise.

Significance (sort order): ``z = (rate - p0) / se`` where ``p0`` is the
cohort's overall rate of that measure (sum of its released estimates over
every window and slice divided by the matching ``turns`` sum) and ``se`` is
the half-width of the cell's interval divided by the normal quantile of the
confidence level; a slice whose ``turns`` estimate is within the noise
(below ``z·sqrt(turns variance)``) has no measurable traffic and gets z = 0.
Cells are sorted by *harm* first: ``z`` descending for
failure measures and counters where more is worse, ``-z`` for
``task_success`` (a drop is the harm), so a hotspot leads the table and an
unusually clean slice does not; suppressed cells (z = 0) come last.

Evidence floor: DP noise is added to every cell, empty slices too, so a slice
with no traffic still has a "rate" — noise over noise, e.g. 100 % in
[20 %, 100 %]. :class:`EvidenceFloor` says when a rate is evidence at all: its
noisy ``turns`` denominator is at least ``c`` noise standard deviations (the
schema's noise scale, via the merged variance) and at least ``min_turns``, its
estimate is not negative, and its interval is no wider than a bound. Below the
floor a cell gets z = 0, the views print "not enough data" instead of an
interval, and the hotspot rules propose nothing from it.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from fedsignal.v1 import admin_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregation import stats
from aggregation.schema import TURNS, SignalSchema
from server.context import ServerSettings
from server.signals.models import MergedWindow
from server.signals.schemas import get_schema

DEFAULT_LIST_LIMIT = 1000

SliceKey = tuple[tuple[str, str], ...]


#: Measures where a higher rate is the good direction.
HIGHER_IS_BETTER = frozenset({"task_success"})


NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class EvidenceFloor:
    """The least evidence a merged rate needs before anyone reads it (see the module docstring)."""

    #: The noisy turns estimate must be at least this many noise standard deviations ...
    min_turns_sigmas: float = 5.0
    #: ... and at least this many turns.
    min_turns: float = 20.0
    #: The rate's confidence interval may be at most this wide.
    max_interval_width: float = 0.3

    def turns_enough(self, turns_estimate: float, turns_variance: float) -> bool:
        sigma = math.sqrt(max(turns_variance, 0.0))
        return turns_estimate >= max(self.min_turns, self.min_turns_sigmas * sigma)

    def shown_enough(self, estimate: float, rate_low: float, rate_high: float) -> bool:
        """What the wire shows (no turns on it): a non-negative estimate and a narrow enough interval."""
        return estimate >= 0 and 0 <= rate_high - rate_low <= self.max_interval_width

    def admits(self, cell: MergedCellView) -> bool:
        """True when ``cell`` (released) carries enough data to be read as a rate."""
        return (not cell.suppressed and self.turns_enough(cell.turns_estimate, cell.turns_variance)
                and self.shown_enough(cell.estimate, cell.rate_low, cell.rate_high))


DEFAULT_EVIDENCE_FLOOR = EvidenceFloor()


def harm(measure: str, z_score: float) -> float:
    """How far a rate deviates in the harmful direction, in standard errors."""
    return -z_score if measure in HIGHER_IS_BETTER else z_score


def harm_score(cell: MergedCellView) -> float:
    return harm(cell.measure, cell.z_score)


@dataclass
class MergedCellView:
    cohort: str
    window_start: int
    window_end: int
    measure: str
    slice: dict[str, str]
    estimate: float
    variance: float
    rate: float
    rate_low: float
    rate_high: float
    tenants: int
    turns_estimate: float
    turns_variance: float
    suppressed: bool
    z_score: float = 0.0

    def copy(self) -> MergedCellView:
        clone = object.__new__(MergedCellView)
        clone.__dict__.update(self.__dict__)
        clone.slice = dict(self.slice)
        return clone

    def to_proto(self) -> admin_pb2.MergedCell:
        return admin_pb2.MergedCell(
            cohort=self.cohort,
            window_start=self.window_start,
            window_end=self.window_end,
            measure=self.measure,
            slice=self.slice,
            estimate=self.estimate,
            variance=self.variance,
            rate=self.rate,
            rate_low=self.rate_low,
            rate_high=self.rate_high,
            tenants=self.tenants,
            suppressed=self.suppressed,
            z_score=self.z_score,
        )


@dataclass
class _Accumulator:
    estimate: float = 0.0
    variance: float = 0.0
    tenants: int = 0


@dataclass(frozen=True)
class _Layout:
    schema: SignalSchema
    slices: tuple[SliceKey, ...]
    digest: bytes


@dataclass
class _Window:
    cohort: str
    window_start: int
    window_end: int
    rows: list[tuple[MergedWindow, _Layout]] = field(default_factory=list)

    def cache_key(self, k: int, confidence: float, reveal: bool) -> bytes:
        """Content address of this window's views: any change of a row or schema changes it."""
        h = hashlib.blake2b(repr((self.cohort, self.window_start, self.window_end, k, confidence, reveal)).encode())
        for row, layout in self.rows:
            h.update(layout.digest)
            h.update(repr((row.schema_version, row.variance, row.tenants)).encode())
            h.update(row.cells)
        return h.digest()


# Views of a window only change when one of its merged rows does; merged_cells runs in
# periodic jobs over the whole history, so each window's views are computed once per
# content (content-addressed, so several databases in one process never mix).
_VIEW_CACHE: OrderedDict[bytes, list[MergedCellView]] = OrderedDict()
_VIEW_CACHE_SIZE = 4096
_cache_lock = threading.Lock()


@lru_cache(maxsize=256)
def _layout(schema_json: str) -> _Layout:
    schema = SignalSchema.from_json(schema_json)
    slices = []
    for i in range(schema.slice_count):
        key = schema.cell_key(i)  # measure index 0: every slice once, in dense order
        slices.append(tuple((d.name, key[d.name]) for d in schema.slice_dimensions))
    return _Layout(schema, tuple(slices), hashlib.blake2b(schema_json.encode(), digest_size=16).digest())


def _windows(session: Session, cohort: str | None, window_start_from: int) -> list[_Window]:
    stmt = select(MergedWindow).order_by(MergedWindow.cohort, MergedWindow.window_start, MergedWindow.schema_version)
    if cohort:
        stmt = stmt.where(MergedWindow.cohort == cohort)
    if window_start_from:
        stmt = stmt.where(MergedWindow.window_start >= window_start_from)
    layouts: dict[tuple[str, int], _Layout | None] = {}
    windows: dict[tuple[str, int], _Window] = {}
    for row in session.scalars(stmt):
        if (row.cohort, row.schema_version) not in layouts:
            schema = get_schema(session, row.cohort, row.schema_version)
            layouts[(row.cohort, row.schema_version)] = _layout(schema.to_json()) if schema is not None else None
        layout = layouts[(row.cohort, row.schema_version)]
        if layout is None:
            continue
        window = windows.setdefault(
            (row.cohort, row.window_start), _Window(row.cohort, row.window_start, row.window_end)
        )
        window.rows.append((row, layout))
    return list(windows.values())


def _combine(window: _Window) -> dict[tuple[str, SliceKey], _Accumulator]:
    """Sum the window's rows by cell key (rows of different schema versions share keys)."""
    cells: dict[tuple[str, SliceKey], _Accumulator] = defaultdict(_Accumulator)
    for row, layout in window.rows:
        schema = layout.schema
        table = np.frombuffer(row.cells, dtype="<i8").reshape(len(schema.measures), schema.slice_count)
        for m, measure in enumerate(schema.measures):
            for slice_key, value in zip(layout.slices, table[m].tolist(), strict=True):
                acc = cells[(measure, slice_key)]
                acc.estimate += value
                acc.variance += row.variance
                acc.tenants += row.tenants
    return cells


def _window_views(window: _Window, k: int, confidence: float, reveal: bool) -> list[MergedCellView]:
    cells = _combine(window)
    views = []
    for (measure, slice_key), acc in cells.items():
        if measure == TURNS:
            continue
        turns = cells.get((TURNS, slice_key), _Accumulator())
        tenants = min(acc.tenants, turns.tenants)
        suppressed = tenants < k
        view = MergedCellView(
            cohort=window.cohort,
            window_start=window.window_start,
            window_end=window.window_end,
            measure=measure,
            slice=dict(slice_key),
            estimate=0.0,
            variance=0.0,
            rate=0.0,
            rate_low=0.0,
            rate_high=0.0,
            tenants=tenants,
            turns_estimate=0.0,
            turns_variance=0.0,
            suppressed=suppressed,
        )
        if not suppressed or reveal:
            rate, low, high = stats.ratio_interval(acc.estimate, acc.variance, turns.estimate, turns.variance,
                                                   confidence)
            view.estimate, view.variance = acc.estimate, acc.variance
            view.turns_estimate, view.turns_variance = turns.estimate, turns.variance
            view.rate, view.rate_low, view.rate_high = _finite(rate), _finite(low), _finite(high)
        views.append(view)
    return views


def _cached_views(window: _Window, k: int, confidence: float, reveal: bool) -> list[MergedCellView]:
    key = window.cache_key(k, confidence, reveal)
    with _cache_lock:
        hit = _VIEW_CACHE.get(key)
        if hit is not None:
            _VIEW_CACHE.move_to_end(key)
    if hit is None:
        hit = _window_views(window, k, confidence, reveal)
        with _cache_lock:
            _VIEW_CACHE[key] = hit
            while len(_VIEW_CACHE) > _VIEW_CACHE_SIZE:
                _VIEW_CACHE.popitem(last=False)
    # callers get their own objects (z is set per call, and callers may mutate)
    return [v.copy() for v in hit]


def merged_cells(
    session: Session,
    cohort: str | None,
    settings: ServerSettings,
    *,
    window_start_from: int = 0,
    reveal_suppressed: bool = False,
) -> list[MergedCellView]:
    """Every merged cell (all measures but ``turns``) of ``cohort`` (None/"": all cohorts).

    Sorted by significance; see the module docstring for z and suppression.
    """
    cells: list[MergedCellView] = []
    for window in _windows(session, cohort, window_start_from):
        cells.extend(_cached_views(window, settings.min_tenants, settings.confidence, reveal_suppressed))
    _score(cells, settings.confidence)
    cells.sort(key=lambda c: (c.suppressed, -harm_score(c), c.cohort, c.window_start, c.measure))
    return cells


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _score(cells: Iterable[MergedCellView], confidence: float) -> None:
    """Set each released cell's z against its cohort's overall rate of the measure."""
    cells = list(cells)
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for c in cells:
        if not c.suppressed:
            t = totals[(c.cohort, c.measure)]
            t[0] += c.estimate
            t[1] += c.turns_estimate
    z_crit = stats.z_value(confidence)
    for c in cells:
        num, den = totals.get((c.cohort, c.measure), (0.0, 0.0))
        # A slice whose turns are indistinguishable from the DP noise has no
        # traffic to speak of: its "rate" is noise over noise, not evidence.
        no_traffic = c.turns_estimate <= z_crit * math.sqrt(max(c.turns_variance, 0.0))
        if c.suppressed or den <= 0 or no_traffic or not DEFAULT_EVIDENCE_FLOOR.admits(c):
            c.z_score = 0.0
            continue
        overall = num / den
        se = (c.rate_high - c.rate_low) / (2 * z_crit)
        c.z_score = (c.rate - overall) / se if se > 0 else 0.0


def list_signals(
    session: Session, settings: ServerSettings, request: admin_pb2.ListSignalsRequest
) -> admin_pb2.ListSignalsResponse:
    """``AdminService.ListSignals``: released cells (plus suppressed ones on request), by significance."""
    cells = merged_cells(session, request.cohort or None, settings, window_start_from=request.window_start_from)
    if not request.include_suppressed:
        cells = [c for c in cells if not c.suppressed]
    limit = request.limit or DEFAULT_LIST_LIMIT
    return admin_pb2.ListSignalsResponse(
        cells=[c.to_proto() for c in cells[:limit]], min_tenants=settings.min_tenants
    )
