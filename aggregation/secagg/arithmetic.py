"""Arithmetic in Z_{2^b} on numpy unsigned words, and the modulus choice.

Values are held in uint32 when b <= 32, else uint64; numpy's unsigned
arithmetic wraps modulo 2^32 or 2^64, which 2^b divides, so sums may wrap
freely and are reduced modulo 2^b once, at the end. The decoded sum is read
as a signed (two's complement) b-bit integer, which is why b must leave room
for the largest |sum|: see ``modulus_bits``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from aggregation.secagg.errors import InvalidRoundParams

#: Noise headroom of ``modulus_bits``, in standard deviations of the summed noise.
#: A discrete Gaussian of parameter sigma is sub-Gaussian with variance proxy
#: sigma^2 (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential Privacy"), and a sum of
#: independent ones with variance proxy n sigma^2, so P[|noise| >= 12 sigma_sum]
#: <= 2 exp(-72) ~ 1.1e-31 per cell.
NOISE_HEADROOM_SIGMAS = 12.0

UInt = np.uint32 | np.uint64


def word_dtype(bits: int) -> type[np.unsignedinteger]:
    """uint32 for b <= 32, else uint64."""
    return np.uint32 if bits <= 32 else np.uint64


def modulus_bits(
    max_abs_sum: int, sigma_sum: float = 0.0, *, headroom_sigmas: float = NOISE_HEADROOM_SIGMAS
) -> int:
    """The smallest b such that the signed sum never wraps, within the documented bound.

    ``max_abs_sum`` bounds |sum of the survivors' tables| per cell (e.g. roster
    size x scale_factor x the per-tenant cell bound); ``sigma_sum`` is the
    standard deviation of the summed noise per cell when every roster member
    survives (``NoisePlan.sigma_sum(roster_size)``). b satisfies

        max_abs_sum + ceil(headroom_sigmas * sigma_sum) <= 2^(b-1) - 1,

    so decoding is exact unless the noise of a cell exceeds ``headroom_sigmas``
    standard deviations, which happens with probability <= 2 exp(-headroom^2/2)
    per cell (1.1e-31 for the default 12).
    """
    if isinstance(max_abs_sum, bool) or not isinstance(max_abs_sum, int | np.integer) or max_abs_sum < 0:
        raise InvalidRoundParams(f"max_abs_sum must be a non-negative integer, got {max_abs_sum!r}")
    if not (math.isfinite(sigma_sum) and sigma_sum >= 0):
        raise InvalidRoundParams(f"sigma_sum must be a non-negative finite number, got {sigma_sum!r}")
    if not (math.isfinite(headroom_sigmas) and headroom_sigmas >= 0):
        raise InvalidRoundParams(f"headroom_sigmas must be non-negative, got {headroom_sigmas!r}")
    bound = int(max_abs_sum) + math.ceil(headroom_sigmas * sigma_sum)
    bits = max(2, bound.bit_length() + 1)
    if bits > 64:
        raise InvalidRoundParams(f"|sum| up to {bound} needs {bits} bits; at most 64 are supported")
    return bits


def packed_width(bits: int) -> int:
    """Bits per word on the wire: b itself, at least 8 (so a byte string has one word count)."""
    return max(8, bits)


def packed_size(length: int, bits: int) -> int:
    """Bytes of ``length`` words packed at ``packed_width(bits)`` bits each (last byte zero-padded)."""
    return (length * packed_width(bits) + 7) // 8


_BYTE_WIDTHS = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}


def pack(words: npt.NDArray[np.unsignedinteger], bits: int) -> bytes:
    """Words reduced modulo 2^b, packed little-endian at ``packed_width(bits)`` bits each, the
    first word in the lowest bits; the last byte's unused high bits are zero. At b = 28 a value
    takes 3.5 bytes instead of a uint32's 4."""
    width = packed_width(bits)
    reduced = reduce(np.asarray(words), bits)
    if width in _BYTE_WIDTHS:
        return reduced.astype(_BYTE_WIDTHS[width]).tobytes()
    lane = "<u4" if width <= 32 else "<u8"
    as_bytes = reduced.astype(lane).view(np.uint8).reshape(len(reduced), -1)
    bits_of = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits_of.reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes, bits: int) -> npt.NDArray[np.unsignedinteger]:
    """The words of ``pack(words, bits)``; ValueError for bytes no ``pack`` makes (a byte count
    that is not ``packed_size`` of a whole number of words, or a nonzero padding bit)."""
    width = packed_width(bits)
    count = len(data) * 8 // width
    if len(data) != packed_size(count, bits):
        raise ValueError(f"{len(data)} bytes are not a whole number of {width}-bit words")
    dtype = word_dtype(bits)
    if width in _BYTE_WIDTHS:
        words = np.frombuffer(data, dtype=_BYTE_WIDTHS[width]).astype(dtype)
    else:
        flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        if flat[count * width:].any():
            raise ValueError("nonzero padding bits after the last word")
        lane_bits = 32 if width <= 32 else 64
        grid = np.zeros((count, lane_bits), dtype=np.uint8)
        grid[:, :width] = flat[: count * width].reshape(count, width)
        lane = "<u4" if lane_bits == 32 else "<u8"
        words = np.packbits(grid, axis=1, bitorder="little").reshape(-1).view(lane).astype(dtype)
    if bits < width and words.size and int(words.max()) >> bits:
        raise ValueError(f"a word exceeds {bits} bits")
    return words


def mask_of(bits: int) -> int:
    return (1 << bits) - 1


def encode(table: npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.unsignedinteger]:
    """Signed int64 values as words modulo 2^b (two's complement); refuses values that do not fit in b bits."""
    half = 1 << (bits - 1)
    if table.size and (int(table.max()) >= half or int(table.min()) < -half):
        raise InvalidRoundParams(
            f"table values in [{int(table.min())}, {int(table.max())}] do not fit in {bits}-bit signed words"
        )
    words = table.astype(np.uint64)  # int64 -> uint64 is the two's-complement reinterpretation
    return words.astype(word_dtype(bits))


def reduce(words: npt.NDArray[np.unsignedinteger], bits: int) -> npt.NDArray[np.unsignedinteger]:
    """Words reduced modulo 2^b (a no-op for b = 32 or 64)."""
    if bits in (32, 64):
        return words
    return words & words.dtype.type(mask_of(bits))


def decode(words: npt.NDArray[np.unsignedinteger], bits: int) -> npt.NDArray[np.int64]:
    """Words modulo 2^b read as signed b-bit integers."""
    reduced = reduce(words, bits)
    if bits == 64:
        return reduced.astype(np.uint64).view(np.int64).copy()
    values = reduced.astype(np.int64)
    half = 1 << (bits - 1)
    values[values >= half] -= 1 << bits
    return values
