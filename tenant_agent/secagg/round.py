"""The round client: seal a window into a masked input, persist it, answer the unmask phase.

See the package doc (``tenant_agent.secagg``) for what the tenant checks and why.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fedsignal.v1 import secagg_pb2, secagg_pb2_grpc
from sqlalchemy import Connection, select

from aggregation.budget import BudgetExceeded, BudgetPolicy
from aggregation.clock import Clock, to_unix
from aggregation.schema import SECURE, SignalSchema
from aggregation.secagg import (
    Attestation,
    ClientRound,
    NoisePlan,
    RelayedAttestations,
    RosterEntry,
    RoundContext,
    SecAggError,
    UnmaskRequest,
    plan_noise,
    roster_digest,
)
from tenant_agent.config import SecAggConfig
from tenant_agent.release import load_ledger
from tenant_agent.secagg.errors import NotInRound, OwnLossCapExceeded, RosterRejected, SecAggClientError
from tenant_agent.secagg.keys import load_or_create_masking_key
from tenant_agent.secagg.noise_pool import NoisePool
from tenant_agent.secagg.roster import ATTESTATION_DOMAIN, RosterVerifier, roster_statement
from tenant_agent.store import WINDOW_SEALED, WINDOW_WITHHELD, CollectorStore, Setting, Window
from tenant_agent.store_models import LOCK_LEDGER, advisory_lock
from tenant_agent.windows import WindowBook

log = logging.getLogger(__name__)

ROUND_PREFIX = "secagg.round."
REGISTERED_SETTING = "secagg.registered_key"
ONLINE_SINCE_SETTING = "secagg.online_since"
#: Per-tenant cell counts above this are clipped before masking (the round's modulus has room
#: for the roster's sum of such cells; see ``server.secagg.rounds.SecAggSettings.max_cell_count``).
MAX_CELL_COUNT = 1 << 20
#: How many past due windows an empty input is sent for when the collector comes online.
EMPTY_WINDOW_BACKFILL = 2

# States of a round this tenant takes part in.
SUBMITTED = "submitted"  # input persisted, not yet acknowledged
ACKED = "acked"  # the server acknowledged the input
ANSWERED = "answered"  # unmask response persisted (resent until acknowledged)
DONE = "done"
DROPPED = "dropout"
ABORTED = "aborted"
REFUSED = "refused"  # the tenant refused to unmask (inconsistent survivor sets, a bad roster)
FINAL_STATES = (DONE, DROPPED, ABORTED, REFUSED)


#: What ``SecureRelease.seal_window`` returns when the server has no SecureAggregationService:
#: the sealer releases the window in local mode at the schema's noise (the tenant's own loss is
#: then the local release's, which the ledger spends).
LOCAL_FALLBACK = object()


@dataclass(frozen=True)
class LossSummary:
    """What ``fedsignal agent budget`` shows under secure aggregation."""

    releases: int
    cohort_rho: float  # spent on the ledger (honest-majority loss of each cohort release)
    own_worst_case_rho: float  # if every other party colluded with the server
    own_worst_case_rho_cap: float | None
    rounds_done: int
    rounds_dropped: int
    rounds_aborted: int


@dataclass
class PreparedRound:
    """A round whose context and roster this tenant verified."""

    round_id: str
    ctx: RoundContext
    plan: NoisePlan
    verifier: RosterVerifier


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())


class SecureRelease:
    """One tenant's secure-aggregation duty over its collector store and server channel."""

    LOCAL_FALLBACK = LOCAL_FALLBACK

    def __init__(
        self,
        store: CollectorStore,
        state_dir: Path,
        *,
        tenant_id: str,
        cohort: str,
        channel: Callable[[], grpc.Channel | None],
        clock: Clock,
        config: SecAggConfig | None = None,
        rpc_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._state_dir = state_dir
        self.tenant_id = tenant_id
        self.cohort = cohort
        self._channel = channel
        self._clock = clock
        self.config = config or SecAggConfig()
        self._timeout = rpc_timeout
        self._private, self.public_key = load_or_create_masking_key(state_dir)
        self._identity_key: ec.EllipticCurvePrivateKey | None = None
        self._rounds: dict[str, PreparedRound] = {}
        self._verifier: RosterVerifier | None = None
        # The roster of the last round this tenant verified (memory only): the server then sends
        # the next round's context without it when it is unchanged (GetRoundRequest.roster_digest).
        self._held_roster: tuple[RosterEntry, ...] = ()
        # X25519 agreements with roster keys, kept across rounds (memory only): the masking keys are
        # long-term, the per-round keys are HKDF of these.
        self._pair_secrets: dict[bytes, bytes] = {}
        self.noise_pool = NoisePool()
        # Set when the server answers UNIMPLEMENTED: it does not serve secure aggregation.
        self.unavailable = False

    # -- identity ----------------------------------------------------------------------------

    def _sign(self, message: bytes) -> bytes:
        if self._identity_key is None:
            pem = (self._state_dir / "credentials" / "client.key").read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise SecAggClientError("the enrolled identity key is not an EC key")
            self._identity_key = key
        return self._identity_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def _stub(self) -> secagg_pb2_grpc.SecureAggregationServiceStub | None:
        channel = self._channel()
        return None if channel is None else secagg_pb2_grpc.SecureAggregationServiceStub(channel)

    def register_key(self) -> bool:
        """Publish the masking key in the roster once (first start after enrollment); False when offline."""
        with self._store.engine.connect() as conn:
            if CollectorStore.get_setting(conn, REGISTERED_SETTING) == self.public_key.hex():
                return True
        stub = self._stub()
        if stub is None:
            return False
        signature = self._sign(roster_statement(self.cohort, self.tenant_id, self.public_key))
        try:
            stub.RegisterMaskingKey(secagg_pb2.RegisterMaskingKeyRequest(public_key=self.public_key,
                                                                          signature=signature),
                                    timeout=self._timeout)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                self.unavailable = True
            log.info("masking key registration failed: %s", exc)
            return False
        with self._store.transaction() as conn:
            CollectorStore.put_setting(conn, REGISTERED_SETTING, self.public_key.hex())
            CollectorStore.append_audit(conn, _iso(to_unix(self._clock())), self.tenant_id, "secagg.key.registered",
                                        {"public_key": self.public_key.hex()})
        return True

    def _ca_pem(self) -> bytes:
        return (self._state_dir / "credentials" / "ca.crt").read_bytes()

    def verifier(self) -> RosterVerifier:
        """This tenant's roster verifier (keeps the entries it verified)."""
        if self._verifier is None:
            self._verifier = RosterVerifier(self._ca_pem(), self.cohort, self._clock)
        return self._verifier

    # -- rounds ------------------------------------------------------------------------------

    def verify_round(self, info: secagg_pb2.RoundInfo, window_start: int, schema: SignalSchema) -> PreparedRound:
        """Check a round offered by the server against the schema and the signed roster."""
        try:
            if info.context_header:  # the roster this tenant holds (it sent its digest)
                ctx = RoundContext.from_header(bytes(info.context_header), self._held_roster)
            else:
                ctx = RoundContext.from_bytes(bytes(info.context))
        except SecAggError as exc:
            raise RosterRejected(f"round context is malformed: {exc}") from None
        if (ctx.cohort, ctx.window_start, ctx.schema_version, ctx.length) != (
                self.cohort, window_start, schema.version, schema.size):
            raise RosterRejected("round context is for another cohort, window, schema version or table size")
        if ctx.round_id != info.round_id:
            raise RosterRejected("round id does not match its context")
        if not math.isclose(info.sigma_central, schema.noise_scale, rel_tol=1e-12):
            raise RosterRejected(f"round noise {info.sigma_central} differs from the schema's {schema.noise_scale}")
        n = len(ctx.roster)
        if ctx.threshold < max(self.config.min_threshold, math.ceil(self.config.min_threshold_fraction * n)):
            raise RosterRejected(f"round threshold {ctx.threshold} of {n} is below this tenant's minimum")
        verifier = self.verifier()
        for entry in info.roster:
            verifier.verify(entry)
        if not all(verifier.knows(e) for e in ctx.roster):
            stub = self._stub()
            if stub is not None and not info.roster:
                for entry in stub.GetRoster(secagg_pb2.GetRosterRequest(), timeout=self._timeout).entries:
                    if any(e.tenant_id == entry.tenant_id for e in ctx.roster):
                        verifier.verify(entry)
        if not all(verifier.knows(e) for e in ctx.roster):
            raise RosterRejected("round context lists keys that are not the signed roster's")
        if self.tenant_id not in ctx.tenant_ids:
            raise NotInRound(f"round {info.round_id} was opened before this tenant's key was in the roster")
        if ctx.public_key_of(self.tenant_id) != self.public_key:
            raise RosterRejected("the round lists another masking key for this tenant")
        plan = plan_noise(info.sigma_central, schema.max_cells_per_unit, schema.max_count_per_cell, n,
                          ctx.threshold, info.delta)
        prepared = PreparedRound(info.round_id, ctx, plan, verifier)
        self._rounds[info.round_id] = prepared
        self._held_roster = ctx.roster  # every entry verified above
        return prepared

    def prepare(self, window_start: int, schema: SignalSchema) -> PreparedRound | None:
        """The verified round of ``window_start``, or None when the server is unreachable or has none yet."""
        if not self.register_key():
            return None
        stub = self._stub()
        if stub is None:
            return None
        try:
            info = stub.GetRound(secagg_pb2.GetRoundRequest(
                window_start=window_start, schema_version=schema.version, omit_roster=True,
                roster_digest=roster_digest(self._held_roster) if self._held_roster else b""), timeout=self._timeout)
        except grpc.RpcError as exc:
            log.info("no round for window %s yet: %s", window_start, exc)
            return None
        return self.verify_round(info, window_start, schema)

    # -- seal ------------------------------------------------------------------------------------

    def seal(self, window_start: int, schema: SignalSchema, now: float, policy: Callable[[Connection, float], BudgetPolicy],
             table_of: Callable[[Connection], npt.NDArray[np.int64]] | None) -> str | None:
        """Mask and persist this tenant's input for ``window_start``; returns the round id (None: retry later).

        ``table_of(conn)`` reads the bounded table inside the seal transaction; None: an empty
        window (zeros). Raises ``BudgetExceeded`` / ``OwnLossCapExceeded`` when the ledger or
        the cap refuses (nothing is persisted then).
        """
        if schema.aggregation_mode != SECURE:
            raise SecAggClientError(f"cohort schema {schema.version} is not in secure mode")
        prepared = self.prepare(window_start, schema)
        if prepared is None:
            return None
        key = ROUND_PREFIX + str(window_start)
        plan = prepared.plan
        with self._store.transaction() as conn:
            advisory_lock(conn, LOCK_LEDGER)  # one spender at a time, as on the local release path
            if CollectorStore.get_setting(conn, key) is not None:
                return None  # another process (or the empty-window path) already submitted
            win = conn.execute(select(Window.state).where(Window.window_start == window_start)).scalar_one_or_none()
            if win == WINDOW_SEALED:
                return None
            empty = table_of is None or win is None
            table = np.zeros(schema.size, dtype=np.int64) if empty else table_of(conn)  # type: ignore[misc]
            cohort_rho = 0.0 if empty else plan.cohort_loss.rho
            own_rho = 0.0 if empty else plan.own_worst_case_loss.rho
            if not empty:
                # The verified, chained ledger with its clock high-water mark (the local path's ledger).
                load_ledger(conn, policy(conn, now)).check(_utc(now), cohort_rho)
                CollectorStore.raise_clock_high_water(conn, now)
                cap = self.config.own_worst_case_rho_cap
                if cap is not None and _own_rho_total(conn) + own_rho > cap:
                    raise OwnLossCapExceeded(
                        f"own worst-case rho would reach {_own_rho_total(conn) + own_rho:.4g}, over the cap {cap}"
                    )
            clipped = np.clip(table, -MAX_CELL_COUNT, MAX_CELL_COUNT) * plan.scale_factor
            client = ClientRound(prepared.ctx, self.tenant_id, self._private, plan, pair_secrets=self._pair_secrets)
            msg = client.submit(clipped, noise_share=self.noise_pool.take(window_start, plan, schema.size))
            release_key = f"secagg/{self.tenant_id}/{window_start}/{prepared.round_id}"
            state = {
                "round_id": prepared.round_id, "window_start": window_start, "state": SUBMITTED,
                "client": _b64(client.to_bytes()), "masked_input": _b64(msg.to_bytes()),
                "cohort_rho": cohort_rho, "cohort_epsilon": 0.0 if empty else plan.cohort_loss.epsilon,
                "own_rho": own_rho, "own_epsilon": 0.0 if empty else plan.own_worst_case_loss.epsilon,
                "empty": empty, "response": None, "sealed_at": now,
            }
            CollectorStore.put_setting(conn, key, json.dumps(state, sort_keys=True))
            if not empty:
                CollectorStore.append_spend(conn, now, cohort_rho, release_key)
                CollectorStore.append_audit(conn, _iso(now), self.tenant_id, "budget.spend", {
                    "release_key": release_key, "window_start": window_start, "mode": "secure",
                    "round_id": prepared.round_id, "rho": cohort_rho, "epsilon": plan.cohort_loss.epsilon,
                    "delta": plan.cohort_loss.delta, "own_worst_case_rho": own_rho,
                    "own_worst_case_epsilon": plan.own_worst_case_loss.epsilon,
                    "sigma_central": plan.sigma_central, "sigma_share": plan.sigma_share,
                    "scale_factor": plan.scale_factor, "threshold": prepared.ctx.threshold,
                    "roster_size": len(prepared.ctx.roster), "schema_version": schema.version,
                })
            if win is not None:
                WindowBook.set_state(conn, window_start, WINDOW_SEALED, release_key=release_key, withheld_reason=None)
                WindowBook.forget_contributions(conn, window_start)
            CollectorStore.add_counters(conn, {"secagg_inputs": 1})
        # The next window's share, drawn now in the background: off that round's critical path.
        self.noise_pool.prefetch(window_start + schema.window_seconds, plan, schema.size)
        self._advance(window_start)
        return prepared.round_id

    def seal_window(self, window_start: int, schema: SignalSchema, now: float,
                    policy: Callable[[Connection, float], BudgetPolicy]) -> Any:
        """The sealer's hook (``tenant_agent.release``): seal one due window with events in secure mode.

        Returns a ``WindowOutcome`` (sealed or withheld), or None when the round is not
        reachable yet (the window stays open and is retried on the next close).
        """
        from tenant_agent.release import SEALED, WITHHELD, WindowOutcome

        if self.unavailable:
            return LOCAL_FALLBACK
        with self._store.engine.connect() as conn:
            win = conn.execute(select(Window.window_start, Window.window_end, Window.state)
                               .where(Window.window_start == window_start)).one_or_none()
        if win is None or win.state == WINDOW_SEALED:
            return None
        try:
            rid = self.seal(window_start, schema, now, policy, lambda conn: WindowBook.bounded_table(conn, window_start, schema))
        except NotInRound as exc:
            with self._store.transaction() as conn:
                CollectorStore.append_audit(conn, _iso(now), self.tenant_id, "secagg.window.missed", {
                    "window_start": win.window_start, "window_end": win.window_end, "reason": str(exc)})
                WindowBook.set_state(conn, window_start, WINDOW_SEALED, release_key=f"secagg-missed/{window_start}",
                                     withheld_reason=None)
                WindowBook.forget_contributions(conn, window_start)
            log.warning("window %s not released: %s", window_start, exc)
            return None
        except (RosterRejected, SecAggError) as exc:
            # A round this tenant does not accept (bad roster, wrong noise, low threshold): never
            # submit to it; the window stays open and the refusal is on the local audit log.
            with self._store.transaction() as conn:
                CollectorStore.append_audit(conn, _iso(now), self.tenant_id, "secagg.round.refused", {
                    "window_start": win.window_start, "reason": f"{type(exc).__name__}: {exc}"})
            log.error("window %s: refused the server's round: %s", window_start, exc)
            return None
        except (BudgetExceeded, OwnLossCapExceeded) as exc:
            reason = str(exc)
            with self._store.transaction() as conn:
                if win.state != WINDOW_WITHHELD:
                    CollectorStore.append_audit(conn, _iso(now), self.tenant_id, "release.withheld", {
                        "window_start": win.window_start, "window_end": win.window_end, "mode": "secure",
                        "reason": reason})
                WindowBook.set_state(conn, window_start, WINDOW_WITHHELD, withheld_reason=reason)
                CollectorStore.add_counters(conn, {"releases_withheld": 1})
            return WindowOutcome(win.window_start, win.window_end, WITHHELD, reason=reason)
        if rid is None:
            if self.unavailable:
                log.warning("the server does not serve secure aggregation: window %s is released in local mode "
                            "(the schema's noise on this tenant's own table)", window_start)
                return LOCAL_FALLBACK
            return None
        state = self._load(window_start) or {}
        return WindowOutcome(win.window_start, win.window_end, SEALED, release_key=f"secagg/{rid}",
                             rho=float(state.get("cohort_rho", 0.0)), epsilon=float(state.get("cohort_epsilon", 0.0)))

    def cover_empty_windows(self, now: float, schema: SignalSchema, policy: Callable[[Connection, float], BudgetPolicy],
                            grace: float = 0.0) -> list[int]:
        """Submit empty inputs for due windows this collector was online for and has no window row of."""
        if self.unavailable:
            return []
        w = schema.window_seconds
        with self._store.transaction() as conn:
            since_text = CollectorStore.get_setting(conn, ONLINE_SINCE_SETTING)
            if since_text is None:
                CollectorStore.put_setting(conn, ONLINE_SINCE_SETTING, repr(float(now)))
                since = now
            else:
                since = float(since_text)
        last_due = math.floor((now - grace) / w) * w - w  # the newest window that ended >= grace ago
        first = max(math.floor(since / w) * w, last_due - (EMPTY_WINDOW_BACKFILL - 1) * w)
        covered = []
        for start in range(int(first), int(last_due) + 1, w):
            with self._store.engine.connect() as conn:
                if CollectorStore.get_setting(conn, ROUND_PREFIX + str(start)) is not None:
                    continue
                if conn.execute(select(Window.state).where(Window.window_start == start)).scalar_one_or_none():
                    continue  # a window with events: the sealer submits it
            try:
                if self.seal(start, schema, now, policy, None) is not None:
                    covered.append(start)
            except NotInRound:
                continue  # the round started without this tenant: nothing to cover
        return covered

    # -- after submitting -------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        with self._store.engine.connect() as conn:
            rows = conn.execute(select(Setting.name, Setting.value).where(Setting.name.like(ROUND_PREFIX + "%"))).all()
        states = [json.loads(v) for _, v in rows]
        return sorted((s for s in states if s["state"] not in FINAL_STATES), key=lambda s: s["window_start"])

    def advance_all(self) -> dict[int, str]:
        """Move every unfinished round on as far as the server allows now; window start -> state."""
        return {s["window_start"]: self._advance(s["window_start"]) for s in self.pending()}

    def _save(self, state: dict[str, Any]) -> None:
        with self._store.transaction() as conn:
            CollectorStore.put_setting(conn, ROUND_PREFIX + str(state["window_start"]), json.dumps(state, sort_keys=True))

    def _load(self, window_start: int) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            text = CollectorStore.get_setting(conn, ROUND_PREFIX + str(window_start))
        return None if text is None else dict(json.loads(text))

    def _finish(self, state: dict[str, Any], final: str, why: str) -> str:
        state["state"] = final
        state["note"] = why
        with self._store.transaction() as conn:
            CollectorStore.put_setting(conn, ROUND_PREFIX + str(state["window_start"]), json.dumps(state, sort_keys=True))
            CollectorStore.append_audit(conn, _iso(to_unix(self._clock())), self.tenant_id, f"secagg.round.{final}",
                                        {"round_id": state["round_id"], "window_start": state["window_start"],
                                         "reason": why})
        log.info("secure round %s (window %s): %s (%s)", state["round_id"], state["window_start"], final, why)
        return final

    def _advance(self, window_start: int) -> str:
        state = self._load(window_start)
        if state is None:
            return "unknown"
        if state["state"] in FINAL_STATES:
            return str(state["state"])
        stub = self._stub()
        if stub is None:
            return str(state["state"])
        rid = state["round_id"]
        try:
            if state["state"] == SUBMITTED:
                stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
                    round_id=rid, masked_input=_unb64(state["masked_input"])), timeout=self._timeout)
                state["state"] = ACKED
                self._save(state)
            if state["state"] == ACKED and not self._unmask(stub, state):
                return str(state["state"])
            if state["state"] == ANSWERED:
                stub.SubmitUnmaskResponse(secagg_pb2.SubmitUnmaskResponseRequest(
                    round_id=rid, unmask_response=_unb64(state["response"])), timeout=self._timeout)
                return self._finish(state, DONE, "unmask response acknowledged")
        except (SecAggError, RosterRejected) as exc:
            # The server showed something an honest round never shows: never answer it.
            return self._finish(state, REFUSED, f"{type(exc).__name__}: {exc}")
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED,) and "dropout" in (exc.details() or ""):
                return self._finish(state, DROPPED, exc.details() or "late")
            if code is grpc.StatusCode.ABORTED and "aborted" in (exc.details() or ""):
                return self._finish(state, ABORTED, exc.details() or "aborted")
            if code is grpc.StatusCode.PERMISSION_DENIED and "not a survivor" in (exc.details() or ""):
                return self._finish(state, DROPPED, exc.details() or "not a survivor")
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                # The server will never accept these stored bytes (e.g. a message of the release
                # before an upgrade): resending them every pass would never end. A dropout of this round.
                return self._finish(state, DROPPED, f"the server refused this tenant's {state['state']} round "
                                                    f"message as malformed: {exc.details()}")
            if code is grpc.StatusCode.DEADLINE_EXCEEDED and state["state"] == ANSWERED and \
                    "already released" in (exc.details() or ""):
                return self._finish(state, DONE, "round released")
            log.info("secure round %s: %s (%s); retrying later", rid, code, exc.details())
        return str(state["state"])

    def _prepared(self, state: dict[str, Any]) -> tuple[ClientRound, RosterVerifier] | None:
        prepared = self._rounds.get(state["round_id"])
        client = ClientRound.from_bytes(_unb64(state["client"]), self._private, pair_secrets=self._pair_secrets)
        if prepared is None:
            # After a restart: re-fetch and re-verify the roster of the stored context.
            stub = self._stub()
            if stub is None:
                return None
            ctx = client.ctx
            info = stub.GetRound(secagg_pb2.GetRoundRequest(window_start=ctx.window_start,
                                                            schema_version=ctx.schema_version, omit_roster=True),
                                 timeout=self._timeout)
            if bytes(info.context) != ctx.to_bytes():
                raise RosterRejected("the server now shows another context for a round this tenant submitted to")
            verifier = self.verifier()
            if not all(verifier.knows(e) for e in ctx.roster):
                for entry in stub.GetRoster(secagg_pb2.GetRosterRequest(), timeout=self._timeout).entries:
                    if any(e.tenant_id == entry.tenant_id for e in ctx.roster):
                        verifier.verify(entry)
            if not all(verifier.knows(e) for e in ctx.roster):
                raise RosterRejected("round context lists keys that are not the signed roster's")
            return client, verifier
        return client, prepared.verifier

    def _unmask(self, stub: secagg_pb2_grpc.SecureAggregationServiceStub, state: dict[str, Any]) -> bool:
        rid = state["round_id"]
        attested = bool(state.get("attested"))
        view = stub.GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid, omit_attestations=not attested),
                                     timeout=self._timeout)
        if view.phase == secagg_pb2.COLLECTING:
            return False
        if view.phase == secagg_pb2.DONE and not view.unmask_request:
            self._finish(state, DONE, "round released without this tenant's answer")
            return False
        got = self._prepared(state)
        if got is None:
            return False
        client, verifier = got
        request = UnmaskRequest.from_bytes(bytes(view.unmask_request), client.ctx)
        atts = relayed_attestations(client.ctx, bytes(view.attestations))
        if not state.get("attested"):
            # Commit to this survivor set (persisted before the signature leaves): an honest tenant
            # attests one set per round, so a server cannot gather t attestations of two sets.
            digest = client.attest(request)
            state["client"] = _b64(client.to_bytes())
            state["attested"] = True
            self._save(state)
        else:
            digest = client.attest(request)  # the same set again (InconsistentSurvivors otherwise)
        if not state.get("attestation_stored") and len(atts) < client.ctx.threshold:
            mine = Attestation(self.tenant_id, digest, self._sign(ATTESTATION_DOMAIN + digest))
            relayed = b""
            try:
                relayed = stub.SubmitAttestation(secagg_pb2.SubmitAttestationRequest(
                    round_id=rid, attestation=mine.to_bytes()), timeout=self._timeout).attestations
            except grpc.RpcError as exc:
                # ALREADY_EXISTS: sent before a restart and already counted (an ECDSA signature is
                # randomised, so the bytes of a second one differ).
                if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:
                    raise
            # Stored: later passes only fetch the attestations (the relay names no signer until t are in).
            state["attestation_stored"] = True
            self._save(state)
            if not relayed:  # fewer than t attested yet: ask again for them
                relayed = stub.GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid, omit_request=True),
                                                timeout=self._timeout).attestations
            atts = relayed_attestations(client.ctx, bytes(relayed))
        if len(atts) < client.ctx.threshold:
            return False  # wait for more survivors to attest
        # InconsistentSurvivors and friends propagate: an equivocating server is never answered.
        response = client.unmask(request, atts, verifier.verify_attestation)
        state["client"] = _b64(client.to_bytes())
        state["response"] = _b64(response.to_bytes())
        state["state"] = ANSWERED
        self._save(state)
        return True

    # -- budget --------------------------------------------------------------------------------------

    def loss_summary(self) -> LossSummary:
        with self._store.engine.connect() as conn:
            rows = conn.execute(select(Setting.value).where(Setting.name.like(ROUND_PREFIX + "%"))).scalars().all()
        states = [json.loads(v) for v in rows]
        released = [s for s in states if not s.get("empty")]
        return LossSummary(
            releases=len(released),
            cohort_rho=sum(float(s["cohort_rho"]) for s in released),
            own_worst_case_rho=sum(float(s["own_rho"]) for s in released),
            own_worst_case_rho_cap=self.config.own_worst_case_rho_cap,
            rounds_done=sum(s["state"] == DONE for s in states),
            rounds_dropped=sum(s["state"] == DROPPED for s in states),
            rounds_aborted=sum(s["state"] == ABORTED for s in states),
        )


def relayed_attestations(ctx: RoundContext, data: bytes) -> list[Attestation]:
    """The attestations the server relayed (canonical RelayedAttestations bytes; b"": none yet)."""
    return list(RelayedAttestations.from_bytes(data).attestations(ctx)) if data else []


def _own_rho_total(conn: Connection) -> float:
    rows = conn.execute(select(Setting.value).where(Setting.name.like(ROUND_PREFIX + "%"))).scalars().all()
    return sum(float(json.loads(v).get("own_rho", 0.0)) for v in rows)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _iso(ts: float) -> str:
    return _utc(ts).isoformat()


def is_secure(schema: SignalSchema) -> bool:
    return schema.aggregation_mode == SECURE and schema.noise_scale > 0


__all__: Sequence[str] = (
    "LossSummary",
    "NotInRound",
    "OwnLossCapExceeded",
    "RosterRejected",
    "RosterVerifier",
    "SecAggClientError",
    "SecAggConfig",
    "SecureRelease",
    "is_secure",
    "load_or_create_masking_key",
    "roster_statement",
)
