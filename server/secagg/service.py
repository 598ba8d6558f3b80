"""SecureAggregationService: a thin servicer over :mod:`server.secagg.roster` and :mod:`server.secagg.rounds`.

The caller's tenant and cohort come from its client certificate
(:func:`server.identity.auth.require`); every refusal is a domain error of one kind of
:mod:`aggregation.errors`, answered through :func:`server.servicer.abort` with its own status
(see ``proto/fedsignal/v1/secagg.proto``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from fedsignal.v1 import secagg_pb2
from google.protobuf.message import DecodeError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from server.context import ServerContext
from server.db import read_connection, read_only, transaction
from server.identity.auth import Identity, require
from server.secagg import facts as facts_mod
from server.secagg import metrics as secagg_metrics
from server.secagg import modes, rounds
from server.secagg import roster as roster_mod
from server.secagg.models import ABORTED, COLLECTING, DONE, UNMASKING, RoundRecord
from server.servicer import abort

log = logging.getLogger(__name__)
SERVICE_NAME = secagg_pb2.DESCRIPTOR.services_by_name["SecureAggregationService"].full_name

_PHASES = {
    COLLECTING: secagg_pb2.COLLECTING,
    UNMASKING: secagg_pb2.UNMASKING,
    DONE: secagg_pb2.DONE,
    ABORTED: secagg_pb2.ABORTED,
}


class SecureAggregationServicer:
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx

    def _write(self) -> Any:
        """A write transaction. On SQLite, writers of this process queue on a lock first: SQLite's own
        busy handler sleeps in growing steps (up to 100 ms) while another connection holds the write
        lock, which under a burst of round messages costs far more than the work itself."""
        return write_transaction(self._ctx)

    def _tenant(self, context: grpc.ServicerContext) -> tuple[Identity, str]:
        identity = require(context, self._ctx, "tenant")
        if not identity.cohort:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"the certificate of {identity.subject!r} names no cohort")
        return identity, identity.cohort or ""

    def _run(self, context: grpc.ServicerContext, fn: Any) -> Any:
        try:
            with secagg_metrics.bound(self._ctx.metrics.registry):
                return fn()
        except (rounds.RoundError, roster_mod.RosterError) as exc:
            abort(context, exc)  # the server's one error-to-status table (server.servicer.STATUS)
        except IntegrityError:
            # Two replicas raced on one insert: the caller retries and finds the winner's row.
            context.abort(grpc.StatusCode.ABORTED, "concurrent update of the round; retry")
        except SQLAlchemyError:
            log.exception("secure-aggregation store unavailable")
            context.abort(grpc.StatusCode.UNAVAILABLE, "the round store is unavailable; retry later")

    def RegisterMaskingKey(  # noqa: N802 - gRPC method name
        self, request: secagg_pb2.RegisterMaskingKeyRequest, context: grpc.ServicerContext
    ) -> secagg_pb2.RegisterMaskingKeyResponse:
        identity, cohort = self._tenant(context)
        found: Any = context.auth_context().get("x509_pem_cert") or []
        pems = [found] if isinstance(found, bytes) else list(found)
        if not pems:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "secure aggregation needs the mutual-TLS identity issued at enrollment")

        def register() -> secagg_pb2.RegisterMaskingKeyResponse:
            with self._write() as session:
                result = roster_mod.register(session, identity.subject, cohort, bytes(request.public_key),
                                             bytes(request.signature), bytes(pems[0]), self._ctx.clock())
            outcome = {
                "registered": secagg_pb2.RegisterMaskingKeyResponse.REGISTERED,
                "unchanged": secagg_pb2.RegisterMaskingKeyResponse.UNCHANGED,
                "replaced": secagg_pb2.RegisterMaskingKeyResponse.REPLACED,
            }[result.outcome]
            return secagg_pb2.RegisterMaskingKeyResponse(outcome=outcome)

        return self._run(context, register)  # type: ignore[no-any-return]

    def GetRoster(self, request: secagg_pb2.GetRosterRequest, context: grpc.ServicerContext) -> secagg_pb2.Roster:  # noqa: N802
        _identity, cohort = self._tenant(context)
        with read_only(self._ctx.read_sessions) as session:
            entries = roster_mod.active_entries(session, cohort)
            return secagg_pb2.Roster(cohort=cohort, entries=[roster_mod.to_proto(e) for e in entries])

    def GetRound(self, request: secagg_pb2.GetRoundRequest, context: grpc.ServicerContext) -> secagg_pb2.RoundInfo:  # noqa: N802
        _identity, cohort = self._tenant(context)
        settings = rounds.settings_for(self._ctx)
        cache = facts_mod.cache_for(self._ctx.engine)

        def info(session: Any, facts: facts_mod.RoundFacts, phase: str) -> secagg_pb2.RoundInfo:
            entries = [] if request.omit_roster else rounds.roster_entries(session, facts.rctx)
            # A caller that holds this round's roster gets the context without it.
            held = bool(request.roster_digest) and bytes(request.roster_digest) == facts.rctx.roster_digest
            return secagg_pb2.RoundInfo(
                round_id=facts.round_id, context=b"" if held else facts.context,
                context_header=facts.header if held else b"",
                roster=[roster_mod.to_proto(e) for e in entries], phase=_PHASES[phase],
                submit_deadline=rounds.aware(facts.submit_deadline, self._ctx.clock()).timestamp(),
                sigma_central=facts.sigma_central, delta=facts.delta, window_end=facts.window_end,
            )

        def get() -> secagg_pb2.RoundInfo:
            window, version = int(request.window_start), int(request.schema_version)
            phase = None
            with read_connection(self._ctx.read_engine) as conn:  # the common case, read-only: the round exists
                facts = cache.for_window(cohort, window, version)
                if facts is None:
                    found = conn.execute(rounds.FACTS_OF_WINDOW,
                                         {"cohort": cohort, "window": window, "version": version}).first()
                    facts = None if found is None else cache.remember(found)
                if facts is not None:
                    phase = conn.execute(rounds.PHASE, {"pk": facts.pk, "round_id": facts.round_id}).scalar()
            if facts is not None and phase is not None:  # (a cached round whose row is gone: look again)
                if request.omit_roster:
                    return info(None, facts, phase)
                with read_only(self._ctx.read_sessions) as session:
                    return info(session, facts, phase)
            with self._write() as session:
                row = rounds.open_round(session, cohort, window, version, self._ctx.clock(), settings)
            facts = cache.remember(row)  # committed: now it may be cached
            if request.omit_roster:
                return info(None, facts, row.phase)
            with read_only(self._ctx.read_sessions) as session:
                return info(session, facts, row.phase)

        return self._run(context, get)  # type: ignore[no-any-return]

    def SubmitMaskedInput(  # noqa: N802
        self, request: secagg_pb2.SubmitMaskedInputRequest, context: grpc.ServicerContext
    ) -> secagg_pb2.SubmitMaskedInputResponse:
        identity, cohort = self._tenant(context)
        settings = rounds.settings_for(self._ctx)

        def submit() -> secagg_pb2.SubmitMaskedInputResponse:
            with self._write() as session:
                outcome = rounds.submit_input(session, identity.subject, cohort, request.round_id,
                                              bytes(request.masked_input), self._ctx.clock(), settings,
                                              facts_mod.cache_for(self._ctx.engine))
            value = (secagg_pb2.SubmitMaskedInputResponse.ACCEPTED if outcome == "accepted"
                     else secagg_pb2.SubmitMaskedInputResponse.DUPLICATE)
            return secagg_pb2.SubmitMaskedInputResponse(outcome=value)

        return self._run(context, submit)  # type: ignore[no-any-return]

    def GetUnmaskRequest(self, request: secagg_pb2.UnmaskQuery, context: grpc.ServicerContext) -> secagg_pb2.UnmaskRequestInfo:  # noqa: N802
        identity, cohort = self._tenant(context)

        def view() -> secagg_pb2.UnmaskRequestInfo:
            with read_connection(self._ctx.read_engine) as conn:
                v = rounds.unmask_view(conn, facts_mod.cache_for(self._ctx.engine), identity.subject, cohort,
                                       request.round_id,
                                       want_request=not request.omit_request,
                                       want_attestations=not request.omit_attestations)
            return secagg_pb2.UnmaskRequestInfo(phase=_PHASES[v.phase], unmask_request=v.request,
                                                attestations=v.attestations, survivors=v.survivors,
                                                threshold=v.threshold)

        return self._run(context, view)  # type: ignore[no-any-return]

    def SubmitAttestation(  # noqa: N802
        self, request: secagg_pb2.SubmitAttestationRequest, context: grpc.ServicerContext
    ) -> secagg_pb2.SubmitAttestationResponse:
        identity, cohort = self._tenant(context)

        def attest() -> secagg_pb2.SubmitAttestationResponse:
            cache = facts_mod.cache_for(self._ctx.engine)
            with self._write() as session:
                done = rounds.submit_attestation(session, identity.subject, cohort, request.round_id,
                                                 bytes(request.attestation), cache)
            relay = done.relay
            if relay is None:
                assert done.stored is not None
                cache.add_attestations(request.round_id, done.stored)  # committed now
                # Relay t once t are in (any t of the same set will do); fewer are of no use to the caller yet.
                relay = cache.relay(request.round_id, done.rctx, done.threshold, done.stored)
            return secagg_pb2.SubmitAttestationResponse(attestations=relay, threshold=done.threshold)

        return self._run(context, attest)  # type: ignore[no-any-return]

    def SubmitUnmaskResponse(  # noqa: N802
        self, request: secagg_pb2.SubmitUnmaskResponseRequest, context: grpc.ServicerContext
    ) -> secagg_pb2.SubmitUnmaskResponseResponse:
        identity, cohort = self._tenant(context)

        def answer() -> secagg_pb2.SubmitUnmaskResponseResponse:
            with self._write() as session:
                rounds.submit_response(session, identity.subject, cohort, request.round_id,
                                       bytes(request.unmask_response), self._ctx.clock(),
                                       facts_mod.cache_for(self._ctx.engine))
            return secagg_pb2.SubmitUnmaskResponseResponse()

        return self._run(context, answer)  # type: ignore[no-any-return]

    def SetAggregationMode(  # noqa: N802
        self, request: secagg_pb2.SetAggregationModeRequest, context: grpc.ServicerContext
    ) -> secagg_pb2.SetAggregationModeResponse:
        identity = require(context, self._ctx, "admin")

        def switch() -> secagg_pb2.SetAggregationModeResponse:
            with self._write() as session:
                change = modes.set_mode(session, request.cohort, request.mode, float(request.noise_scale),
                                        identity.subject, request.reason, self._ctx.clock())
            return secagg_pb2.SetAggregationModeResponse(schema_version=change.schema_version, mode=change.mode,
                                                         noise_scale=change.noise_scale, changed=change.changed)

        return self._run(context, switch)  # type: ignore[no-any-return]

    def GetRoundStatus(self, request: secagg_pb2.RoundRef, context: grpc.ServicerContext) -> secagg_pb2.RoundStatus:  # noqa: N802
        _identity, cohort = self._tenant(context)

        def status() -> secagg_pb2.RoundStatus:
            with read_connection(self._ctx.read_engine) as conn:
                row = conn.execute(rounds.STATUS, {"round_id": request.round_id}).first()
                if row is None:
                    raise rounds.RoundNotFound(f"no secure-aggregation round {request.round_id!r}")
                if row.cohort != cohort:
                    raise rounds.CrossCohort(f"round {request.round_id!r} belongs to another cohort")
                counts = conn.execute(rounds.COUNTS, {"pk": row.id}).one()
                return round_status(row, *counts)

        return self._run(context, status)  # type: ignore[no-any-return]


_SQLITE_WRITERS: dict[int, threading.Lock] = {}
_GUARD = threading.Lock()


@contextmanager
def write_transaction(ctx: ServerContext) -> Iterator[Any]:
    """:func:`server.db.transaction`, with this process's SQLite writers queued on a lock."""
    if ctx.engine.dialect.name != "sqlite":
        with transaction(ctx.sessions) as session:
            yield session
        return
    with _GUARD:
        lock = _SQLITE_WRITERS.setdefault(id(ctx.engine), threading.Lock())
    with lock, transaction(ctx.sessions) as session:
        yield session


def round_status(row: RoundRecord | Any, inputs: int, attestations: int, responses: int) -> secagg_pb2.RoundStatus:
    return secagg_pb2.RoundStatus(
        round_id=row.round_id, cohort=row.cohort, window_start=row.window_start, phase=_PHASES[row.phase],
        roster_size=row.roster_size, threshold=row.threshold, inputs=inputs,
        survivors=len(rounds.survivors_of(row)), attestations=attestations,
        responses=responses, abort_reason=row.abort_reason or "",
    )


def _raw(data: bytes) -> bytes:
    return data


def _parsed(method: Any, message: Any) -> Any:
    """Parse the request here, so malformed protobuf is INVALID_ARGUMENT (gRPC's own failure is INTERNAL)."""

    def handler(data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = message.FromString(data)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {message.__name__} message: {exc}")
        return method(request, context)

    return handler


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    servicer = SecureAggregationServicer(ctx)
    methods: dict[str, tuple[type[Any], type[Any]]] = {
        "RegisterMaskingKey": (secagg_pb2.RegisterMaskingKeyRequest, secagg_pb2.RegisterMaskingKeyResponse),
        "GetRoster": (secagg_pb2.GetRosterRequest, secagg_pb2.Roster),
        "GetRound": (secagg_pb2.GetRoundRequest, secagg_pb2.RoundInfo),
        "SubmitMaskedInput": (secagg_pb2.SubmitMaskedInputRequest, secagg_pb2.SubmitMaskedInputResponse),
        "GetUnmaskRequest": (secagg_pb2.UnmaskQuery, secagg_pb2.UnmaskRequestInfo),
        "SubmitAttestation": (secagg_pb2.SubmitAttestationRequest, secagg_pb2.SubmitAttestationResponse),
        "SubmitUnmaskResponse": (secagg_pb2.SubmitUnmaskResponseRequest, secagg_pb2.SubmitUnmaskResponseResponse),
        "GetRoundStatus": (secagg_pb2.RoundRef, secagg_pb2.RoundStatus),
        "SetAggregationMode": (secagg_pb2.SetAggregationModeRequest, secagg_pb2.SetAggregationModeResponse),
    }
    handlers: dict[str, Any] = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsed(getattr(servicer, name), req), request_deserializer=_raw, response_serializer=resp.SerializeToString
        )
        for name, (req, resp) in methods.items()
    }
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
