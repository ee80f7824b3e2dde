"""Sans-IO MQTT 3.1.1 codec for both roles: packets as frozen dataclasses, bytes in, bytes out.

The codec is split by job: :mod:`.packets` holds the packet dataclasses, limits and
:class:`MalformedPacket`; :mod:`.framing` the buffering and fixed-header loop both directions share
(its docstring tells how a byte stream is cut into packets); :mod:`.parsers` the two incremental
parsers, :class:`MqttServerCodec` for what a client sends and :class:`MqttClientCodec` for what a
server sends; :mod:`.encoders` the ``encode_*`` functions that build packets for either direction.
Every public name is importable from this package.
"""

from __future__ import annotations

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
