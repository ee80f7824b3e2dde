"""Sans-IO MQTT 3.1.1 codec for both roles: packets as frozen dataclasses, bytes in, bytes out.

The codec is split by job: :mod:`.packets` holds the packet dataclasses, limits and
:class:`MalformedPacket`; :mod:`.framing` the buffering and fixed-header loop both directions share
(its docstring tells how a byte stream is cut into packets); :mod:`.parsers` the two incremental
parsers, :class:`MqttServerCodec` for what a client sends and :class:`MqttClientCodec` for what a
server sends; :mod:`.encoders` the ``encode_*`` functions that build packets for either direction.
Above the codec, :mod:`.client_session` is the client role's state machine (packet ids, what is in
flight, CONNACK and SUBACK, keep-alive, the QoS and acknowledgement rules) that both transports
drive, with its events in :mod:`.client_events`. Every public name is importable from this package.
"""

from __future__ import annotations

from aioiothub.protocol.mqtt.client_events import (
    SUBACK_FAILURE,
    ConnectionAccepted,
    ConnectionRefused,
    LinkDead,
    PingDue,
    ProtocolViolation,
    SubscribeAcknowledged,
    check_publish_qos,
    connack_refused,
)
from aioiothub.protocol.mqtt.client_session import MAX_PACKET_ID, ClientSession, SessionEvent, SessionState
from aioiothub.protocol.mqtt.encoders import (
    encode_connack,
    encode_connect,
    encode_disconnect,
    encode_pingreq,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
    encode_subscribe,
    encode_unsuback,
    encode_unsubscribe,
)
from aioiothub.protocol.mqtt.packets import (
    DEFAULT_MAX_PACKET_SIZE,
    ClientBoundPacket,
    ConnAck,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from aioiothub.protocol.mqtt.parsers import MqttClientCodec, MqttServerCodec

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "MAX_PACKET_ID",
    "SUBACK_FAILURE",
    "ClientBoundPacket",
    "ClientSession",
    "ConnAck",
    "Connect",
    "ConnectionAccepted",
    "ConnectionRefused",
    "Disconnect",
    "LinkDead",
    "MalformedPacket",
    "MqttClientCodec",
    "MqttServerCodec",
    "Packet",
    "PingDue",
    "PingReq",
    "PingResp",
    "ProtocolViolation",
    "PubAck",
    "Publish",
    "SessionEvent",
    "SessionState",
    "SubAck",
    "Subscribe",
    "SubscribeAcknowledged",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "check_publish_qos",
    "connack_refused",
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
