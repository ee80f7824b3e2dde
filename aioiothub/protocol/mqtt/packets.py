"""The MQTT 3.1.1 packets as frozen dataclasses, the limits and packet type numbers, and :class:`MalformedPacket`.

These are the values both directions of the codec share: what the parsers in :mod:`.parsers`
yield, what the encoders in :mod:`.encoders` check against, and the error raised for bytes that
break the protocol.
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
]

#: IoT Hub accepts telemetry of up to 256 KiB of body and properties; the rest leaves room for the
#: topic (which carries the properties) and headers.
DEFAULT_MAX_PACKET_SIZE: Final = 300 * 1024

MAX_REMAINING_LENGTH: Final = 268_435_455

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PACKET_NAMES: Final = {
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

SUBACK_CODES: Final = frozenset({0, 1, 2, 0x80})


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
