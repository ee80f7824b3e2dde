"""Sans-IO MQTT 3.1.1 codec for both roles: packets as frozen dataclasses, bytes in, bytes out.

Theory of operation
-------------------
An MQTT packet is a fixed header (one byte of type and flags, then a remaining length of one to four
bytes, seven bits each) followed by ``remaining length`` bytes of body. A codec keeps one ``bytearray``
of received bytes and an offset to the first byte not yet parsed. :meth:`MqttServerCodec.feed` appends
the new bytes, then walks forward packet by packet, decoding each remaining length inline, until the
rest of the buffer holds less than one packet; the parsed prefix is then dropped. Dropping a prefix of a
``bytearray`` only moves its start pointer in CPython, so feeding a stream costs time linear in its size
whatever the chunking. The size limit is checked as soon as a fixed header is complete, so an
oversize packet is refused before its body is buffered.

:class:`MqttServerCodec` reads what a client sends (the emulator's side); :class:`MqttClientCodec`
reads what a server sends (the native client transport's side, and the tests' raw clients). Both
refuse anything MQTT 3.1.1 forbids with :class:`MalformedPacket`, after which the codec stays
broken: the connection must be closed.
The ``encode_*`` functions build packets for either direction and check their arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from aioiothub.exceptions import ProtocolError

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "ClientBoundPacket",
    "ConnAck",
    "Connect",
    "Disconnect",
    "MalformedPacket",
    "MqttClientCodec",
    "MqttServerCodec",
    "Packet",
    "PingReq",
    "PingResp",
    "PubAck",
    "Publish",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode_connack",
    "encode_connect",
    "encode_disconnect",
    "encode_pingreq",
    "encode_pingresp",
    "encode_puback",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "encode_unsubscribe",
]

#: IoT Hub accepts telemetry of up to 256 KiB of body and properties; the rest leaves room for the
#: topic (which carries the properties) and headers.
DEFAULT_MAX_PACKET_SIZE: Final = 300 * 1024

_MAX_REMAINING_LENGTH: Final = 268_435_455
_MAX_STRING_BYTES: Final = 65_535

_CONNECT: Final = 1
_CONNACK: Final = 2
_PUBLISH: Final = 3
_PUBACK: Final = 4
_SUBSCRIBE: Final = 8
_SUBACK: Final = 9
_UNSUBSCRIBE: Final = 10
_UNSUBACK: Final = 11
_PINGREQ: Final = 12
_PINGRESP: Final = 13
_DISCONNECT: Final = 14

_PACKET_NAMES: Final = {
    0: "reserved type 0",
    1: "CONNECT",
    2: "CONNACK",
    3: "PUBLISH",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    8: "SUBSCRIBE",
    9: "SUBACK",
    10: "UNSUBSCRIBE",
    11: "UNSUBACK",
    12: "PINGREQ",
    13: "PINGRESP",
    14: "DISCONNECT",
    15: "reserved type 15",
}

#: CONNACK return code for a protocol level the server does not speak (MQTT-3.1.2-2).
_UNACCEPTABLE_PROTOCOL_VERSION: Final = 1

_SUPPORTED_PROTOCOLS: Final = {"MQTT": 4, "MQIsdp": 3}
_SUBACK_CODES: Final = frozenset({0, 1, 2, 0x80})


class MalformedPacket(ProtocolError):
    """The peer sent bytes that are not a valid MQTT 3.1.1 packet for this direction.

    Attributes:
        reason: what was wrong, naming the offending topic or text where there is one.
        return_code: when not ``None``, the CONNACK return code a server should answer with before
            closing (an unsupported protocol level gets 1, as MQTT-3.1.2-2 requires).
        packets_before: the complete, valid packets that preceded the malformed one in the same
            :meth:`~MqttServerCodec.feed` call, in order, so that they can still be acted on.
    """

    def __init__(
        self,
        reason: str,
        *,
        return_code: int | None = None,
        packets_before: Sequence[object] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.return_code = return_code
        self.packets_before: tuple[object, ...] = tuple(packets_before)


@dataclass(frozen=True, slots=True)
class Will:
    """The last-will message carried by a CONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT: the first packet of every client connection.

    ``protocol_level`` is 4 for MQTT 3.1.1 (protocol name ``MQTT``) or 3 for MQTT 3.1 (``MQIsdp``).
    The password (a SAS token on IoT Hub) is left out of the repr.
    """

    client_id: str
    username: str | None
    password: bytes | None = field(repr=False)
    keepalive: int
    clean_session: bool
    will: Will | None
    protocol_level: int


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK: the server's answer to CONNECT (return code 0 accepts)."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH in either direction; ``packet_id`` is ``None`` exactly when ``qos`` is 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK: acknowledges a QoS 1 PUBLISH in either direction."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE: topic filters with their requested QoS, in the order sent."""

    packet_id: int
    filters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK: one granted QoS (0, 1, 2) or failure code 0x80 per requested filter."""

    packet_id: int
    granted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE: topic filters to remove, in the order sent."""

    packet_id: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK: acknowledges an UNSUBSCRIBE."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ: the client's keep-alive probe."""


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP: the server's answer to PINGREQ."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT: the client is closing the connection cleanly (its will is discarded)."""


#: What a client may send, i.e. what :class:`MqttServerCodec` yields.
Packet: TypeAlias = Connect | Publish | PubAck | Subscribe | Unsubscribe | PingReq | Disconnect
#: What a server may send, i.e. what :class:`MqttClientCodec` yields.
ClientBoundPacket: TypeAlias = ConnAck | Publish | PubAck | SubAck | UnsubAck | PingResp

# A frozen dataclass __init__ sets each field through object.__setattr__, which costs about a
# microsecond per PUBLISH; the slot descriptors do the same job at a fraction of the cost on the
# hot path, giving an instance equal in every way to one built by the constructor.
_new_object = object.__new__
_set_topic = Publish.__dict__["topic"].__set__
_set_payload = Publish.__dict__["payload"].__set__
_set_qos = Publish.__dict__["qos"].__set__
_set_retain = Publish.__dict__["retain"].__set__
_set_dup = Publish.__dict__["dup"].__set__
_set_packet_id = Publish.__dict__["packet_id"].__set__
_set_puback_id = PubAck.__dict__["packet_id"].__set__


def _show(raw: bytes | bytearray | memoryview | str, limit: int = 100) -> str:
    """A bounded repr of peer-supplied text for error messages."""
    text = repr(raw if isinstance(raw, str) else bytes(raw))
    return text if len(text) <= limit else text[:limit] + "..."


def _decode_text(view: memoryview, start: int, end: int, what: str) -> str:
    """Decode an MQTT UTF-8 string body; invalid UTF-8, surrogates and U+0000 are malformed."""
    try:
        text = str(view[start:end], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not valid UTF-8: {_show(view[start:end])}") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000: {_show(text)}")
    return text


def _read_length_prefixed(view: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Return ``(start, stop)`` of a two-byte-length-prefixed field at ``pos``, checked against ``end``."""
    if pos + 2 > end:
        raise MalformedPacket(f"{what} is truncated")
    start = pos + 2
    stop = start + ((view[pos] << 8) | view[pos + 1])
    if stop > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return start, stop


def _read_text(view: memoryview, pos: int, end: int, what: str) -> tuple[str, int]:
    start, stop = _read_length_prefixed(view, pos, end, what)
    return _decode_text(view, start, stop, what), stop


def _read_packet_id(view: memoryview, pos: int, end: int, name: str) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"{name} packet identifier is truncated")
    packet_id = (view[pos] << 8) | view[pos + 1]
    if packet_id == 0:
        raise MalformedPacket(f"{name} has packet identifier 0")
    return packet_id


def _expect_flags(flags: int, expected: int, packet_type: int) -> None:
    if flags != expected:
        raise MalformedPacket(f"{_PACKET_NAMES[packet_type]} has reserved flags {flags:#06b}, expected {expected:#06b}")


def _expect_length(length: int, expected: int, packet_type: int) -> None:
    if length != expected:
        raise MalformedPacket(f"{_PACKET_NAMES[packet_type]} has remaining length {length}, expected {expected}")


class _PacketReader:
    """Framing shared by both directions: buffering, fixed headers, size limit, and PUBLISH."""

    #: Packet types this direction may carry; anything else is refused from its fixed header.
    _accepted_types: frozenset[int] = frozenset()

    _buffer: bytearray
    _offset: int
    _max_packet_size: int
    _error: MalformedPacket | None

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if isinstance(max_packet_size, bool) or not isinstance(max_packet_size, int):
            raise TypeError(f"max_packet_size must be an int, not {type(max_packet_size).__name__}")
        if not 2 <= max_packet_size <= _MAX_REMAINING_LENGTH + 5:
            raise ValueError(f"max_packet_size must be between 2 and {_MAX_REMAINING_LENGTH + 5}")
        self._buffer = bytearray()
        self._offset = 0
        self._max_packet_size = max_packet_size
        self._error = None

    @property
    def max_packet_size(self) -> int:
        """The largest packet accepted, fixed header included, in bytes."""
        return self._max_packet_size

    @property
    def buffered(self) -> int:
        """How many received bytes are waiting for the rest of their packet."""
        return len(self._buffer) - self._offset

    def _feed(self, data: bytes | bytearray | memoryview) -> list[object]:
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        packets: list[object] = []
        try:
            with memoryview(buffer) as view:
                self._parse_all(view, packets)
        except MalformedPacket as exc:
            exc.packets_before = tuple(packets)
            self._error = exc
            raise
        # Deleting a prefix of a bytearray is O(1) in CPython, so this is not a copy of the tail.
        del buffer[: self._offset]
        self._offset = 0
        return packets

    def _parse_all(self, view: memoryview, packets: list[object]) -> None:
        size = len(view)
        pos = self._offset
        max_packet_size = self._max_packet_size
        append = packets.append
        parse_other = self._parse_other
        # Locals, not globals, in the loop that runs once per telemetry message.
        new_object, publish_class = _new_object, Publish
        set_topic, set_payload, set_qos = _set_topic, _set_payload, _set_qos
        set_retain, set_dup, set_packet_id = _set_retain, _set_dup, _set_packet_id
        puback_class, set_puback_id = PubAck, _set_puback_id
        while pos + 2 <= size:
            first = view[pos]
            # Remaining length: up to four bytes of seven bits each, least significant first.
            byte = view[pos + 1]
            if byte < 0x80:
                length = byte
                start = pos + 2
            else:
                length = byte & 0x7F
                cursor = pos + 2
                shift = 7
                while True:
                    if cursor >= size:
                        break
                    byte = view[cursor]
                    length |= (byte & 0x7F) << shift
                    cursor += 1
                    if byte < 0x80:
                        break
                    if shift == 21:
                        raise MalformedPacket("remaining length is longer than 4 bytes")
                    shift += 7
                if byte >= 0x80:
                    break  # the fixed header itself is still incomplete
                start = cursor
            end = start + length
            if end - pos > max_packet_size:
                raise MalformedPacket(
                    f"packet too large: {_PACKET_NAMES[first >> 4]} of {end - pos} bytes, limit {max_packet_size}"
                )
            if end > size:
                if first >> 4 not in self._accepted_types:
                    # Rejected now rather than once a body of up to the size limit has arrived.
                    raise MalformedPacket(f"packet type {first >> 4} may not be sent here")
                break
            if first == 0x40 and length == 2:
                # PUBACK, the other hot path (a client's acknowledgements), kept inline.
                packet_id = (view[start] << 8) | view[start + 1]
                if packet_id == 0:
                    raise MalformedPacket("PUBACK has packet identifier 0")
                acknowledgement = new_object(puback_class)
                set_puback_id(acknowledgement, packet_id)
                append(acknowledgement)
            elif first >> 4 == _PUBLISH:
                # The hot path (telemetry), kept inline.
                qos = (first >> 1) & 3
                if qos == 3:
                    raise MalformedPacket("PUBLISH with QoS 3")
                if length < 2:
                    raise MalformedPacket("PUBLISH topic is truncated")
                topic_end = start + 2 + ((view[start] << 8) | view[start + 1])
                if topic_end > end:
                    raise MalformedPacket("PUBLISH topic runs past the end of the packet")
                if topic_end == start + 2:
                    raise MalformedPacket("PUBLISH topic is empty")
                try:
                    topic = str(view[start + 2 : topic_end], "utf-8")
                except UnicodeDecodeError:
                    raise MalformedPacket(
                        f"PUBLISH topic is not valid UTF-8: {_show(view[start + 2 : topic_end])}"
                    ) from None
                if "+" in topic or "#" in topic or "\x00" in topic:
                    raise MalformedPacket(f"PUBLISH topic contains a wildcard or U+0000: {_show(topic)}")
                packet = new_object(publish_class)
                if qos:
                    if topic_end + 2 > end:
                        raise MalformedPacket(f"PUBLISH to {_show(topic)} has no packet identifier")
                    packet_id = (view[topic_end] << 8) | view[topic_end + 1]
                    if packet_id == 0:
                        raise MalformedPacket(f"PUBLISH to {_show(topic)} has packet identifier 0")
                    set_packet_id(packet, packet_id)
                    set_payload(packet, view[topic_end + 2 : end].tobytes())
                    set_dup(packet, bool(first & 0x08))
                else:
                    if first & 0x08:
                        raise MalformedPacket(f"QoS 0 PUBLISH to {_show(topic)} has the DUP flag set")
                    set_packet_id(packet, None)
                    set_payload(packet, view[topic_end:end].tobytes())
                    set_dup(packet, False)
                set_topic(packet, topic)
                set_qos(packet, qos)
                set_retain(packet, bool(first & 0x01))
                append(packet)
            else:
                append(parse_other(first, view, start, end))
            pos = end
        self._offset = pos

    def _parse_other(self, first: int, view: memoryview, start: int, end: int) -> object:
        raise NotImplementedError


class MqttServerCodec(_PacketReader):
    """Parses the bytes a client sends to a server.

    Args:
        max_packet_size: the largest packet accepted, fixed header included; a larger one is refused
            with reason "packet too large" as soon as its fixed header has arrived.
    """

    _accepted_types = frozenset({_CONNECT, _PUBLISH, _PUBACK, _SUBSCRIBE, _UNSUBSCRIBE, _PINGREQ, _DISCONNECT})

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes and return every packet they complete, in order.

        Raises:
            MalformedPacket: the bytes break MQTT 3.1.1; the codec refuses all further input.
                Valid packets that came before the bad one are in ``packets_before``.
        """
        return self._feed(data)  # type: ignore[return-value]

    def _parse_other(self, first: int, view: memoryview, start: int, end: int) -> object:
        packet_type = first >> 4
        flags = first & 0x0F
        if packet_type == _PUBACK:
            _expect_flags(flags, 0, packet_type)
            _expect_length(end - start, 2, packet_type)
            packet = _new_object(PubAck)
            _set_puback_id(packet, _read_packet_id(view, start, end, "PUBACK"))
            return packet
        if packet_type == _PINGREQ:
            _expect_flags(flags, 0, packet_type)
            _expect_length(end - start, 0, packet_type)
            return PingReq()
        if packet_type == _SUBSCRIBE:
            _expect_flags(flags, 0b0010, packet_type)
            return _parse_subscribe(view, start, end)
        if packet_type == _UNSUBSCRIBE:
            _expect_flags(flags, 0b0010, packet_type)
            return _parse_unsubscribe(view, start, end)
        if packet_type == _CONNECT:
            _expect_flags(flags, 0, packet_type)
            return _parse_connect(view, start, end)
        if packet_type == _DISCONNECT:
            _expect_flags(flags, 0, packet_type)
            _expect_length(end - start, 0, packet_type)
            return Disconnect()
        raise MalformedPacket(f"{_PACKET_NAMES[packet_type]} may not be sent by a client")


class MqttClientCodec(_PacketReader):
    """Parses the bytes a server sends to a client (the native transport, tests and benchmarks).

    Args:
        max_packet_size: the largest packet accepted, fixed header included.
    """

    _accepted_types = frozenset({_CONNACK, _PUBLISH, _PUBACK, _SUBACK, _UNSUBACK, _PINGRESP})

    def feed(self, data: bytes | bytearray | memoryview) -> list[ClientBoundPacket]:
        """Add received bytes and return every packet they complete, in order.

        Raises:
            MalformedPacket: the bytes break MQTT 3.1.1; the codec refuses all further input.
        """
        return self._feed(data)  # type: ignore[return-value]

    def _parse_other(self, first: int, view: memoryview, start: int, end: int) -> object:
        packet_type = first >> 4
        flags = first & 0x0F
        length = end - start
        if packet_type == _PUBACK:
            _expect_flags(flags, 0, packet_type)
            _expect_length(length, 2, packet_type)
            return PubAck(_read_packet_id(view, start, end, "PUBACK"))
        if packet_type == _CONNACK:
            _expect_flags(flags, 0, packet_type)
            _expect_length(length, 2, packet_type)
            acknowledge_flags = view[start]
            if acknowledge_flags & 0xFE:
                raise MalformedPacket(f"CONNACK has reserved acknowledge flags {acknowledge_flags:#04x}")
            return ConnAck(session_present=bool(acknowledge_flags), return_code=view[start + 1])
        if packet_type == _SUBACK:
            _expect_flags(flags, 0, packet_type)
            packet_id = _read_packet_id(view, start, end, "SUBACK")
            granted = tuple(view[start + 2 : end])
            if not granted:
                raise MalformedPacket("SUBACK has no return codes")
            for code in granted:
                if code not in _SUBACK_CODES:
                    raise MalformedPacket(f"SUBACK has invalid return code {code:#04x}")
            return SubAck(packet_id, granted)
        if packet_type == _UNSUBACK:
            _expect_flags(flags, 0, packet_type)
            _expect_length(length, 2, packet_type)
            return UnsubAck(_read_packet_id(view, start, end, "UNSUBACK"))
        if packet_type == _PINGRESP:
            _expect_flags(flags, 0, packet_type)
            _expect_length(length, 0, packet_type)
            return PingResp()
        raise MalformedPacket(f"{_PACKET_NAMES[packet_type]} may not be sent by a server")


def _parse_connect(view: memoryview, pos: int, end: int) -> Connect:
    protocol_name, pos = _read_text(view, pos, end, "CONNECT protocol name")
    if protocol_name not in _SUPPORTED_PROTOCOLS:
        raise MalformedPacket(f"CONNECT has unknown protocol name {_show(protocol_name)}")
    if pos + 4 > end:
        raise MalformedPacket("CONNECT variable header is truncated")
    level = view[pos]
    if level != _SUPPORTED_PROTOCOLS[protocol_name]:
        raise MalformedPacket(
            f"CONNECT asks for unsupported protocol level {level} of {protocol_name}",
            return_code=_UNACCEPTABLE_PROTOCOL_VERSION,
        )
    flags = view[pos + 1]
    keepalive = (view[pos + 2] << 8) | view[pos + 3]
    pos += 4
    if flags & 0x01:
        raise MalformedPacket("CONNECT has the reserved flag set")
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if will_qos == 3:
        raise MalformedPacket("CONNECT asks for will QoS 3")
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("CONNECT sets will QoS or retain without a will")
    if has_password and not has_username:
        raise MalformedPacket("CONNECT has a password but no user name")
    client_id, pos = _read_text(view, pos, end, "CONNECT client identifier")
    will = None
    if has_will:
        will_topic, pos = _read_text(view, pos, end, "CONNECT will topic")
        if not will_topic or "+" in will_topic or "#" in will_topic:
            raise MalformedPacket(f"CONNECT will topic is empty or has a wildcard: {_show(will_topic)}")
        payload_start, pos = _read_length_prefixed(view, pos, end, "CONNECT will message")
        will = Will(will_topic, view[payload_start:pos].tobytes(), will_qos, will_retain)
    username = None
    if has_username:
        username, pos = _read_text(view, pos, end, "CONNECT user name")
    password = None
    if has_password:
        password_start, pos = _read_length_prefixed(view, pos, end, "CONNECT password")
        password = view[password_start:pos].tobytes()
    if pos != end:
        raise MalformedPacket(f"CONNECT has {end - pos} unexpected trailing bytes")
    return Connect(
        client_id=client_id,
        username=username,
        password=password,
        keepalive=keepalive,
        clean_session=bool(flags & 0x02),
        will=will,
        protocol_level=level,
    )


def _parse_subscribe(view: memoryview, pos: int, end: int) -> Subscribe:
    packet_id = _read_packet_id(view, pos, end, "SUBSCRIBE")
    pos += 2
    filters: list[tuple[str, int]] = []
    while pos < end:
        topic_filter, pos = _read_text(view, pos, end, "SUBSCRIBE topic filter")
        if not topic_filter:
            raise MalformedPacket("SUBSCRIBE has an empty topic filter")
        if pos >= end:
            raise MalformedPacket(f"SUBSCRIBE to {_show(topic_filter)} has no requested QoS")
        qos = view[pos]
        if qos > 2:
            raise MalformedPacket(f"SUBSCRIBE to {_show(topic_filter)} has invalid QoS byte {qos:#04x}")
        filters.append((topic_filter, qos))
        pos += 1
    if not filters:
        raise MalformedPacket("SUBSCRIBE has no topic filters")
    return Subscribe(packet_id, tuple(filters))


def _parse_unsubscribe(view: memoryview, pos: int, end: int) -> Unsubscribe:
    packet_id = _read_packet_id(view, pos, end, "UNSUBSCRIBE")
    pos += 2
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = _read_text(view, pos, end, "UNSUBSCRIBE topic filter")
        if not topic_filter:
            raise MalformedPacket("UNSUBSCRIBE has an empty topic filter")
        filters.append(topic_filter)
    if not filters:
        raise MalformedPacket("UNSUBSCRIBE has no topic filters")
    return Unsubscribe(packet_id, tuple(filters))


# --- encoders --------------------------------------------------------------------------------------


def _remaining_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > _MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {length} bytes exceeds the MQTT limit of {_MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        digit = length & 0x7F
        length >>= 7
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _encode_text(text: str, argument: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{argument} must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{argument} may not contain U+0000")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{argument} is not encodable as UTF-8 (lone surrogate)") from None
    if len(raw) > _MAX_STRING_BYTES:
        raise ValueError(f"{argument} is longer than {_MAX_STRING_BYTES} bytes of UTF-8")
    return len(raw).to_bytes(2, "big") + raw


def _encode_binary(data: bytes, argument: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{argument} must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > _MAX_STRING_BYTES:
        raise ValueError(f"{argument} is longer than {_MAX_STRING_BYTES} bytes")
    return len(raw).to_bytes(2, "big") + raw


def _check_packet_id(packet_id: int, argument: str = "packet_id") -> bytes:
    if isinstance(packet_id, bool) or not isinstance(packet_id, int):
        raise TypeError(f"{argument} must be an int, not {type(packet_id).__name__}")
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"{argument} must be between 1 and 65535, got {packet_id}")
    return packet_id.to_bytes(2, "big")


def _check_qos(qos: int, argument: str) -> int:
    if isinstance(qos, bool) or not isinstance(qos, int):
        raise TypeError(f"{argument} must be an int, not {type(qos).__name__}")
    if qos not in (0, 1, 2):
        raise ValueError(f"{argument} must be 0, 1 or 2, got {qos}")
    return qos


def _check_topic_name(topic: str, argument: str) -> bytes:
    encoded = _encode_text(topic, argument)
    if not topic:
        raise ValueError(f"{argument} may not be empty")
    if "+" in topic or "#" in topic:
        raise ValueError(f"{argument} may not contain the wildcards + or #: {topic!r}")
    return encoded


def encode_connect(
    client_id: str,
    username: str | None = None,
    password: bytes | str | None = None,
    keepalive: int = 60,
    clean_session: bool = True,
    will: Will | None = None,
    *,
    protocol_level: int = 4,
) -> bytes:
    """Encode a CONNECT packet (client to server).

    Args:
        client_id: the client identifier.
        username: the user name, or ``None`` to leave it out.
        password: the password (a ``str`` is sent as UTF-8), or ``None``; needs a user name.
        keepalive: the keep-alive interval in seconds, 0 to 65535.
        clean_session: the CleanSession flag.
        will: a last-will message, or ``None``.
        protocol_level: 4 for MQTT 3.1.1 (protocol name ``MQTT``) or 3 for MQTT 3.1 (``MQIsdp``).

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    if protocol_level == 4:
        header = b"\x00\x04MQTT\x04"
    elif protocol_level == 3:
        header = b"\x00\x06MQIsdp\x03"
    else:
        raise ValueError(f"protocol_level must be 3 or 4, got {protocol_level}")
    if isinstance(keepalive, bool) or not isinstance(keepalive, int):
        raise TypeError(f"keepalive must be an int, not {type(keepalive).__name__}")
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive must be between 0 and 65535, got {keepalive}")
    if password is not None and username is None:
        raise ValueError("password needs a username (MQTT 3.1.1 forbids a password alone)")
    flags = 0x02 if clean_session else 0
    parts = [_encode_text(client_id, "client_id")]
    if will is not None:
        flags |= 0x04 | (_check_qos(will.qos, "will.qos") << 3) | (0x20 if will.retain else 0)
        parts.append(_check_topic_name(will.topic, "will.topic"))
        parts.append(_encode_binary(will.payload, "will.payload"))
    if username is not None:
        flags |= 0x80
        parts.append(_encode_text(username, "username"))
    if password is not None:
        flags |= 0x40
        raw_password = password.encode("utf-8") if isinstance(password, str) else password
        parts.append(_encode_binary(raw_password, "password"))
    body = header + bytes((flags,)) + keepalive.to_bytes(2, "big") + b"".join(parts)
    return b"\x10" + _remaining_length(len(body)) + body


def encode_connack(session_present: bool, return_code: int) -> bytes:
    """Encode a CONNACK packet (server to client).

    Raises:
        ValueError: ``return_code`` is not 0 to 255, or ``session_present`` is set on a refusal.
    """
    if isinstance(return_code, bool) or not isinstance(return_code, int):
        raise TypeError(f"return_code must be an int, not {type(return_code).__name__}")
    if not 0 <= return_code <= 0xFF:
        raise ValueError(f"return_code must be between 0 and 255, got {return_code}")
    if session_present and return_code:
        raise ValueError("session_present must be False when return_code is not 0 (MQTT-3.2.2-4)")
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int | None = None,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """Encode a PUBLISH packet (either direction).

    Args:
        topic: the topic name; no wildcards.
        payload: the application message.
        qos: 0, 1 or 2.
        packet_id: 1 to 65535 for QoS 1 and 2; must be ``None`` for QoS 0.
        retain: the RETAIN flag.
        dup: the DUP flag (a re-delivery); not allowed with QoS 0.

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    encoded_topic = _check_topic_name(topic, "topic")
    _check_qos(qos, "qos")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    first = 0x30 | (qos << 1) | (0x01 if retain else 0)
    if qos:
        if packet_id is None:
            raise ValueError(f"packet_id is required for QoS {qos}")
        variable = encoded_topic + _check_packet_id(packet_id)
        if dup:
            first |= 0x08
    else:
        if packet_id is not None:
            raise ValueError("packet_id must be None for QoS 0")
        if dup:
            raise ValueError("dup must be False for QoS 0 (MQTT-3.3.1-2)")
        variable = encoded_topic
    return b"".join((bytes((first,)), _remaining_length(len(variable) + len(payload)), variable, payload))


def encode_puback(packet_id: int) -> bytes:
    """Encode a PUBACK packet (either direction)."""
    return b"\x40\x02" + _check_packet_id(packet_id)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """Encode a SUBSCRIBE packet (client to server) for ``(topic filter, QoS)`` pairs.

    Raises:
        ValueError: ``filters`` is empty, or a filter or QoS is invalid.
    """
    if not filters:
        raise ValueError("filters may not be empty")
    parts = [_check_packet_id(packet_id)]
    for index, (topic_filter, qos) in enumerate(filters):
        if not topic_filter:
            raise ValueError(f"filters[{index}] may not be an empty topic filter")
        parts.append(_encode_text(topic_filter, f"filters[{index}]"))
        parts.append(bytes((_check_qos(qos, f"filters[{index}] QoS"),)))
    body = b"".join(parts)
    return b"\x82" + _remaining_length(len(body)) + body


def encode_suback(packet_id: int, granted: Sequence[int]) -> bytes:
    """Encode a SUBACK packet (server to client): one of 0, 1, 2 or 0x80 per requested filter.

    Raises:
        ValueError: ``granted`` is empty or holds another value.
    """
    if not granted:
        raise ValueError("granted may not be empty")
    for index, code in enumerate(granted):
        if code not in _SUBACK_CODES:
            raise ValueError(f"granted[{index}] must be 0, 1, 2 or 0x80, got {code!r}")
    body = _check_packet_id(packet_id) + bytes(granted)
    return b"\x90" + _remaining_length(len(body)) + body


def encode_unsubscribe(packet_id: int, filters: Sequence[str]) -> bytes:
    """Encode an UNSUBSCRIBE packet (client to server).

    Raises:
        ValueError: ``filters`` is empty or holds an empty filter.
    """
    if not filters:
        raise ValueError("filters may not be empty")
    parts = [_check_packet_id(packet_id)]
    for index, topic_filter in enumerate(filters):
        if not topic_filter:
            raise ValueError(f"filters[{index}] may not be an empty topic filter")
        parts.append(_encode_text(topic_filter, f"filters[{index}]"))
    body = b"".join(parts)
    return b"\xa2" + _remaining_length(len(body)) + body


def encode_unsuback(packet_id: int) -> bytes:
    """Encode an UNSUBACK packet (server to client)."""
    return b"\xb0\x02" + _check_packet_id(packet_id)


def encode_pingreq() -> bytes:
    """Encode a PINGREQ packet (client to server)."""
    return b"\xc0\x00"


def encode_pingresp() -> bytes:
    """Encode a PINGRESP packet (server to client)."""
    return b"\xd0\x00"


def encode_disconnect() -> bytes:
    """Encode a DISCONNECT packet (client to server)."""
    return b"\xe0\x00"
