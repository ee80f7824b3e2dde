"""AMQP 1.0 bytes the engine does not write for us: protocol headers, SASL frames, full performatives.

Two jobs, both on plain bytes:

* **SASL.** The engine's server side offers only ANONYMOUS and EXTERNAL, while the SDKs ask for
  MSSBCBS (uamqp), PLAIN (the redirect sample) or ANONYMOUS (azure-eventhub), and rhea sends no SASL
  at all. :func:`encode_sasl_mechanisms`, :func:`parse_sasl_init` and :func:`encode_sasl_outcome`
  are the three frames of that exchange (AMQP 1.0 part 5.3).
* **Every field of a performative.** The engine leaves out trailing null fields of a performative's
  list, as the standard allows, but azure-eventhub's own AMQP stack reads performatives by position
  and fails on a short list. :class:`PerformativePadder` rewrites the engine's output frame by frame
  so that each performative's list holds all of its fields (the missing ones as nulls), and leaves
  everything else -- payloads, SASL frames, heartbeats -- byte for byte as it was.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AMQP_HEADER",
    "SASL_HEADER",
    "PerformativePadder",
    "SaslInit",
    "encode_sasl_mechanisms",
    "encode_sasl_outcome",
    "parse_sasl_init",
]

AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"

_FRAME_HEADER: Final = struct.Struct(">IBBH")
_AMQP_FRAME: Final = 0
_SASL_FRAME: Final = 1

# Descriptor codes of the performatives and how many fields each has (AMQP 1.0 part 2.7).
_ARITY: Final = {0x10: 10, 0x11: 8, 0x12: 14, 0x13: 11, 0x14: 11, 0x15: 6, 0x16: 3, 0x17: 1, 0x18: 1}

_SASL_MECHANISMS: Final = 0x40
_SASL_INIT: Final = 0x41
_SASL_OUTCOME: Final = 0x44

SASL_OK: Final = 0
SASL_AUTH_FAILED: Final = 1


class FrameError(ValueError):
    """Bytes that are not the AMQP the exchange expects."""


def _frame(frame_type: int, body: bytes) -> bytes:
    return _FRAME_HEADER.pack(8 + len(body), 2, frame_type, 0) + body


def _symbol(text: str) -> bytes:
    data = text.encode("ascii")
    return b"\xa3" + bytes([len(data)]) + data


def _list(items: bytes, count: int) -> bytes:
    if count == 0:
        return b"\x45"
    if len(items) + 1 <= 255 and count <= 255:
        return b"\xc0" + bytes([len(items) + 1, count]) + items
    return b"\xd0" + struct.pack(">II", len(items) + 4, count) + items


def encode_sasl_mechanisms(mechanisms: tuple[str, ...]) -> bytes:
    """The ``sasl-mechanisms`` frame offering ``mechanisms``.

    Example:
        >>> encode_sasl_mechanisms(("ANONYMOUS",)).hex()
        '0000001c02010000005340c00f01e00c01a309414e4f4e594d4f5553'
    """
    symbols = b"".join(_symbol(name)[1:] for name in mechanisms)  # the array carries one constructor
    array = b"\xe0" + bytes([len(symbols) + 2, len(mechanisms)]) + b"\xa3" + symbols
    return _frame(_SASL_FRAME, b"\x00\x53" + bytes([_SASL_MECHANISMS]) + _list(array, 1))


def encode_sasl_outcome(code: int) -> bytes:
    """The ``sasl-outcome`` frame: ``0`` ok, ``1`` authentication failed (both fields encoded)."""
    return _frame(_SASL_FRAME, b"\x00\x53" + bytes([_SASL_OUTCOME]) + _list(b"\x50" + bytes([code]) + b"\x40", 2))


@dataclass(frozen=True, slots=True)
class SaslInit:
    """What a client's ``sasl-init`` said.

    Attributes:
        mechanism: the mechanism it chose (``"ANONYMOUS"``, ``"PLAIN"``, ``"MSSBCBS"``, ...).
        initial_response: its initial response (for PLAIN: ``\\0user\\0password``), or empty.
    """

    mechanism: str
    initial_response: bytes


class _Reader:
    """Reads the few AMQP types a ``sasl-init`` holds."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise FrameError("the frame ends inside a value")
        value = self.data[self.at]
        self.at += 1
        return value

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise FrameError("the frame ends inside a value")
        value = self.data[self.at : self.at + count]
        self.at += count
        return value

    def value(self) -> object:
        code = self.byte()
        if code == 0x40:
            return None
        if code in (0xA3, 0xA1, 0xA0):  # sym8, str8, vbin8
            raw = self.take(self.byte())
        elif code in (0xB3, 0xB1, 0xB0):  # sym32, str32, vbin32
            raw = self.take(struct.unpack(">I", self.take(4))[0])
        else:
            raise FrameError(f"unexpected type 0x{code:02x} in sasl-init")
        return raw if code in (0xA0, 0xB0) else raw.decode("utf-8", "replace")


def parse_sasl_init(body: bytes) -> SaslInit:
    """Decode the body of a ``sasl-init`` frame (after its 8-byte header).

    Raises:
        FrameError: the body is not a ``sasl-init``.
    """
    reader = _Reader(body)
    if reader.take(2) != b"\x00\x53" or reader.byte() != _SASL_INIT:
        raise FrameError("expected a sasl-init frame")
    code = reader.byte()
    if code == 0xC0:
        reader.take(1)
        count = reader.byte()
    elif code == 0xD0:
        reader.take(4)
        count = struct.unpack(">I", reader.take(4))[0]
    else:
        raise FrameError("the sasl-init fields are not a list")
    values = [reader.value() for _ in range(min(count, 2))]
    mechanism = values[0] if values else None
    if not isinstance(mechanism, str):
        raise FrameError("the sasl-init names no mechanism")
    response = values[1] if len(values) > 1 and isinstance(values[1], bytes) else b""
    return SaslInit(mechanism, response)


def split_frame(buffer: bytes | bytearray) -> tuple[int, bytes] | None:
    """``(frame type, body)`` of the first whole frame in ``buffer``, or ``None`` while it is incomplete.

    Raises:
        FrameError: the frame header is impossible.
    """
    if len(buffer) < 8:
        return None
    size, offset, frame_type, _channel = _FRAME_HEADER.unpack_from(buffer)
    if size < 8 or offset < 2 or offset * 4 > size:
        raise FrameError(f"impossible frame header (size {size}, data offset {offset})")
    if len(buffer) < size:
        return None
    return frame_type, bytes(buffer[offset * 4 : size])


class PerformativePadder:
    """Rewrites a stream of AMQP frames so that every performative holds all of its fields."""

    __slots__ = ("_header_seen", "_pending")

    def __init__(self) -> None:
        self._pending = bytearray()
        self._header_seen = False

    def feed(self, data: bytes) -> bytes:
        """Take the engine's next output; return the whole frames it completes, padded."""
        self._pending += data
        out = bytearray()
        pending = self._pending
        if not self._header_seen:
            if len(pending) < 8:
                return b""
            # The engine's output starts with its protocol header, which is not a frame.
            out += pending[:8]
            del pending[:8]
            self._header_seen = True
        while len(pending) >= 8:
            size, offset, frame_type, channel = _FRAME_HEADER.unpack_from(pending)
            if len(pending) < size:
                break
            frame = bytes(pending[:size])
            del pending[:size]
            out += _padded(frame, offset, frame_type, channel) if frame_type == _AMQP_FRAME else frame
        return bytes(out)


def _padded(frame: bytes, offset: int, frame_type: int, channel: int) -> bytes:
    body = frame[offset * 4 :]
    if len(body) < 4 or body[0] != 0x00 or body[1] != 0x53 or body[2] not in _ARITY:
        return frame
    arity = _ARITY[body[2]]
    code = body[3]
    if code == 0x45:
        count, items, rest = 0, b"", body[4:]
    elif code == 0xC0:
        size, count = body[4], body[5]
        items, rest = body[6 : 5 + size], body[5 + size :]
    elif code == 0xD0:
        size, count = struct.unpack_from(">II", body, 4)
        items, rest = body[12 : 8 + size], body[8 + size :]
    else:
        return frame
    if count >= arity:
        return frame
    new_body = body[:3] + _list(items + b"\x40" * (arity - count), arity) + rest
    return _FRAME_HEADER.pack(8 + len(new_body), 2, frame_type, channel) + new_body
