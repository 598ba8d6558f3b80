"""The tenant's side of a round: submit once, then unmask at most one attested survivor set.

Phases (Bonawitz et al. 2017, with keys advertised once in the roster):

    NEW --submit(table)--> SUBMITTED --unmask(request, attestations)--> UNMASKED

``submit`` masks the table and deals the shares of its self-mask seed;
``attest`` commits to one survivor set and returns the digest to sign;
``unmask`` checks the survivor set (consistency, Bonawitz et al.'s malicious
variant), then answers with shares of surviving neighbours' seeds and the
per-round mask keys shared with dropped neighbours, never both for one peer.
The state worth keeping across a restart is small and secret-free (round
context, tenant id, phase, the survivor-set digest attested or answered): ``to_bytes()``;
persist it *before* sending what ``submit``/``unmask`` returned. The
private key stays in the collector's key store and is handed back to
``from_bytes``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, MutableMapping

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from aggregation.secagg import arithmetic, crypto, graph, shamir
from aggregation.secagg._codec import Reader, Writer
from aggregation.secagg.context import RoundContext, survivor_set_digest
from aggregation.secagg.errors import (
    DuplicateInput,
    InconsistentSurvivors,
    InvalidRoundParams,
    MalformedMessage,
    ReplayedMessage,
    RoundAborted,
    SecAggError,
    UnknownParticipant,
    WrongPhase,
    WrongRound,
)
from aggregation.secagg.messages import (
    DIGEST_BYTES,
    SHARE_NONCE,
    Attestation,
    EncryptedShare,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
from aggregation.secagg.noise import NoisePlan

#: verify(tenant_id, digest, signature) -> bool: checks a survivor's signature with its enrolled identity key.
Verifier = Callable[[str, bytes, bytes], bool]
RandomBytes = Callable[[int], bytes]

_SHARE_AD = b"fedsignal/secagg/v1/share"
_STATE_MAGIC = b"FSS1"


def share_associated_data(ctx: RoundContext, sender: str, recipient: str) -> bytes:
    """AEAD associated data of a share: the round's digest, sender and recipient."""
    parts = [ctx.digest(), sender.encode("utf-8"), recipient.encode("utf-8")]
    return _SHARE_AD + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def pair_sign(me: str, peer: str) -> bool:
    """True when ``me`` adds +PRG(k) for this pair (ids compared as strings), False when it subtracts."""
    return me < peer


class Phase(enum.IntEnum):
    NEW = 0
    SUBMITTED = 1
    UNMASKED = 2


class ClientRound:
    """One tenant's part in one round (see the module doc).

    ``noise`` is the cohort's plan (its threshold must be the round's); it may
    be ``None`` only for a round restored after submitting. ``rng(n)`` returns
    n secret random bytes (default ``os.urandom``); tests pass a seeded source.
    ``verify`` checks attestations; it may also be passed to ``unmask``.
    """

    def __init__(
        self,
        ctx: RoundContext,
        tenant_id: str,
        private_key: bytes,
        noise: NoisePlan | None,
        *,
        rng: RandomBytes | None = None,
        verify: Verifier | None = None,
        pair_secrets: MutableMapping[bytes, bytes] | None = None,
    ) -> None:
        ctx.index_of(tenant_id)
        self._private = crypto.load_private_key(private_key)
        if crypto.public_key_of(private_key) != ctx.public_key_of(tenant_id):
            raise InvalidRoundParams(f"the private key does not match {tenant_id!r}'s roster public key")
        if noise is not None and (noise.threshold != ctx.threshold or noise.roster_size != len(ctx.roster)):
            raise InvalidRoundParams(
                f"noise plan is calibrated for threshold {noise.threshold} of {noise.roster_size}, "
                f"the round has threshold {ctx.threshold} of {len(ctx.roster)}"
            )
        self.ctx = ctx
        self.tenant_id = tenant_id
        self._noise = noise
        self._rng: RandomBytes = rng if rng is not None else os.urandom
        self._verify = verify
        # The HKDF-Extract of each X25519 agreement, by both public keys (memory only; recomputed
        # after a restart). The masking keys are long-term, so a caller that keeps one mapping
        # across rounds (``pair_secrets``) computes each agreement once; per-round keys are the
        # HKDF-Expand of it.
        self._secrets: MutableMapping[bytes, bytes] = pair_secrets if pair_secrets is not None else {}
        # This round's pairwise keys by (peer, purpose), memory only (never in ``to_bytes``).
        self._round_keys: dict[tuple[str, bytes], bytes] = {}
        self._own_public = ctx.public_key_of(tenant_id)
        self.phase = Phase.NEW
        self.committed_digest: bytes | None = None
        #: This tenant's own noise share, in memory after ``submit`` (never persisted or sent).
        self.noise_share: npt.NDArray[np.int64] | None = None

    # -- persistence -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer(_STATE_MAGIC)
        w.blob(self.ctx.to_bytes())
        w.text(self.tenant_id)
        w.u8(int(self.phase))
        w.blob(self.committed_digest or b"")
        return w.getvalue()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        private_key: bytes,
        *,
        verify: Verifier | None = None,
        rng: RandomBytes | None = None,
        pair_secrets: MutableMapping[bytes, bytes] | None = None,
    ) -> ClientRound:
        r = Reader(data, _STATE_MAGIC, "ClientRound state")
        ctx = RoundContext.from_bytes(r.blob("context", len(data)))
        tenant_id = r.text("tenant_id")
        phase_value = r.u8("phase")
        digest = r.blob("committed_digest", DIGEST_BYTES)
        r.done()
        try:
            phase = Phase(phase_value)
        except ValueError:
            raise MalformedMessage(f"ClientRound state: unknown phase {phase_value}") from None
        if len(digest) not in (0, DIGEST_BYTES) or (phase is Phase.UNMASKED and not digest):
            raise MalformedMessage("ClientRound state: committed digest does not match the phase")
        if phase is Phase.NEW:
            raise MalformedMessage("ClientRound state: a round that has not submitted has nothing to restore")
        round_ = cls(ctx, tenant_id, private_key, None, rng=rng, verify=verify, pair_secrets=pair_secrets)
        round_.phase = phase
        round_.committed_digest = digest or None
        return round_

    # -- phase 2: masked input -----------------------------------------------------------------

    def submit(
        self, table: npt.NDArray[np.integer], *, noise_share: npt.NDArray[np.int64] | None = None
    ) -> MaskedInput:
        """Mask ``table`` (int, length ``ctx.length``, already multiplied by the plan's scale_factor).

        ``noise_share`` is this round's noise share drawn ahead of time by
        ``NoisePlan.sample_share(ctx.length)`` (the share does not depend on the
        data, so a collector draws it when the window opens, off the round's
        critical path; it must be used for one round only and kept in memory
        only). Without it the share is drawn here.
        """
        if self.phase is not Phase.NEW:
            raise WrongPhase(f"{self.tenant_id!r} already submitted to round {self.ctx.round_id!r}")
        if self._noise is None:
            raise WrongPhase("a restored round cannot submit: it has no noise plan")
        values = np.asarray(table)
        if values.ndim != 1 or values.shape[0] != self.ctx.length:
            raise InvalidRoundParams(f"table must be one-dimensional of length {self.ctx.length}, got {values.shape}")
        if not np.issubdtype(values.dtype, np.integer):
            raise InvalidRoundParams(f"table must hold integers, got {values.dtype}")
        ctx, me, bits = self.ctx, self.tenant_id, self.ctx.modulus_bits
        if noise_share is None:
            noise = self._noise.sample_share(ctx.length)
        else:
            noise = np.asarray(noise_share)
            if noise.shape != (ctx.length,) or noise.dtype != np.int64:
                raise InvalidRoundParams(f"noise share must be int64 of length {ctx.length}, got {noise.dtype} {noise.shape}")
        words = arithmetic.encode(values.astype(np.int64) + noise, bits)

        seed = crypto.draw_seed(self._rng)
        words += crypto.prg_words(crypto.self_mask_key(seed, ctx, me), ctx.length, bits)

        peers = sorted(graph.neighbours(ctx)[me])
        plus = [self._pair_key(p, crypto.PURPOSE_MASK) for p in peers if pair_sign(me, p)]
        minus = [self._pair_key(p, crypto.PURPOSE_MASK) for p in peers if not pair_sign(me, p)]
        words += crypto.prg_sum(plus, ctx.length, bits)
        words -= crypto.prg_sum(minus, ctx.length, bits)

        # Pseudorandom secret sharing: t - 1 holders (this tenant among them) derive their shares
        # from their pairwise secret with it; those points and the seed fix the polynomial, and
        # only the other holders' shares are sent.
        derived = sorted(graph.derived_holders(ctx, me))
        sent = graph.sent_holders(ctx, me)
        ys = shamir.complete(
            int.from_bytes(seed, "big"),
            [(ctx.index_of(h) + 1, self._derived_share(me, h)) for h in derived],
            [ctx.index_of(h) + 1 for h in sent],
        )
        shares = []
        for holder, y in zip(sent, ys, strict=True):
            aead = AESGCMSIV(self._pair_key(holder, crypto.PURPOSE_SHARE))
            ct = aead.encrypt(SHARE_NONCE, y.to_bytes(shamir.ELEMENT_BYTES, "big"),
                              share_associated_data(ctx, me, holder))
            shares.append(EncryptedShare(sender=me, recipient=holder, ciphertext=ct))

        words = arithmetic.reduce(words, bits)
        self.noise_share = noise
        self.phase = Phase.SUBMITTED
        return MaskedInput(
            context_digest=ctx.digest(),
            sender=me,
            modulus_bits=bits,
            masked=arithmetic.pack(words, bits),
            seed_commitment=crypto.seed_commitment(seed, ctx, me),
            shares=tuple(shares),
            roster=ctx.tenant_ids,
        )

    def _derived_share(self, owner: str, holder: str) -> int:
        """``holder``'s derived share of ``owner``'s seed (one of them is this tenant): both ends
        compute it from their pairwise secret, bound to the round and to the owner."""
        peer = holder if owner == self.tenant_id else owner
        return crypto.derived_element(self._pair_key(peer, crypto.PURPOSE_DERIVED_SHARE + owner.encode("utf-8")))

    def _pair_key(self, peer: str, purpose: bytes) -> bytes:
        found = self._round_keys.get((peer, purpose))
        if found is not None:  # the share key of a holder, derived at submit, again at unmask
            return found
        public = self.ctx.public_key_of(peer)
        # The cache key binds both public keys: a mapping handed to the ClientRound of another
        # own key (a rotated masking key) can never return a stale agreement. It keeps the
        # agreement's HKDF-Extract (round-independent); each round pays one HMAC per key.
        cache_key = self._own_public + public
        prk = self._secrets.get(cache_key)
        if prk is None:
            prk = crypto.pair_prk(crypto.pairwise_secret(self._private, public))
            self._secrets[cache_key] = prk
        key = crypto.expand_pair_key(prk, self.ctx, self.tenant_id, peer, purpose)
        self._round_keys[(peer, purpose)] = key
        return key

    # -- phase 3: consistency --------------------------------------------------------------------

    def survivors_digest(self, request: UnmaskRequest) -> bytes:
        """The digest of ``request``'s survivor set (checks the request's round, recipient and set first)."""
        self._check_request_header(request)
        return survivor_set_digest(self.ctx, request.survivors)

    def attest(self, request: UnmaskRequest) -> bytes:
        """Commit to ``request``'s survivor set and return the digest to sign (with the identity key, outside the kernel).

        An honest tenant attests one survivor set per round, and unmasks only
        for that set: otherwise a server could collect threshold attestations
        for two different sets from the same honest tenants. The commitment is
        part of the persisted state; persist it before sending the signature.
        """
        if self.phase is Phase.NEW:
            raise WrongPhase(f"{self.tenant_id!r} has not submitted to round {self.ctx.round_id!r}")
        digest = self.survivors_digest(request)
        if self.committed_digest is not None and self.committed_digest != digest:
            raise InconsistentSurvivors("this tenant already attested a different survivor set")
        self.committed_digest = digest
        return digest

    def check_consistency(
        self, request: UnmaskRequest, attestations: Iterable[Attestation], verify: Verifier | None = None
    ) -> frozenset[str]:
        """The survivors that validly attested the request's set; ``InconsistentSurvivors`` unless >= threshold.

        Any attestation from outside S, twice from one tenant, over another
        set, or with a signature ``verify`` rejects aborts (Bonawitz et al.
        2017, round 4: one bad signature is proof the server equivocated or
        relayed garbage).
        """
        return self._check_consistency(request, self.survivors_digest(request), attestations, verify)

    def _check_consistency(
        self, request: UnmaskRequest, digest: bytes, attestations: Iterable[Attestation], verify: Verifier | None
    ) -> frozenset[str]:
        verifier = verify if verify is not None else self._verify
        if verifier is None:
            raise SecAggError("no attestation verifier: pass verify= to ClientRound or unmask")
        survivors = frozenset(request.survivors)
        attested: set[str] = set()
        for att in attestations:
            if att.tenant_id not in survivors:
                raise InconsistentSurvivors(f"attestation from {att.tenant_id!r}, who is not a survivor")
            if att.tenant_id in attested:
                raise InconsistentSurvivors(f"two attestations from {att.tenant_id!r}")
            if att.digest != digest:
                raise InconsistentSurvivors(f"{att.tenant_id!r} attested a different survivor set")
            if not verifier(att.tenant_id, digest, att.signature):
                raise InconsistentSurvivors(f"{att.tenant_id!r}'s attestation signature does not verify")
            attested.add(att.tenant_id)
        if len(attested) < self.ctx.threshold:
            raise InconsistentSurvivors(
                f"only {len(attested)} survivors attested the set, {self.ctx.threshold} required"
            )
        return frozenset(attested)

    def _check_request_header(self, request: UnmaskRequest) -> None:
        if request.context_digest != self.ctx.digest():
            raise WrongRound("unmask request belongs to another cohort, schema version, window or round")
        if request.recipient != self.tenant_id:
            raise WrongRound(f"unmask request is addressed to {request.recipient!r}, not {self.tenant_id!r}")
        for tid in request.survivors:
            self.ctx.index_of(tid)
        if self.tenant_id not in request.survivors:
            raise InconsistentSurvivors(f"{self.tenant_id!r} is not in the survivor set it is asked to unmask for")
        if len(request.survivors) < self.ctx.threshold:
            raise RoundAborted(
                f"{len(request.survivors)} survivors, fewer than the threshold {self.ctx.threshold}: not unmasking"
            )

    # -- phase 4: unmask -------------------------------------------------------------------------

    def unmask(
        self, request: UnmaskRequest, attestations: Iterable[Attestation], verify: Verifier | None = None
    ) -> UnmaskResponse:
        """Answer an attested survivor set (see the module doc); refuses everything else with a specific error."""
        if self.phase is Phase.NEW:
            raise WrongPhase(f"{self.tenant_id!r} has not submitted to round {self.ctx.round_id!r}")
        self._check_request_header(request)
        digest = survivor_set_digest(self.ctx, request.survivors)
        if self.committed_digest is not None and self.committed_digest != digest:
            raise InconsistentSurvivors("this tenant already attested or unmasked for a different survivor set")
        self._check_consistency(request, digest, attestations, verify)

        ctx, me = self.ctx, self.tenant_id
        survivors = frozenset(request.survivors)
        mine = graph.neighbours(ctx)[me]
        owners = (mine | {me}) & survivors  # the surviving seeds this tenant holds a share of
        derived = {u for u in owners if me in graph.derived_holders(ctx, u)}
        expected = owners - derived
        by_sender: dict[str, EncryptedShare] = {}
        for share in request.shares:
            if share.recipient != me:
                raise WrongRound(f"share addressed to {share.recipient!r} in {me!r}'s request")
            if share.sender not in mine and share.sender != me:
                raise UnknownParticipant(f"share from {share.sender!r}, who is not a neighbour of {me!r}")
            if share.sender not in survivors:
                raise InconsistentSurvivors(
                    f"{share.sender!r} is dropped but its share is offered: a peer in both roles"
                )
            if share.sender in derived:
                raise UnknownParticipant(
                    f"share from {share.sender!r}: {me!r} derives its share of that seed, it is never sent"
                )
            if share.sender in by_sender:
                raise DuplicateInput(f"two shares from {share.sender!r}")
            by_sender[share.sender] = share
        missing = expected - by_sender.keys()
        if missing:
            raise InconsistentSurvivors(f"survivors {sorted(missing)} are listed but their shares are missing")

        seed_shares = []
        for sender in sorted(by_sender):
            share = by_sender[sender]
            aead = AESGCMSIV(self._pair_key(sender, crypto.PURPOSE_SHARE))
            try:
                plain = aead.decrypt(SHARE_NONCE, share.ciphertext, share_associated_data(ctx, sender, me))
            except InvalidTag:
                raise ReplayedMessage(
                    f"share from {sender!r} does not decrypt for this round and recipient (replayed or forged)"
                ) from None
            seed_shares.append((ctx.index_of(sender), int.from_bytes(plain, "big")))
        seed_shares.extend((ctx.index_of(owner), self._derived_share(owner, me)) for owner in derived)
        seed_shares.sort()
        dropped = sorted(mine - survivors)
        pair_keys = [(ctx.index_of(peer), self._pair_key(peer, crypto.PURPOSE_MASK)) for peer in dropped]
        # By construction owners are survivors and peers are not; the invariant is what makes the
        # response safe, so it is checked, not assumed.
        if {o for o, _ in seed_shares} & {p for p, _ in pair_keys}:
            raise InconsistentSurvivors("a peer would receive both a seed share and a pairwise key")
        self.committed_digest = digest
        self.phase = Phase.UNMASKED
        return UnmaskResponse(
            context_digest=ctx.digest(),
            sender=me,
            survivors_digest=digest,
            seed_shares=tuple(seed_shares),
            pair_keys=tuple(pair_keys),
        )
