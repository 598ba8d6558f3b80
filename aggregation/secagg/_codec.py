"""Canonical, length-bounded binary encoding of the kernel's messages.

One encoding, no options: a 4-byte magic naming the message type and version,
then fields in a fixed order. Integers are big-endian unsigned of fixed width;
byte strings and UTF-8 strings carry a 4-byte length prefix; sequences carry a
4-byte count. Every length and count is checked against a bound *before*
anything is allocated, and parsing refuses trailing bytes, so one value has
exactly one encoding (``from_bytes(to_bytes(m)) == m`` and
``to_bytes(from_bytes(b)) == b``).
"""

from __future__ import annotations

import struct

from aggregation.secagg.errors import MalformedMessage

#: Largest message the kernel parses: a masked vector of 2**21 uint64 words
#: plus shares for a few thousand neighbours fits comfortably.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_ID_BYTES = 256
MAX_ITEMS = 1 << 16


class Writer:
    def __init__(self, magic: bytes) -> None:
        self._parts: list[bytes] = [magic]

    def u8(self, value: int) -> None:
        self._parts.append(struct.pack(">B", value))

    def u16(self, value: int) -> None:
        self._parts.append(struct.pack(">H", value))

    def u32(self, value: int) -> None:
        self._parts.append(struct.pack(">I", value))

    def u64(self, value: int) -> None:
        self._parts.append(struct.pack(">Q", value))

    def i64(self, value: int) -> None:
        self._parts.append(struct.pack(">q", value))

    def f64(self, value: float) -> None:
        self._parts.append(struct.pack(">d", value))

    def raw(self, value: bytes) -> None:
        self._parts.append(value)

    def blob(self, value: bytes) -> None:
        self.u32(len(value))
        self._parts.append(value)

    def text(self, value: str) -> None:
        self.blob(value.encode("utf-8"))

    def texts(self, values: tuple[str, ...] | list[str]) -> None:
        """A count, then each string length-prefixed (one join for the whole list)."""
        self.u32(len(values))
        encoded = [v.encode("utf-8") for v in values]
        self._parts.append(b"".join(len(e).to_bytes(4, "big") + e for e in encoded))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    def __init__(self, data: bytes, magic: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_MESSAGE_BYTES:
            raise MalformedMessage(f"{what}: {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
        if data[: len(magic)] != magic:
            raise MalformedMessage(f"{what}: wrong magic/version {data[: len(magic)]!r}, expected {magic!r}")
        self._data = data
        self._pos = len(magic)
        self._what = what

    def _take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedMessage(f"{self._what}: truncated in field {field!r}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, field: str) -> int:
        return int(struct.unpack(">B", self._take(1, field))[0])

    def u16(self, field: str) -> int:
        return int(struct.unpack(">H", self._take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack(">I", self._take(4, field))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack(">Q", self._take(8, field))[0])

    def i64(self, field: str) -> int:
        return int(struct.unpack(">q", self._take(8, field))[0])

    def f64(self, field: str) -> float:
        return float(struct.unpack(">d", self._take(8, field))[0])

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def blob(self, field: str, max_len: int, exact: int | None = None) -> bytes:
        n = self.u32(field)
        if n > max_len:
            raise MalformedMessage(f"{self._what}: field {field!r} of {n} bytes exceeds its limit of {max_len}")
        if exact is not None and n != exact:
            raise MalformedMessage(f"{self._what}: field {field!r} has {n} bytes, expected {exact}")
        return self._take(n, field)

    def text(self, field: str, max_len: int = MAX_ID_BYTES) -> str:
        # The hot path of every message (ids): length prefix and body read inline.
        data, pos = self._data, self._pos
        if pos + 4 > len(data):
            raise MalformedMessage(f"{self._what}: truncated in field {field!r}")
        n = int.from_bytes(data[pos : pos + 4], "big")
        if n > max_len:
            raise MalformedMessage(f"{self._what}: field {field!r} of {n} bytes exceeds its limit of {max_len}")
        end = pos + 4 + n
        if end > len(data):
            raise MalformedMessage(f"{self._what}: truncated in field {field!r}")
        self._pos = end
        try:
            return data[pos + 4 : end].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self._what}: field {field!r} is not UTF-8") from None

    def texts(self, field: str, max_items: int = MAX_ITEMS, max_len: int = MAX_ID_BYTES) -> tuple[str, ...]:
        n = self.count(field, max_items)
        return tuple(self.text(field, max_len) for _ in range(n))

    def count(self, field: str, max_items: int = MAX_ITEMS) -> int:
        n = self.u32(field)
        if n > max_items:
            raise MalformedMessage(f"{self._what}: {n} items in {field!r} exceeds the limit of {max_items}")
        # Every item takes at least 4 bytes: refuse counts the remaining data cannot hold.
        if n * 4 > len(self._data) - self._pos:
            raise MalformedMessage(f"{self._what}: truncated in field {field!r}")
        return n

    def done(self) -> None:
        if self._pos != len(self._data):
            raise MalformedMessage(f"{self._what}: {len(self._data) - self._pos} trailing bytes")
