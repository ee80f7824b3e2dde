"""Framing shared by both directions of the MQTT codec: buffering, fixed headers, the size limit and PUBLISH.

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

The PUBLISH and PUBACK packets (telemetry and its acknowledgements, the hot path) are parsed inline
in that loop; every other packet type goes to the ``_parse_other`` of the direction's parser in
:mod:`.parsers`, which decodes its fields with the helpers here. Once a packet is malformed the
reader keeps raising the same :class:`~.packets.MalformedPacket`.
"""

from __future__ import annotations

from aioiothub.protocol.mqtt.packets import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_REMAINING_LENGTH,
    PACKET_NAMES,
    PUBLISH,
    MalformedPacket,
    PubAck,
    Publish,
)

__all__: list[str] = []

# A frozen dataclass __init__ sets each field through object.__setattr__, which costs about a
# microsecond per PUBLISH; the slot descriptors do the same job at a fraction of the cost on the
# hot path, giving an instance equal in every way to one built by the constructor.
make_instance = object.__new__
_set_topic = Publish.__dict__["topic"].__set__
_set_payload = Publish.__dict__["payload"].__set__
_set_qos = Publish.__dict__["qos"].__set__
_set_retain = Publish.__dict__["retain"].__set__
_set_dup = Publish.__dict__["dup"].__set__
_set_packet_id = Publish.__dict__["packet_id"].__set__
write_puback_id = PubAck.__dict__["packet_id"].__set__


def show(raw: bytes | bytearray | memoryview | str, limit: int = 100) -> str:
    """A bounded repr of peer-supplied text for error messages."""
    text = repr(raw if isinstance(raw, str) else bytes(raw))
    return text if len(text) <= limit else text[:limit] + "..."


def _decode_text(view: memoryview, start: int, end: int, what: str) -> str:
    """Decode an MQTT UTF-8 string body; invalid UTF-8, surrogates and U+0000 are malformed."""
    try:
        text = str(view[start:end], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not valid UTF-8: {show(view[start:end])}") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000: {show(text)}")
    return text


def read_length_prefixed(view: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Return ``(start, stop)`` of a two-byte-length-prefixed field at ``pos``, checked against ``end``."""
    if pos + 2 > end:
        raise MalformedPacket(f"{what} is truncated")
    start = pos + 2
    stop = start + ((view[pos] << 8) | view[pos + 1])
    if stop > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return start, stop


def read_text(view: memoryview, pos: int, end: int, what: str) -> tuple[str, int]:
    start, stop = read_length_prefixed(view, pos, end, what)
    return _decode_text(view, start, stop, what), stop


def read_packet_id(view: memoryview, pos: int, end: int, name: str) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"{name} packet identifier is truncated")
    packet_id = (view[pos] << 8) | view[pos + 1]
    if packet_id == 0:
        raise MalformedPacket(f"{name} has packet identifier 0")
    return packet_id


def expect_flags(flags: int, expected: int, packet_type: int) -> None:
    if flags != expected:
        raise MalformedPacket(f"{PACKET_NAMES[packet_type]} has reserved flags {flags:#06b}, expected {expected:#06b}")


def expect_length(length: int, expected: int, packet_type: int) -> None:
    if length != expected:
        raise MalformedPacket(f"{PACKET_NAMES[packet_type]} has remaining length {length}, expected {expected}")


class PacketReader:
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
        if not 2 <= max_packet_size <= MAX_REMAINING_LENGTH + 5:
            raise ValueError(f"max_packet_size must be between 2 and {MAX_REMAINING_LENGTH + 5}")
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
        new_object, publish_class = make_instance, Publish
        set_topic, set_payload, set_qos = _set_topic, _set_payload, _set_qos
        set_retain, set_dup, set_packet_id = _set_retain, _set_dup, _set_packet_id
        puback_class, set_puback_id = PubAck, write_puback_id
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
                    f"packet too large: {PACKET_NAMES[first >> 4]} of {end - pos} bytes, limit {max_packet_size}"
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
            elif first >> 4 == PUBLISH:
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
                        f"PUBLISH topic is not valid UTF-8: {show(view[start + 2 : topic_end])}"
                    ) from None
                if "+" in topic or "#" in topic or "\x00" in topic:
                    raise MalformedPacket(f"PUBLISH topic contains a wildcard or U+0000: {show(topic)}")
                packet = new_object(publish_class)
                if qos:
                    if topic_end + 2 > end:
                        raise MalformedPacket(f"PUBLISH to {show(topic)} has no packet identifier")
                    packet_id = (view[topic_end] << 8) | view[topic_end + 1]
                    if packet_id == 0:
                        raise MalformedPacket(f"PUBLISH to {show(topic)} has packet identifier 0")
                    set_packet_id(packet, packet_id)
                    set_payload(packet, view[topic_end + 2 : end].tobytes())
                    set_dup(packet, bool(first & 0x08))
                else:
                    if first & 0x08:
                        raise MalformedPacket(f"QoS 0 PUBLISH to {show(topic)} has the DUP flag set")
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
