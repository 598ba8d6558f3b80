"""The round's messages: frozen values with one canonical byte encoding each.

``to_bytes()`` is deterministic; ``from_bytes()`` parses with every length
bounded and refuses truncated, oversize or trailing data with
``MalformedMessage``. Messages carry the digest of their round context; that
they belong to *this* round is checked by ``ClientRound``/``ServerRound``,
which know the context (``WrongRound``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from aggregation.secagg._codec import Reader, Writer
from aggregation.secagg.arithmetic import packed_size, packed_width, unpack
from aggregation.secagg.context import MAX_LENGTH, MAX_ROSTER, RoundContext
from aggregation.secagg.crypto import KEY_BYTES
from aggregation.secagg.errors import MalformedMessage, WrongRound
from aggregation.secagg.shamir import ELEMENT_BYTES, PRIME

DIGEST_BYTES = 32
#: The nonce of every share's AES-GCM-SIV seal (see EncryptedShare): fixed, never sent.
SHARE_NONCE = bytes(12)
TAG_BYTES = 16
SHARE_CIPHERTEXT_BYTES = ELEMENT_BYTES + TAG_BYTES
MAX_SIGNATURE_BYTES = 1024


def _checked(cls_name: str, build):  # type: ignore[no-untyped-def]
    try:
        return build()
    except MalformedMessage:
        raise
    except (ValueError, TypeError) as exc:
        raise MalformedMessage(f"{cls_name}: {exc}") from exc


@dataclass(frozen=True)
class EncryptedShare:
    """One Shamir share of ``sender``'s self-mask seed, AEAD-encrypted to ``recipient``.

    AES-256-GCM-SIV (RFC 8452) under the pair's per-round AEAD key with the fixed nonce
    ``SHARE_NONCE``, associated data binding the round context (cohort, schema version,
    window, round id, roster), sender and recipient. A key seals at most one share each way
    in a round, and GCM-SIV is nonce-misuse resistant: even a second, different share
    sealed under the same key and nonce (a tenant that built two masked inputs for one round)
    reveals only whether two sealed (associated data, share) pairs are equal. So no nonce
    travels: a share is its 32-byte ciphertext (16-byte element, 16-byte tag).
    """

    sender: str
    recipient: str
    ciphertext: bytes

    def __post_init__(self) -> None:
        if len(self.ciphertext) != SHARE_CIPHERTEXT_BYTES:
            raise MalformedMessage("EncryptedShare: wrong ciphertext length")
        if not self.sender or not self.recipient:
            raise MalformedMessage("EncryptedShare: empty sender or recipient")


@dataclass(frozen=True)
class MaskedInput:
    """Phase 2, tenant -> server: the masked table and the encrypted shares of the sender's seed.

    ``masked`` holds ``length`` words x + noise share + PRG(b_u) + sum of signed pairwise
    masks, mod 2^b, packed at ``packed_width(modulus_bits)`` bits each
    (``arithmetic.pack``: 3.5 bytes a value at b = 28). ``seed_commitment`` lets the
    server check a reconstructed seed. ``shares`` go to the holders that do not derive theirs
    (``graph.sent_holders``). On the wire (``FSM4``) the sender and each share's
    recipient are named by their 2-byte position in the round's sorted roster; ``roster``
    is that roster (``ctx.tenant_ids``): ``ClientRound.submit`` sets it,
    ``from_bytes(data, ctx)`` takes it from the round's context.
    """

    context_digest: bytes
    sender: str
    modulus_bits: int
    masked: bytes
    seed_commitment: bytes
    shares: tuple[EncryptedShare, ...]
    roster: tuple[str, ...] = field(default=(), compare=False, repr=False)

    MAGIC = b"FSM4"

    def __post_init__(self) -> None:
        if len(self.context_digest) != DIGEST_BYTES or len(self.seed_commitment) != DIGEST_BYTES:
            raise MalformedMessage("MaskedInput: digests must be 32 bytes")
        if not 2 <= self.modulus_bits <= 64:
            raise MalformedMessage(f"MaskedInput: modulus_bits {self.modulus_bits} out of range")
        width = packed_width(self.modulus_bits)
        count = len(self.masked) * 8 // width
        if len(self.masked) != packed_size(count, self.modulus_bits) or not 0 < count <= MAX_LENGTH:
            raise MalformedMessage(
                f"MaskedInput: masked vector of {len(self.masked)} bytes is not 1..{MAX_LENGTH} packed {width}-bit words")

    def vector(self) -> npt.NDArray[np.unsignedinteger]:
        try:
            return unpack(self.masked, self.modulus_bits)
        except ValueError as exc:
            raise MalformedMessage(f"MaskedInput: {exc}") from exc

    def to_bytes(self) -> bytes:
        if any(share.sender != self.sender for share in self.shares):
            raise MalformedMessage(f"MaskedInput: a share of another sender than {self.sender!r} cannot be encoded")
        at = _positions(self.roster, "MaskedInput")
        w = Writer(self.MAGIC)
        w.raw(self.context_digest)
        w.u16(len(self.roster))
        w.u16(at(self.sender))
        w.u8(self.modulus_bits)
        w.blob(self.masked)
        w.raw(self.seed_commitment)
        _write_shares(w, self.shares, lambda share: at(share.recipient))
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, ctx: RoundContext) -> MaskedInput:
        """Parse against the round's context ``ctx``: an input made for another context is
        ``WrongRound`` (its positions name another roster); a roster size other than the
        context's or a position beyond it is malformed."""
        r = Reader(data, cls.MAGIC, "MaskedInput")
        name = _namer(ctx, "MaskedInput")

        def build() -> MaskedInput:
            digest = r.raw(DIGEST_BYTES, "context_digest")
            ids = _roster_for(r, ctx, digest, "masked input")
            sender = name(r.u16("sender"), "sender")
            bits = r.u8("modulus_bits")
            masked = r.blob("masked", 8 * MAX_LENGTH)
            commitment = r.raw(DIGEST_BYTES, "seed_commitment")
            shares = _read_shares(r, name, sender=sender)
            r.done()
            msg = cls(digest, sender, bits, masked, commitment, shares, roster=ids)
            msg.vector()  # canonical packing (no stray padding bit), refused here as malformed
            return msg

        return _checked("MaskedInput", build)  # type: ignore[no-any-return]


def _write_shares(w: Writer, shares: tuple[EncryptedShare, ...], peer_at: Callable[[EncryptedShare], int]) -> None:
    """The shares of a message that implies one of their ends: a count, then per share the roster
    position of its other end and the ciphertext."""
    w.u16(len(shares))
    for share in shares:
        w.u16(peer_at(share))
        w.raw(share.ciphertext)


def _read_shares(r: Reader, name: Callable[[int, str], str], *, sender: str | None = None,
                 recipient: str | None = None) -> tuple[EncryptedShare, ...]:
    """The shares ``_write_shares`` wrote, the implied end given (``sender`` or ``recipient``)."""
    role = "recipient" if sender is not None else "sender"
    shares = []
    for _ in range(r.u16("shares")):
        peer = name(r.u16(f"share.{role}"), f"share {role}")
        shares.append(EncryptedShare(sender=sender if sender is not None else peer,
                                     recipient=recipient if recipient is not None else peer,
                                     ciphertext=r.raw(SHARE_CIPHERTEXT_BYTES, "share.ciphertext")))
    return tuple(shares)


def _positions(roster: tuple[str, ...], what: str) -> Callable[[str], int]:
    """``tid -> 0-based position in roster`` for an encoder; MalformedMessage without a roster or
    for an id outside it."""
    if not roster:
        raise MalformedMessage(f"{what}: the encoding names roster positions; build it with the round's roster")
    position = {tid: i for i, tid in enumerate(roster)}

    def at(tid: str) -> int:
        found = position.get(tid)
        if found is None:
            raise MalformedMessage(f"{what}: {tid!r} is not in the round's roster")
        return found

    return at


def _namer(ctx: RoundContext, what: str) -> Callable[[int, str], str]:
    ids = ctx.tenant_ids

    def name(i: int, role: str) -> str:
        if i >= len(ids):
            raise MalformedMessage(f"{what}: {role} position {i} is beyond the roster of {len(ids)}")
        return ids[i]

    return name


def _roster_for(r: Reader, ctx: RoundContext, digest: bytes, what: str) -> tuple[str, ...]:
    """The roster a message's positions name: the context's, after the message's digest and encoded
    roster size say it was made for that context."""
    if digest != ctx.digest():
        raise WrongRound(f"{what} belongs to another cohort, schema version, window or round")
    size = r.u16("roster size")
    ids = ctx.tenant_ids
    if size != len(ids):
        raise MalformedMessage(f"{what}: encoded for a roster of {size}, the round's has {len(ids)}")
    return ids


@dataclass(frozen=True)
class UnmaskRequest:
    """Phase 3, server -> tenant: the survivor set S and the shares addressed to ``recipient`` by survivors.

    On the wire (``FSQ4``) every tenant is named by its 0-based position in the round's sorted
    roster: the recipient and each share's sender as 2 bytes, the survivor set as a bitmap of
    ceil(n / 8) bytes. ``roster`` is that roster (``ctx.tenant_ids``): :class:`ServerRound`
    sets it, ``from_bytes(data, ctx)`` takes it from the context the tenant verified."""

    context_digest: bytes
    recipient: str
    survivors: tuple[str, ...]
    shares: tuple[EncryptedShare, ...]
    roster: tuple[str, ...] = field(default=(), compare=False, repr=False)

    MAGIC = b"FSQ4"

    def __post_init__(self) -> None:
        if len(self.context_digest) != DIGEST_BYTES:
            raise MalformedMessage("UnmaskRequest: context digest must be 32 bytes")
        if list(self.survivors) != sorted(set(self.survivors)):
            raise MalformedMessage("UnmaskRequest: survivors must be sorted and distinct")

    def to_bytes(self) -> bytes:
        if any(share.recipient != self.recipient for share in self.shares):
            raise MalformedMessage(f"UnmaskRequest: a share for another recipient than {self.recipient!r} cannot be encoded")
        roster = self.roster
        at = _positions(roster, "UnmaskRequest")
        w = Writer(self.MAGIC)
        w.raw(self.context_digest)
        w.u16(len(roster))
        w.u16(at(self.recipient))
        bitmap = bytearray((len(roster) + 7) // 8)
        for tid in self.survivors:
            i = at(tid)
            bitmap[i >> 3] |= 1 << (i & 7)
        w.raw(bytes(bitmap))
        _write_shares(w, self.shares, lambda share: at(share.sender))
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, ctx: RoundContext) -> UnmaskRequest:
        """Parse against the round's context ``ctx`` (the one the tenant verified): a request made
        for another context is ``WrongRound``; a roster size other than the context's, a position
        beyond it or a stray bitmap bit is malformed."""
        r = Reader(data, cls.MAGIC, "UnmaskRequest")
        name = _namer(ctx, "UnmaskRequest")

        def build() -> UnmaskRequest:
            digest = r.raw(DIGEST_BYTES, "context_digest")
            ids = _roster_for(r, ctx, digest, "unmask request")
            n = len(ids)
            recipient = name(r.u16("recipient"), "recipient")
            bitmap = r.raw((n + 7) // 8, "survivors")
            if n % 8 and bitmap[-1] >> (n % 8):
                raise MalformedMessage("UnmaskRequest: survivor bitmap sets a bit beyond the roster")
            survivors = tuple(ids[i] for i in range(n) if bitmap[i >> 3] >> (i & 7) & 1)
            shares = _read_shares(r, name, recipient=recipient)
            r.done()
            return cls(digest, recipient, survivors, shares, roster=ids)

        return _checked("UnmaskRequest", build)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Attestation:
    """A survivor's signature over ``survivor_set_digest(ctx, S)`` (made by the integrator with its identity key)."""

    tenant_id: str
    digest: bytes
    signature: bytes

    MAGIC = b"FSA1"

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_BYTES:
            raise MalformedMessage("Attestation: digest must be 32 bytes")
        if len(self.signature) > MAX_SIGNATURE_BYTES:
            raise MalformedMessage("Attestation: signature too long")

    def to_bytes(self) -> bytes:
        w = Writer(self.MAGIC)
        w.text(self.tenant_id)
        w.raw(self.digest)
        w.blob(self.signature)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Attestation:
        r = Reader(data, cls.MAGIC, "Attestation")

        def build() -> Attestation:
            tid = r.text("tenant_id")
            digest = r.raw(DIGEST_BYTES, "digest")
            sig = r.blob("signature", MAX_SIGNATURE_BYTES)
            r.done()
            return cls(tid, digest, sig)

        return _checked("Attestation", build)  # type: ignore[no-any-return]


_SIG_COMPACT, _SIG_OPAQUE = 0, 1
_ECDSA_SCALAR_BYTES = 32


def _compact_ecdsa(signature: bytes) -> bytes | None:
    """r || s (32 bytes each) of a DER ECDSA signature that re-encodes to exactly ``signature``
    with r, s < 2^256; None for anything else (which then travels as it is)."""
    if not 8 <= len(signature) <= 72 or signature[0] != 0x30:
        return None
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return None
    limit = 1 << (8 * _ECDSA_SCALAR_BYTES)
    if not (0 <= r < limit and 0 <= s < limit) or encode_dss_signature(r, s) != signature:
        return None
    return r.to_bytes(_ECDSA_SCALAR_BYTES, "big") + s.to_bytes(_ECDSA_SCALAR_BYTES, "big")


@dataclass(frozen=True)
class RelayedAttestations:
    """Server -> survivor: attestations of one survivor set, compact (what the consistency check needs).

    Every attestation covers the same digest, so it is sent once; each attester is named by
    its 0-based position in the round's sorted roster (a 2-byte index instead of its id). A
    signature that is the DER encoding of an ECDSA signature with r, s < 2^256 (the tenants'
    P-256 identity keys) travels as the 64 bytes r || s and is re-encoded, byte for byte, on
    parse; any other signature travels as it was made. ``attestations(ctx)`` rebuilds the
    :class:`Attestation` values the client checks (``ClientRound.unmask``), so a relay the
    server tampered with fails there like any bad attestation.
    """

    digest: bytes
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]

    MAGIC = b"FSL2"

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_BYTES:
            raise MalformedMessage("RelayedAttestations: digest must be 32 bytes")
        if len(self.signers) != len(self.signatures):
            raise MalformedMessage("RelayedAttestations: one signature per signer")
        if len(self.signers) > MAX_ROSTER:
            raise MalformedMessage(f"RelayedAttestations: more than {MAX_ROSTER} signers")
        if any(b <= a for a, b in zip(self.signers, self.signers[1:], strict=False)) or any(
                not 0 <= i < MAX_ROSTER for i in self.signers):
            raise MalformedMessage("RelayedAttestations: signer indices must be distinct, increasing roster positions")
        if any(not 0 < len(sig) <= MAX_SIGNATURE_BYTES for sig in self.signatures):
            raise MalformedMessage(f"RelayedAttestations: signatures must be 1..{MAX_SIGNATURE_BYTES} bytes")

    @classmethod
    def of(cls, ctx: RoundContext, attestations: Iterable[Attestation]) -> RelayedAttestations:
        """The compact form of ``attestations``: all of one digest, each by a roster member, once."""
        by_index: dict[int, bytes] = {}
        digest: bytes | None = None
        for att in attestations:
            if digest is None:
                digest = att.digest
            elif att.digest != digest:
                raise MalformedMessage("RelayedAttestations: the attestations cover different survivor sets")
            by_index[ctx.index_of(att.tenant_id)] = att.signature
        if digest is None:
            raise MalformedMessage("RelayedAttestations: no attestation to relay")
        order = sorted(by_index)
        return cls(digest, tuple(order), tuple(by_index[i] for i in order))

    def attestations(self, ctx: RoundContext) -> tuple[Attestation, ...]:
        """The attestations, with their signers' ids from ``ctx``'s roster (an index beyond it is malformed)."""
        ids = ctx.tenant_ids
        if self.signers and self.signers[-1] >= len(ids):
            raise MalformedMessage(f"RelayedAttestations: signer {self.signers[-1]} is beyond the roster of {len(ids)}")
        return tuple(Attestation(ids[i], self.digest, sig) for i, sig in zip(self.signers, self.signatures, strict=True))

    def __len__(self) -> int:
        return len(self.signers)

    def to_bytes(self) -> bytes:
        w = Writer(self.MAGIC)
        w.raw(self.digest)
        w.u32(len(self.signers))
        for index, sig in zip(self.signers, self.signatures, strict=True):
            w.u16(index)
            compact = _compact_ecdsa(sig)
            if compact is not None:
                w.u8(_SIG_COMPACT)
                w.raw(compact)
            else:
                w.u8(_SIG_OPAQUE)
                w.u16(len(sig))
                w.raw(sig)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RelayedAttestations:
        r = Reader(data, cls.MAGIC, "RelayedAttestations")

        def build() -> RelayedAttestations:
            digest = r.raw(DIGEST_BYTES, "digest")
            signers, sigs = [], []
            for _ in range(r.count("signers", MAX_ROSTER)):
                signers.append(r.u16("signer"))
                form = r.u8("signature form")
                if form == _SIG_COMPACT:
                    raw = r.raw(2 * _ECDSA_SCALAR_BYTES, "signature")
                    sigs.append(encode_dss_signature(int.from_bytes(raw[:_ECDSA_SCALAR_BYTES], "big"),
                                                     int.from_bytes(raw[_ECDSA_SCALAR_BYTES:], "big")))
                    continue
                if form != _SIG_OPAQUE:
                    raise MalformedMessage(f"RelayedAttestations: unknown signature form {form}")
                n = r.u16("signature length")
                if not 0 < n <= MAX_SIGNATURE_BYTES:
                    raise MalformedMessage(f"RelayedAttestations: signature of {n} bytes")
                sig = r.raw(n, "signature")
                if _compact_ecdsa(sig) is not None:  # one value, one encoding
                    raise MalformedMessage("RelayedAttestations: a DER ECDSA signature sent in full, not as r || s")
                sigs.append(sig)
            r.done()
            return cls(digest, tuple(signers), tuple(sigs))

        return _checked("RelayedAttestations", build)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class UnmaskResponse:
    """Phase 4, tenant -> server: for each surviving neighbour its share of that neighbour's seed,
    for each dropped neighbour the per-round pairwise mask key. Never both for one peer.

    Owners and peers are named by their 0-based position in the round's sorted roster (2 bytes
    on the wire instead of an id; ``ServerRound.add_unmask`` maps them through its context).
    """

    context_digest: bytes
    sender: str
    survivors_digest: bytes
    #: (owner's roster index, share value), by increasing index.
    seed_shares: tuple[tuple[int, int], ...]
    #: (dropped peer's roster index, pairwise mask key), by increasing index.
    pair_keys: tuple[tuple[int, bytes], ...]

    MAGIC = b"FSR2"

    def __post_init__(self) -> None:
        if len(self.context_digest) != DIGEST_BYTES or len(self.survivors_digest) != DIGEST_BYTES:
            raise MalformedMessage("UnmaskResponse: digests must be 32 bytes")
        owners = [o for o, _ in self.seed_shares]
        peers = [p for p, _ in self.pair_keys]
        if owners != sorted(set(owners)) or peers != sorted(set(peers)):
            raise MalformedMessage("UnmaskResponse: share owners and key peers must be sorted and distinct")
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < MAX_ROSTER for i in (*owners, *peers)):
            raise MalformedMessage(f"UnmaskResponse: owners and peers must be roster positions below {MAX_ROSTER}")
        if any(not 0 <= y < PRIME for _, y in self.seed_shares):
            raise MalformedMessage("UnmaskResponse: share value out of the field")
        if any(len(k) != KEY_BYTES for _, k in self.pair_keys):
            raise MalformedMessage("UnmaskResponse: pairwise keys must be 32 bytes")

    def to_bytes(self) -> bytes:
        w = Writer(self.MAGIC)
        w.raw(self.context_digest)
        w.text(self.sender)
        w.raw(self.survivors_digest)
        w.u32(len(self.seed_shares))
        for owner, y in self.seed_shares:
            w.u16(owner)
            w.raw(y.to_bytes(ELEMENT_BYTES, "big"))
        w.u32(len(self.pair_keys))
        for peer, key in self.pair_keys:
            w.u16(peer)
            w.raw(key)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        r = Reader(data, cls.MAGIC, "UnmaskResponse")

        def build() -> UnmaskResponse:
            digest = r.raw(DIGEST_BYTES, "context_digest")
            sender = r.text("sender")
            sdigest = r.raw(DIGEST_BYTES, "survivors_digest")
            shares = tuple(
                (r.u16("share.owner"), int.from_bytes(r.raw(ELEMENT_BYTES, "share.value"), "big"))
                for _ in range(r.count("seed_shares"))
            )
            keys = tuple((r.u16("key.peer"), r.raw(KEY_BYTES, "key.value")) for _ in range(r.count("pair_keys")))
            r.done()
            return cls(digest, sender, sdigest, shares, keys)

        return _checked("UnmaskResponse", build)  # type: ignore[no-any-return]
