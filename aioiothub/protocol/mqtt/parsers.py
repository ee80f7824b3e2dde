"""The two directions of the MQTT codec: :class:`MqttServerCodec` and :class:`MqttClientCodec`.

:class:`MqttServerCodec` reads what a client sends (the emulator's side); :class:`MqttClientCodec`
reads what a server sends (the native client transport's side, and the tests' raw clients). Both
refuse anything MQTT 3.1.1 forbids with :class:`MalformedPacket`, after which the codec stays
broken: the connection must be closed.

Both are incremental: ``feed`` takes bytes as they arrive and returns every packet they complete
(the framing, in :mod:`.framing`, is shared). The packets that are not on the hot path -- CONNECT,
SUBSCRIBE, UNSUBSCRIBE, CONNACK, SUBACK and the rest -- are decoded and checked here.
"""

from __future__ import annotations

from typing import Final

from aioiothub.protocol.mqtt.framing import (
    PacketReader,
    expect_flags,
    expect_length,
    make_instance,
    read_length_prefixed,
    read_packet_id,
    read_text,
    show,
    write_puback_id,
)
from aioiothub.protocol.mqtt.packets import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PACKET_NAMES,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBACK_CODES,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    ClientBoundPacket,
    ConnAck,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)

__all__ = ["MqttClientCodec", "MqttServerCodec"]

#: CONNACK return code for a protocol level the server does not speak (MQTT-3.1.2-2).
_UNACCEPTABLE_PROTOCOL_VERSION: Final = 1

_SUPPORTED_PROTOCOLS: Final = {"MQTT": 4, "MQIsdp": 3}


class MqttServerCodec(PacketReader):
    """Parses the bytes a client sends to a server.

    Args:
        max_packet_size: the largest packet accepted, fixed header included; a larger one is refused
            with reason "packet too large" as soon as its fixed header has arrived.
    """

    _accepted_types = frozenset({CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT})

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
        if packet_type == PUBACK:
            expect_flags(flags, 0, packet_type)
            expect_length(end - start, 2, packet_type)
            packet = make_instance(PubAck)
            write_puback_id(packet, read_packet_id(view, start, end, "PUBACK"))
            return packet
        if packet_type == PINGREQ:
            expect_flags(flags, 0, packet_type)
            expect_length(end - start, 0, packet_type)
            return PingReq()
        if packet_type == SUBSCRIBE:
            expect_flags(flags, 0b0010, packet_type)
            return _parse_subscribe(view, start, end)
        if packet_type == UNSUBSCRIBE:
            expect_flags(flags, 0b0010, packet_type)
            return _parse_unsubscribe(view, start, end)
        if packet_type == CONNECT:
            expect_flags(flags, 0, packet_type)
            return _parse_connect(view, start, end)
        if packet_type == DISCONNECT:
            expect_flags(flags, 0, packet_type)
            expect_length(end - start, 0, packet_type)
            return Disconnect()
        raise MalformedPacket(f"{PACKET_NAMES[packet_type]} may not be sent by a client")


class MqttClientCodec(PacketReader):
    """Parses the bytes a server sends to a client (the native transport, tests and benchmarks).

    Args:
        max_packet_size: the largest packet accepted, fixed header included.
    """

    _accepted_types = frozenset({CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK, PINGRESP})

    def feed(self, data: bytes | bytearray | memoryview) -> list[ClientBoundPacket]:
        """Add received bytes and return every packet they complete, in order.

        Raises:
            MalformedPacket: the bytes break MQTT 3.1.1; the codec refuses all further input.
        """
        return self._feed(data)  # type: ignore[return-value]

    def _parse_other(self, first: int, view: memoryview, start: int, end: int) -> object:
        packet_type = first >> 4
        if packet_type not in self._accepted_types:
            raise MalformedPacket(f"{PACKET_NAMES[packet_type]} may not be sent by a server")
        # Every packet a server sends but PUBLISH (parsed before this) has its flags reserved as 0.
        expect_flags(first & 0x0F, 0, packet_type)
        length = end - start
        if packet_type == CONNACK:
            expect_length(length, 2, packet_type)
            acknowledge_flags = view[start]
            if acknowledge_flags & 0xFE:
                raise MalformedPacket(f"CONNACK has reserved acknowledge flags {acknowledge_flags:#04x}")
            return ConnAck(session_present=bool(acknowledge_flags), return_code=view[start + 1])
        if packet_type == SUBACK:
            packet_id = read_packet_id(view, start, end, "SUBACK")
            granted = tuple(view[start + 2 : end])
            if not granted:
                raise MalformedPacket("SUBACK has no return codes")
            for code in granted:
                if code not in SUBACK_CODES:
                    raise MalformedPacket(f"SUBACK has invalid return code {code:#04x}")
            return SubAck(packet_id, granted)
        if packet_type == PINGRESP:
            expect_length(length, 0, packet_type)
            return PingResp()
        # PUBACK and UNSUBACK: nothing but the packet identifier.
        expect_length(length, 2, packet_type)
        packet_id = read_packet_id(view, start, end, PACKET_NAMES[packet_type])
        return PubAck(packet_id) if packet_type == PUBACK else UnsubAck(packet_id)


def _parse_connect(view: memoryview, pos: int, end: int) -> Connect:
    protocol_name, pos = read_text(view, pos, end, "CONNECT protocol name")
    if protocol_name not in _SUPPORTED_PROTOCOLS:
        raise MalformedPacket(f"CONNECT has unknown protocol name {show(protocol_name)}")
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
    client_id, pos = read_text(view, pos, end, "CONNECT client identifier")
    will = None
    if has_will:
        will_topic, pos = read_text(view, pos, end, "CONNECT will topic")
        if not will_topic or "+" in will_topic or "#" in will_topic:
            raise MalformedPacket(f"CONNECT will topic is empty or has a wildcard: {show(will_topic)}")
        payload_start, pos = read_length_prefixed(view, pos, end, "CONNECT will message")
        will = Will(will_topic, view[payload_start:pos].tobytes(), will_qos, will_retain)
    username = None
    if has_username:
        username, pos = read_text(view, pos, end, "CONNECT user name")
    password = None
    if has_password:
        password_start, pos = read_length_prefixed(view, pos, end, "CONNECT password")
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
    packet_id = read_packet_id(view, pos, end, "SUBSCRIBE")
    pos += 2
    filters: list[tuple[str, int]] = []
    while pos < end:
        topic_filter, pos = read_text(view, pos, end, "SUBSCRIBE topic filter")
        if not topic_filter:
            raise MalformedPacket("SUBSCRIBE has an empty topic filter")
        if pos >= end:
            raise MalformedPacket(f"SUBSCRIBE to {show(topic_filter)} has no requested QoS")
        qos = view[pos]
        if qos > 2:
            raise MalformedPacket(f"SUBSCRIBE to {show(topic_filter)} has invalid QoS byte {qos:#04x}")
        filters.append((topic_filter, qos))
        pos += 1
    if not filters:
        raise MalformedPacket("SUBSCRIBE has no topic filters")
    return Subscribe(packet_id, tuple(filters))


def _parse_unsubscribe(view: memoryview, pos: int, end: int) -> Unsubscribe:
    packet_id = read_packet_id(view, pos, end, "UNSUBSCRIBE")
    pos += 2
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_text(view, pos, end, "UNSUBSCRIBE topic filter")
        if not topic_filter:
            raise MalformedPacket("UNSUBSCRIBE has an empty topic filter")
        filters.append(topic_filter)
    if not filters:
        raise MalformedPacket("UNSUBSCRIBE has no topic filters")
    return Unsubscribe(packet_id, tuple(filters))
