"""The collector: the tenant-side public face that ties the pieces together.

``Collector(config, clock=..., channel=...)`` records decision events into
windows (durable when ``record``/``record_many`` return), seals due windows
as DP releases under the budget ledger (``close_windows``), delivers sealed
reports exactly once (``deliver``), pulls signed bundles (``pull_bundle``)
and resolves artifacts for agents (``resolver``). The listeners and periodic
loops of ``agent run`` live in :mod:`tenant_agent.serving`, which drives a
collector (this module does not know about it).

Time is whatever ``clock`` says (an :data:`aggregation.clock.Clock`: aware
UTC datetimes). The store, windows and ledger rows keep unix seconds; the
conversion happens here, at their boundary. Windows are keyed by event
timestamps, so simulated time works as long as ``now`` is passed along.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from fedsignal.v1 import signals_pb2, signals_pb2_grpc
from sqlalchemy import Connection, func, select

from aggregation.audit import ChainVerdict, verify_chain
from aggregation.budget import BudgetPolicy, BudgetStatus
from aggregation.bundle import VerifiedBundle
from aggregation.bundle_errors import BundleRefused
from aggregation.clock import Clock, from_unix, system_clock, to_unix
from aggregation.events import DecisionEvent
from aggregation.schema import SignalSchema, default_schema
from aggregation.taxonomy import Taxonomy
from tenant_agent import replay_agent, shadow
from tenant_agent.bundles import BundleClient, PullResult, Resolver
from tenant_agent.config import CollectorConfig, ConfigError
from tenant_agent.files import private_dir
from tenant_agent.ingest.jsonl import LineError, read_jsonl
from tenant_agent.ingest.otlp import OtlpMapper
from tenant_agent.ingest.records import DeferredTexts, DiscardedTexts, event_from_dict
from tenant_agent.outbox import DeadLetter, DeliveryResult, Outbox
from tenant_agent.redact import RedactionConfig, Redactor
from tenant_agent.release import WindowOutcome, WindowSealer, load_ledger
from tenant_agent.secagg import SecureRelease, is_secure
from tenant_agent.store import CollectorStore, Release, Window
from tenant_agent.transport import SCHEMA_FILE, TransportError, open_channel, rpc_failure
from tenant_agent.windows import RecordResult, WindowBook

log = logging.getLogger(__name__)

#: What :meth:`Collector.text_mode` answers.
TEXT_REDACT, TEXT_DEFER, TEXT_DISCARD = "redact", "defer", "discard"


@dataclass(frozen=True)
class ImportResult:
    lines: int
    imported: int
    late_dropped: int
    # (line number, reason) of every line that was not an event.
    errors: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class CollectorStatus:
    tenant_id: str
    cohort: str
    schema_version: int
    windows: dict[str, int]  # open, sealed, withheld, delivered
    outbox_depth: int
    # Reports the server refused for good (dead letters), newest first, with its reason.
    dead_letters: tuple[DeadLetter, ...]
    # The local audit chain (spends, withheld and delivered releases) verifies.
    audit_ok: bool
    active_bundle: str | None
    # Why the installed bundle is not served (it failed re-verification on load), or None.
    bundle_problem: str | None
    counters: dict[str, int]
    redaction: dict[str, int]
    # Free texts dropped unread on arrival (no replay capture stored them, no taxonomy rule read them).
    texts_discarded: int = 0


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is being recorded.

    A batch holds thousands of live events (each a few containers) until it is stored: the cyclic GC
    ran a young collection every 700 of those allocations and walked them all again and again, 15-25 %
    of ``record_many`` (they form no cycles; reference counting frees them when the batch ends). The
    collector is switched back on afterwards, whatever happens, unless it was off already (or another
    thread's batch switched it off: then that batch switches it back on).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Collector:
    """One tenant's collector over ``config.state_dir``."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        clock: Clock = system_clock,
        channel: grpc.Channel | None = None,
        rng: random.Random | None = None,
        taxonomy: Taxonomy | None = None,
    ) -> None:
        config = config.with_identity()
        if not config.tenant_id or not config.cohort:
            raise ConfigError(
                f"no tenant identity in {config.state_dir}: enroll first (`fedsignal agent enroll`) "
                "or set tenant_id and cohort in the config"
            )
        self.config = config
        self.tenant_id: str = config.tenant_id
        self.cohort: str = config.cohort
        self.clock = clock
        self._channel = channel
        self._owns_channel = False
        private_dir(config.state_dir)
        self.store = CollectorStore(config.state_dir, database_url=config.store_url)
        self.taxonomy = taxonomy or Taxonomy.load()
        self.redactor = Redactor(
            RedactionConfig(patterns=dict(config.redaction.patterns),
                            dictionaries={k: list(v) for k, v in config.redaction.dictionaries.items()})
        )
        self._redaction_seen: dict[str, int] = {}
        # Free texts dropped unread (see keeps_text); folded into the store's counters like the redactions.
        self.texts_discarded = DiscardedTexts()
        self._discarded_seen = 0
        self._lock = threading.Lock()
        self._schema = self._initial_schema()
        try:
            self._check_window(self._schema)
        except ConfigError:
            self.store.close()  # refused before use: release the store's file and locks
            raise
        self.book = WindowBook(
            self.store,
            self.taxonomy,
            lambda: self._schema,
            window_seconds=config.window_seconds,
            privacy_unit=config.privacy_unit,
        )
        self.secure = SecureRelease(self.store, config.state_dir, tenant_id=self.tenant_id, cohort=self.cohort,
                                    channel=lambda: self.channel(required=False), clock=self.clock,
                                    config=config.secagg, rpc_timeout=config.delivery.rpc_timeout_seconds)
        self._sealer = self._make_sealer(config.close_grace_seconds)
        self.outbox = Outbox(self.store, config.delivery, rng=rng, audit_actor=self.tenant_id)
        self._bundle_client: BundleClient | None = None
        self._resolver: Resolver | None = None

    def _make_sealer(self, grace_seconds: float) -> WindowSealer:
        return WindowSealer(
            self.store,
            self.book,
            tenant_id=self.tenant_id,
            cohort=self.cohort,
            taxonomy_version=self.taxonomy.version,
            release_config=self.config.release,
            policy=lambda conn, now: self._budget_policy(conn, now, persist=True),
            grace_seconds=grace_seconds,
            secure=self.secure,
        )

    # -- schema ---------------------------------------------------------------
    @property
    def schema(self) -> SignalSchema:
        return self._schema

    def _initial_schema(self) -> SignalSchema:
        with self.store.engine.connect() as conn:
            stored = CollectorStore.get_setting(conn, "schema")
        if stored:
            return SignalSchema.from_json(stored)
        path = self.config.state_dir / SCHEMA_FILE
        if path.exists():
            return SignalSchema.from_json(path.read_text())
        return default_schema(self.cohort)

    def _check_window(self, schema: SignalSchema) -> None:
        """The window length is the cohort schema's: a config that names another one is refused.

        The server refuses reports of any other window length for good, so a collector that sealed them would
        spend budget on releases that can never be delivered.
        """
        wanted = self.config.window_seconds
        if wanted is not None and wanted != schema.window_seconds:
            raise ConfigError(
                f"window_seconds = {wanted} disagrees with the cohort {self.cohort!r} schema v{schema.version} "
                f"({schema.window_seconds} s): the server refuses any other window; remove window_seconds "
                "from the collector config"
            )

    def adopt_schema(self, schema: SignalSchema) -> None:
        """Use ``schema`` from now on if it is newer than the current one (persisted)."""
        if schema.cohort != self.cohort or schema.version <= self._schema.version:
            return
        self._check_window(schema)
        with self.store.transaction() as conn:
            CollectorStore.put_setting(conn, "schema", schema.to_json())
        self._schema = schema

    def refresh_schema(self) -> bool:
        """Fetch the cohort's current schema; False when the server is unreachable."""
        channel = self.channel(required=False)
        if channel is None:
            return False
        try:
            msg = signals_pb2_grpc.SignalServiceStub(channel).GetSignalSchema(
                signals_pb2.GetSignalSchemaRequest(version=0), timeout=self.config.delivery.rpc_timeout_seconds
            )
        except grpc.RpcError as exc:
            log.info("schema refresh failed, keeping version %s: %s", self._schema.version, rpc_failure(exc))
            return False
        self.adopt_schema(SignalSchema.from_proto(msg))
        return True

    @property
    def has_server(self) -> bool:
        """True when a server channel was given or can be opened from the config."""
        return self._channel is not None or bool(self.config.server)

    def channel(self, *, required: bool = True) -> grpc.Channel | None:
        if self._channel is None and self.config.server:
            self._channel = open_channel(self.config.state_dir, self.config.server, insecure=self.config.insecure_dev)
            self._owns_channel = True
        if self._channel is None and required:
            raise TransportError("no server configured: set `server` in the collector config or enroll first")
        return self._channel

    # -- record path ------------------------------------------------------------
    def record(self, event: DecisionEvent | Mapping[str, Any]) -> RecordResult:
        return self.record_many([event])

    def record_many(self, events: Iterable[DecisionEvent | Mapping[str, Any]],
                    held: Iterable[tuple[DecisionEvent, str]] = ()) -> RecordResult:
        """Record events in one transaction; every event is durable when this returns.

        A dict event's free text is handled as :meth:`text_mode` says (decided once per
        batch): redacted onto the event, kept aside unredacted until replay capture decides
        whether it stores the turn (then redacted there, and only then), or checked and
        discarded unread. ``held``: unredacted texts of ``DecisionEvent`` values of this batch,
        each with its event, kept aside the same way (what an OTLP mapper with ``defer_text``
        holds, :meth:`OtlpMapper.take_held`).
        """
        with _cyclic_gc_paused():
            batch: list[DecisionEvent] = []
            append = batch.append
            mode: str | None = None
            discarded = 0
            #: ``defer``: the unredacted texts, local to this call (never on an event, never stored):
            #: replay capture redacts those of the turns it stores.
            deferred = DeferredTexts(self.redactor)
            for held_event, held_text in held:
                deferred.hold(held_event, held_text)
            tenant_id, redactor = self.tenant_id, self.redactor
            for e in events:
                if type(e) is DecisionEvent or isinstance(e, DecisionEvent):
                    append(e)
                    continue
                if mode is None:
                    mode = self.text_mode()
                # A dict is read as it is (event_from_dict keeps no reference to it nor to its containers).
                doc = e if type(e) is dict else dict(e)
                event = event_from_dict(doc, tenant_id, redactor, keep_text=mode == TEXT_REDACT)
                append(event)
                if mode != TEXT_REDACT:
                    text = doc.get("text")
                    if text:  # a valid event: its text was a non-empty string
                        if mode == TEXT_DEFER:
                            deferred.hold(event, text)
                        else:
                            discarded += 1  # dropped unread
            self.texts_discarded.add(discarded)
            batch = shadow.divert(self, batch)  # shadow turns are paired, never live evidence
            result = self.book.record(batch, self._redaction_deltas)
            # Failing turns become local replay cases, when enabled.
            holding = len(deferred)
            replay_agent.capture(self, batch, deferred if holding else None)
            if holding:
                # The held texts capture did not store were never redacted: discarded unread.
                self.texts_discarded.add(holding - deferred.redacted)
                deltas = self._redaction_deltas()
                if deltas:
                    with self.store.transaction() as conn:
                        CollectorStore.add_counters(conn, deltas)
        return result

    def text_mode(self) -> str:
        """How arriving free text (``DecisionEvent.text``) is handled: one of

        * ``redact`` — redacted onto the event on arrival: a taxonomy rule reads ``text`` (the
          collector's, or replay capture's);
        * ``defer`` — replay capture stores redacted text and nothing else reads it: a dict
          event's text is held, unredacted, only until the end of :meth:`record_many`, and
          redacted only for the turns capture stores (the others are discarded unread); the
          collector's OTLP receiver holds its turns' texts the same way (:meth:`otlp_mapper`),
          JSON Lines import redacts on arrival;
        * ``discard`` — no consumer: the text is checked and discarded unread (never redacted,
          never stored, counted in ``texts_discarded``).

        Asked at every batch and OTLP request, so the answer follows the replay policy and
        taxonomy in force (``replay.toml`` is read when the collector first records and kept
        until it closes).
        """
        if self.taxonomy.reads_field("text"):
            return TEXT_REDACT
        replay = replay_agent.attached(self)
        if not replay.config.replay_set.enabled:
            return TEXT_DISCARD  # replay_agent.capture does not run
        replay_set = replay.replay_set  # what capture stores through (opened on first use, as capture does)
        policy = replay_set.policy
        if not policy.enabled:
            return TEXT_DISCARD
        if replay_set.taxonomy.reads_field("text"):
            return TEXT_REDACT
        return TEXT_DEFER if policy.store_redacted_text else TEXT_DISCARD

    def keeps_text(self) -> bool:
        """Whether some consumer reads free text (:meth:`text_mode` is not ``discard``): the
        OTLP and JSON Lines paths then redact it onto the events they build."""
        return self.text_mode() != TEXT_DISCARD

    def otlp_mapper(self, **options: Any) -> OtlpMapper:
        """An OTLP mapper for this collector: its tenant and redactor, and its decision on free
        text (:meth:`text_mode`, asked at every request) with the discarded texts counted here.
        In ``defer`` mode the mapper holds the texts unredacted: hand them to :meth:`record_many`
        (``held=mapper.take_held()``) with the events, as the collector's OTLP receiver does."""
        return OtlpMapper(self.tenant_id, self.redactor, keep_text=self.keeps_text,
                          defer_text=lambda: self.text_mode() == TEXT_DEFER, discarded=self.texts_discarded, **options)

    def _redaction_deltas(self) -> dict[str, int]:
        with self._lock:
            current = dict(self.redactor.stats)
            deltas = {f"redacted_{k}": v - self._redaction_seen.get(k, 0) for k, v in current.items()}
            self._redaction_seen = current
            discarded = self.texts_discarded.total
            deltas["texts_discarded"] = discarded - self._discarded_seen
            self._discarded_seen = discarded
        return {k: v for k, v in deltas.items() if v}

    def import_jsonl(self, path: str | Path) -> ImportResult:
        """Import a JSON Lines file; bad lines are reported with their number and reason."""
        lines = imported = late = 0
        errors: list[tuple[int, str]] = []
        batch: list[DecisionEvent] = []
        # The decision on free text is taken once for the file (keeps_text).
        for item in read_jsonl(path, self.tenant_id, self.redactor, keep_text=self.keeps_text(),
                               discarded=self.texts_discarded):
            lines += 1
            if isinstance(item, LineError):
                errors.append((item.line, item.reason))
                continue
            batch.append(item)
            if len(batch) >= self.config.batch_size:
                result = self.record_many(batch)
                imported, late, batch = imported + result.recorded, late + result.late_dropped, []
        if batch:
            result = self.record_many(batch)
            imported, late = imported + result.recorded, late + result.late_dropped
        if errors:
            with self.store.transaction() as conn:
                CollectorStore.add_counters(conn, {"import_line_errors": len(errors)})
        return ImportResult(lines, imported, late, tuple(errors))

    # -- release and delivery -------------------------------------------------
    def close_windows(self, now: datetime | None = None) -> list[WindowOutcome]:
        """Seal every due window (schema refreshed first when connected)."""
        now = self.clock() if now is None else now
        self.refresh_schema()
        outcomes = self._sealer.close_due(to_unix(now), self._schema)
        self.secagg_duty(now)
        return outcomes

    def secagg_duty(self, now: datetime | None = None) -> None:
        """Secure mode: cover windows without events with empty inputs, move submitted rounds on."""
        if not is_secure(self._schema) or not self.has_server:
            return
        at = to_unix(self.clock() if now is None else now)
        self.secure.register_key()  # first start after enrollment: publish the masking key (once)
        policy = lambda conn, t: self._budget_policy(conn, t, persist=True)  # noqa: E731
        self.secure.cover_empty_windows(at, self._schema, policy, self.config.close_grace_seconds)
        self.secure.advance_all()

    def flush(self, now: datetime | None = None) -> list[WindowOutcome]:
        """Close the current window now, for trying things out (``fedsignal agent flush``).

        Seals every window that has started by ``now`` (the current one included) as if it had ended: the
        release spends the same budget as at the window's end, and events arriving later for that window are
        dropped as late. Windows stay aligned to the schema's window length. The server accepts a window only
        once it has ended, so the outbox holds an early-sealed report until then (``deliver`` sends it after).
        """
        now = self.clock() if now is None else now
        self.refresh_schema()
        return self._sealer.close_due(to_unix(now), self._schema, force=True)

    def deliver(self, now: datetime | None = None, *, force: bool = False) -> DeliveryResult:
        """Send due reports from the outbox (``force``: ignore backoff)."""
        now = self.clock() if now is None else now
        channel = self.channel()
        if channel is None:  # channel() raises when none can be made; this satisfies the type
            raise TransportError("no server configured")
        result = self.outbox.deliver(channel, now, force=force)
        self.secagg_duty(now)
        return result

    def _budget_policy(self, conn: Connection, now: float, *, persist: bool = False) -> BudgetPolicy:
        # ``now`` in unix seconds: the sealer (and the store it reads) keeps time that way.
        b = self.config.budget
        anchor = b.anchor
        if anchor is None:
            stored = CollectorStore.get_setting(conn, "budget_anchor")
            if stored is None:
                # The first period starts at the first release decision.
                stored = repr(float(now))
                if persist:
                    CollectorStore.put_setting(conn, "budget_anchor", stored)
            anchor = from_unix(float(stored))
        return BudgetPolicy(b.rho_per_period, b.period, b.lifetime_rho, anchor)

    def budget_status(self, now: datetime | None = None) -> BudgetStatus:
        now = self.clock() if now is None else now
        with self.store.engine.connect() as conn:
            ledger = load_ledger(conn, self._budget_policy(conn, to_unix(now)))
        return ledger.status(now)

    # -- bundles ----------------------------------------------------------------
    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            self._resolver = Resolver(self.config.state_dir, self.tenant_id, clock=self.clock)
        return self._resolver

    def pull_bundle(self) -> PullResult:
        """Fetch, verify and install the cohort's current bundle."""
        channel = self.channel()
        if channel is None:  # channel() raises when none can be made; this satisfies the type
            raise TransportError("no server configured")
        if self._bundle_client is None:
            self._bundle_client = BundleClient(channel, self.config.state_dir, self.tenant_id, self.cohort, self.clock)
        result = self._bundle_client.pull()
        # A rollout publishes new artifact-version labels with its bundle.
        self.refresh_schema()
        return result

    # -- status -----------------------------------------------------------------
    def status(self) -> CollectorStatus:
        with self.store.engine.connect() as conn:
            by_state = dict(conn.execute(select(Window.state, func.count()).group_by(Window.state)).all())
            delivered = conn.execute(
                select(func.count()).select_from(Release).where(Release.delivered_at.is_not(None))
            ).scalar_one()
            counters = CollectorStore.counters(conn)
        windows = {
            "open": int(by_state.get("open", 0)),
            "sealed": int(by_state.get("sealed", 0)),
            "withheld": int(by_state.get("withheld", 0)),
            "delivered": int(delivered),
        }
        redaction = {k[len("redacted_"):]: v for k, v in counters.items() if k.startswith("redacted_")}
        texts_discarded = counters.pop("texts_discarded", 0)
        bundle, problem = self._active_bundle()
        return CollectorStatus(
            tenant_id=self.tenant_id,
            cohort=self.cohort,
            schema_version=self._schema.version,
            windows=windows,
            outbox_depth=self.outbox.depth(),
            dead_letters=self.outbox.dead_letters(),
            audit_ok=self.verify_audit().ok,
            active_bundle=bundle,
            bundle_problem=problem,
            counters={k: v for k, v in counters.items() if not k.startswith("redacted_")},
            redaction=redaction,
            texts_discarded=texts_discarded,
        )

    def verify_audit(self) -> ChainVerdict:
        """Verify the local hash-chained audit log end to end."""
        return verify_chain(self.store.audit_entries())

    def _active_bundle(self) -> tuple[str | None, str | None]:
        try:
            bundle: VerifiedBundle | None = self.resolver.active()
        except BundleRefused as exc:
            return None, str(exc)
        if bundle is None:
            return None, None
        label = f"version {bundle.version}"
        if bundle.candidate is not None:
            label += f" (candidate {bundle.candidate.candidate_id} in rollout)"
        return label, None

    def close(self) -> None:
        if self._owns_channel and self._channel is not None:
            self._channel.close()
        self._channel = None
        shadow.close(self)
        replay_agent.close(self)
        self.store.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

