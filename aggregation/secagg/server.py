"""The server's side of a round: collect, fix the survivors, relay, unmask the sum.

Phases:

    COLLECTING --close()--> UNMASKING --result()--> DONE
                  \\--(fewer than t inputs)--> ABORTED

The server holds only the running sum of masked vectors, the encrypted
shares it relays and the unmask responses; ``result()`` is the sum of the
survivors' tables and noise shares and nothing else. Storage and transport
belong to the integrator; rebuilding a round after a restart is replaying
the stored messages into a new ``ServerRound`` (every method is a pure
function of the messages, in any order within a phase).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from aggregation.secagg import arithmetic, crypto, graph, shamir
from aggregation.secagg.client import Verifier, pair_sign
from aggregation.secagg.context import RoundContext, survivor_set_digest
from aggregation.secagg.errors import (
    CorruptShares,
    DuplicateInput,
    InconsistentSurvivors,
    InsufficientShares,
    MalformedMessage,
    RoundAborted,
    UnknownParticipant,
    WrongPhase,
    WrongRound,
)
from aggregation.secagg.messages import (
    Attestation,
    EncryptedShare,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)

#: How many alternative share subsets result() tries when a reconstructed seed fails its commitment.
MAX_RECONSTRUCTION_ATTEMPTS = 8


class ServerPhase(enum.IntEnum):
    COLLECTING = 0
    UNMASKING = 1
    DONE = 2
    ABORTED = 3


class ServerRound:
    """One round at the server (see the module doc). ``verify`` optionally checks attestations on entry."""

    def __init__(self, ctx: RoundContext, *, verify: Verifier | None = None) -> None:
        self.ctx = ctx
        self.phase = ServerPhase.COLLECTING
        self._verify = verify
        self._neighbours = graph.neighbours(ctx)
        self._sum = np.zeros(ctx.length, dtype=arithmetic.word_dtype(ctx.modulus_bits))
        self._commitments: dict[str, bytes] = {}
        self._inbox: dict[str, list[EncryptedShare]] = {tid: [] for tid in ctx.tenant_ids}
        self._survivors: frozenset[str] | None = None
        self._survivors_digest: bytes | None = None
        self._attestations: dict[str, Attestation] = {}
        self._responses: dict[str, UnmaskResponse] = {}
        self._result: npt.NDArray[np.int64] | None = None

    # -- phase 2 -------------------------------------------------------------------------------

    def add_input(self, msg: MaskedInput | bytes) -> None:
        """Accept one tenant's masked input; refuses wrong round, unknown or duplicate sender, wrong shape."""
        if isinstance(msg, bytes | bytearray | memoryview):
            msg = MaskedInput.from_bytes(bytes(msg), self.ctx)
        if self.phase is not ServerPhase.COLLECTING:
            raise WrongPhase(f"round {self.ctx.round_id!r} is closed to inputs")
        if msg.context_digest != self.ctx.digest():
            raise WrongRound(f"masked input from {msg.sender!r} belongs to another cohort, schema, window or round")
        self.ctx.index_of(msg.sender)
        if msg.sender in self._commitments:
            raise DuplicateInput(f"{msg.sender!r} already submitted to round {self.ctx.round_id!r}")
        if msg.modulus_bits != self.ctx.modulus_bits:
            raise MalformedMessage(f"masked input uses {msg.modulus_bits}-bit words, the round {self.ctx.modulus_bits}")
        vector = msg.vector()
        if vector.shape[0] != self.ctx.length:
            raise MalformedMessage(f"masked vector of {vector.shape[0]} values, the round has {self.ctx.length}")
        sent = graph.sent_holders(self.ctx, msg.sender)
        recipients = [s.recipient for s in msg.shares]
        if any(s.sender != msg.sender for s in msg.shares) or sorted(recipients) != list(sent):
            raise MalformedMessage(
                f"{msg.sender!r} must send exactly one share to each of its {len(sent)} holders that do not "
                "derive theirs"
            )
        self._sum += vector
        self._commitments[msg.sender] = msg.seed_commitment
        for share in msg.shares:
            self._inbox[share.recipient].append(share)

    def close(self) -> frozenset[str]:
        """Fix the survivor set S (the senders so far); ``RoundAborted`` if |S| < threshold."""
        if self.phase is not ServerPhase.COLLECTING:
            if self._survivors is not None:
                return self._survivors
            raise RoundAborted(f"round {self.ctx.round_id!r} was aborted")
        survivors = frozenset(self._commitments)
        if len(survivors) < self.ctx.threshold:
            self.phase = ServerPhase.ABORTED
            self._sum[:] = 0
            raise RoundAborted(
                f"round {self.ctx.round_id!r}: {len(survivors)} inputs, fewer than the threshold {self.ctx.threshold}"
            )
        self._survivors = survivors
        self._survivors_digest = survivor_set_digest(self.ctx, survivors)
        self.phase = ServerPhase.UNMASKING
        return survivors

    @property
    def survivors(self) -> frozenset[str]:
        if self._survivors is None:
            raise WrongPhase("the survivor set is fixed by close()")
        return self._survivors

    @property
    def survivors_digest(self) -> bytes:
        self.survivors  # noqa: B018 - raises before close()
        assert self._survivors_digest is not None
        return self._survivors_digest

    def unmask_request_for(self, tenant_id: str) -> UnmaskRequest:
        """S and the shares the survivors addressed to ``tenant_id`` (a survivor)."""
        survivors = self.survivors
        self.ctx.index_of(tenant_id)
        if tenant_id not in survivors:
            raise UnknownParticipant(f"{tenant_id!r} is not a survivor of round {self.ctx.round_id!r}")
        shares = tuple(sorted(self._inbox[tenant_id], key=lambda s: s.sender))
        return UnmaskRequest(self.ctx.digest(), tenant_id, tuple(sorted(survivors)), shares, roster=self.ctx.tenant_ids)

    # -- phase 3 -------------------------------------------------------------------------------

    def add_attestation(self, att: Attestation | bytes) -> None:
        """Keep a survivor's signature over S to relay; refuses outsiders, duplicates, other sets, bad signatures."""
        if isinstance(att, bytes | bytearray | memoryview):
            att = Attestation.from_bytes(bytes(att))
        if att.tenant_id not in self.survivors:
            raise UnknownParticipant(f"attestation from {att.tenant_id!r}, who is not a survivor")
        if att.tenant_id in self._attestations:
            raise DuplicateInput(f"{att.tenant_id!r} already attested")
        if att.digest != self.survivors_digest:
            raise InconsistentSurvivors(f"{att.tenant_id!r} attested a different survivor set")
        if self._verify is not None and not self._verify(att.tenant_id, att.digest, att.signature):
            raise InconsistentSurvivors(f"{att.tenant_id!r}'s attestation signature does not verify")
        self._attestations[att.tenant_id] = att

    def attestations(self, limit: int | None = None) -> tuple[Attestation, ...]:
        """The accepted attestations in tenant order; ``limit`` (e.g. the threshold) relays only the first ones.

        A client needs ``threshold`` of them, and an attestation of another set
        never gets in, so relaying t is enough and keeps the download O(t).
        """
        ordered = tuple(self._attestations[t] for t in sorted(self._attestations))
        return ordered if limit is None else ordered[:limit]

    # -- phase 4 -------------------------------------------------------------------------------

    def add_unmask(self, resp: UnmaskResponse | bytes) -> None:
        """Accept a survivor's unmask response; checks it answers S and only what that tenant may reveal."""
        if isinstance(resp, bytes | bytearray | memoryview):
            resp = UnmaskResponse.from_bytes(bytes(resp))
        survivors = self.survivors
        if resp.context_digest != self.ctx.digest():
            raise WrongRound(f"unmask response from {resp.sender!r} belongs to another round")
        self.ctx.index_of(resp.sender)
        if resp.sender not in survivors:
            raise UnknownParticipant(f"unmask response from {resp.sender!r}, who is not a survivor")
        if resp.sender in self._responses:
            raise DuplicateInput(f"{resp.sender!r} already answered")
        if resp.survivors_digest != self.survivors_digest:
            raise InconsistentSurvivors(f"{resp.sender!r} answered for a different survivor set")
        mine = self._neighbours[resp.sender]
        ids = self.ctx.tenant_ids
        if any(i >= len(ids) for i, _ in (*resp.seed_shares, *resp.pair_keys)):
            raise UnknownParticipant(f"unmask response from {resp.sender!r} names a position beyond the roster")
        owners = {ids[o] for o, _ in resp.seed_shares}
        peers = {ids[p] for p, _ in resp.pair_keys}
        if owners != (mine | {resp.sender}) & survivors or peers != mine - survivors:
            raise MalformedMessage(
                f"{resp.sender!r} must reveal exactly its surviving neighbours' shares and its dropped neighbours' keys"
            )
        self._responses[resp.sender] = resp

    def missing(self) -> tuple[list[str], list[tuple[str, str]]]:
        """(survivors whose seed lacks shares, (survivor, dropped) pairs whose mask key is missing)."""
        survivors = self.survivors
        short = [
            v
            for v in sorted(survivors)
            if sum(1 for h in graph.share_holders(self.ctx, v) if h in self._responses)
            < graph.share_threshold(self.ctx, v)
        ]
        keys = [
            (u, d)
            for d in sorted(set(self.ctx.tenant_ids) - survivors)
            for u in sorted(self._neighbours[d] & survivors)
            if u not in self._responses
        ]
        return short, keys

    def result(self) -> npt.NDArray[np.int64]:
        """The signed sum of the survivors' (scaled) tables plus their noise shares.

        ``InsufficientShares`` while some survivor's seed lacks shares or some
        survivor with a dropped neighbour has not answered; call again later.
        """
        if self._result is not None:
            return self._result.copy()
        survivors = self.survivors
        short, keys = self.missing()
        if short or keys:
            raise InsufficientShares(
                f"cannot unmask yet: seeds of {short[:5]}{'...' if len(short) > 5 else ''} lack shares; "
                f"mask keys of {keys[:5]}{'...' if len(keys) > 5 else ''} are missing"
            )
        ctx, bits = self.ctx, self.ctx.modulus_bits
        total = self._sum.copy()
        shares_of: dict[str, list[tuple[int, int]]] = {v: [] for v in survivors}
        for holder in sorted(self._responses):
            x = ctx.index_of(holder) + 1
            for owner, y in self._responses[holder].seed_shares:
                shares_of[ctx.tenant_ids[owner]].append((x, y))
        for v in sorted(survivors):
            seed = self._reconstruct(v, shares_of[v])
            total -= crypto.prg_words(crypto.self_mask_key(seed, ctx, v), ctx.length, bits)
        for holder in sorted(self._responses):
            for index, key in self._responses[holder].pair_keys:
                peer = ctx.tenant_ids[index]
                mask = crypto.prg_words(key, ctx.length, bits)
                if pair_sign(holder, peer):
                    total -= mask
                else:
                    total += mask
        self._result = arithmetic.decode(total, bits)
        self.phase = ServerPhase.DONE
        return self._result.copy()

    def _reconstruct(self, owner: str, points: Iterable[tuple[int, int]]) -> bytes:
        pts = sorted(points)
        t = graph.share_threshold(self.ctx, owner)
        for start in range(min(MAX_RECONSTRUCTION_ATTEMPTS, len(pts) - t + 1)):
            value = shamir.reconstruct(pts[start : start + t], t)
            if crypto.seed_in_field(value):
                seed = value.to_bytes(crypto.SEED_BYTES, "big")
                if crypto.seed_commitment(seed, self.ctx, owner) == self._commitments[owner]:
                    return seed
        raise CorruptShares(f"{owner!r}'s seed does not match its commitment from any share subset tried")
