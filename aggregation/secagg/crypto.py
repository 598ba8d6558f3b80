"""Keys, key derivation and the mask PRG.

* Long-term X25519 key pair per tenant per cohort; the pairwise secret of u
  and v is X25519(u, v) = X25519(v, u).
* Per round, HKDF-SHA256 over that secret, with the round context's digest,
  the sorted pair of ids and a purpose label as ``info``, yields the pairwise
  mask key k_uv(w) and the pairwise AEAD key of share encryption. Revealing
  k_uv(w) for a dropped peer reveals nothing about any other window, round or
  purpose (HKDF outputs for distinct ``info`` are independent pseudorandom
  keys), and never the long-term secret.
* The PRG is the ChaCha20 keystream under a 32-byte key (zero nonce: every
  key expands exactly one mask), read as little-endian uint32/uint64 words.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from aggregation.secagg.arithmetic import word_dtype
from aggregation.secagg.context import RoundContext
from aggregation.secagg.errors import InvalidRoundParams
from aggregation.secagg.shamir import PRIME

KEY_BYTES = 32
#: A self-mask seed is a uniform element of Shamir's field GF(2^127 - 1), stored in 16 bytes.
SEED_BYTES = 16
PURPOSE_MASK = b"pairwise-mask"
PURPOSE_SHARE = b"share-aead"
#: The key a holder's derived share of an owner's seed comes from; the owner's id follows the
#: label, so u's share held by v and v's share held by u come from independent keys.
PURPOSE_DERIVED_SHARE = b"derived-share/"
_HKDF_SALT = b"fedsignal/secagg/v1/hkdf"
_ZERO_NONCE = bytes(16)


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh long-term X25519 key pair as (raw 32-byte private key, raw 32-byte public key)."""
    private = X25519PrivateKey.generate()
    return (
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def load_private_key(private_key: bytes) -> X25519PrivateKey:
    if not isinstance(private_key, bytes) or len(private_key) != KEY_BYTES:
        raise InvalidRoundParams("private key must be 32 raw bytes (X25519)")
    return X25519PrivateKey.from_private_bytes(private_key)


def public_key_of(private_key: bytes) -> bytes:
    return load_private_key(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def pairwise_secret(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519(u, v); a low-order peer key (all-zero shared secret) is refused, not used."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise InvalidRoundParams(f"roster public key is unusable for X25519: {exc}") from exc


def _pair_info(ctx: RoundContext, a: str, b: str, purpose: bytes) -> bytes:
    lo, hi = sorted((a, b))
    parts = [purpose, ctx.digest(), lo.encode("utf-8"), hi.encode("utf-8")]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def pair_prk(secret: bytes) -> bytes:
    """HKDF-Extract (RFC 5869) of a pairwise secret under the protocol's salt: independent of
    the round, so a tenant keeps it with the agreement and pays only the expand per round."""
    return hmac.digest(_HKDF_SALT, secret, "sha256")


def expand_pair_key(prk: bytes, ctx: RoundContext, a: str, b: str, purpose: bytes) -> bytes:
    """HKDF-Expand of ``pair_prk`` to one 32-byte key: T(1) = HMAC-SHA256(PRK, info || 0x01)."""
    return hmac.digest(prk, _pair_info(ctx, a, b, purpose) + b"\x01", "sha256")


def derive_pair_key(secret: bytes, ctx: RoundContext, a: str, b: str, purpose: bytes) -> bytes:
    """HKDF-SHA256(secret; salt, info = purpose, round digest, sorted pair ids), 32 bytes: the
    same bytes as ``cryptography``'s HKDF (a test checks), in two one-shot HMACs."""
    return expand_pair_key(pair_prk(secret), ctx, a, b, purpose)


def prg_words(key: bytes, length: int, bits: int) -> npt.NDArray[np.unsignedinteger]:
    """``length`` pseudorandom words (uint32 for b <= 32, else uint64): one ChaCha20 keystream call."""
    dtype = np.dtype(word_dtype(bits)).newbyteorder("<")
    stream = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor().update(
        bytes(length * dtype.itemsize)
    )
    return np.frombuffer(stream, dtype=dtype).astype(word_dtype(bits))


def draw_seed(random_bytes: Callable[[int], bytes]) -> bytes:
    """A self-mask seed: uniform in [0, 2^127 - 1) (rejection sampling), as 16 big-endian bytes."""
    while True:
        raw = random_bytes(SEED_BYTES)
        if len(raw) != SEED_BYTES:
            raise InvalidRoundParams("rng returned the wrong number of bytes")
        value = int.from_bytes(raw, "big") & PRIME
        if value < PRIME:
            return value.to_bytes(SEED_BYTES, "big")


def derived_element(key: bytes) -> int:
    """A derived share: the 256-bit key reduced mod p = 2^127 - 1 (statistical distance from
    uniform below 2^-128)."""
    return int.from_bytes(key, "big") % PRIME


def seed_in_field(value: int) -> bool:
    """True when a reconstructed value can be a seed (every seed lies in [0, 2^127 - 1))."""
    return 0 <= value < PRIME


def prg_sum(keys: Sequence[bytes], length: int, bits: int) -> npt.NDArray[np.unsignedinteger]:
    """The sum (wrapping) of ``prg_words(k, length, bits)`` over ``keys``: one buffer, no per-key array."""
    dtype = np.dtype(word_dtype(bits)).newbyteorder("<")
    total = np.zeros(length, dtype=word_dtype(bits))
    zeros = bytes(length * dtype.itemsize)
    for key in keys:
        stream = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor().update(zeros)
        total += np.frombuffer(stream, dtype=dtype)
    return total


def self_mask_key(seed: bytes, ctx: RoundContext, tenant_id: str) -> bytes:
    """The PRG key of a self-mask seed b_u (bound to the round and the owner)."""
    raw = tenant_id.encode("utf-8")
    return hashlib.sha256(b"fedsignal/secagg/v1/self-mask" + ctx.digest() + len(raw).to_bytes(4, "big") + raw + seed).digest()


def seed_commitment(seed: bytes, ctx: RoundContext, tenant_id: str) -> bytes:
    """Public commitment to b_u, so the server can tell a correctly reconstructed seed from a corrupted one."""
    raw = tenant_id.encode("utf-8")
    return hashlib.sha256(b"fedsignal/secagg/v1/seed-commitment" + ctx.digest() + len(raw).to_bytes(4, "big") + raw + seed).digest()
