"""Serving one MQTT byte stream: the loop with the handler its CONNECT asks for.

:func:`serve_mqtt` is what the listeners run for every MQTT-over-TLS or MQTT-over-WebSocket
connection once its handshake is done, and what :meth:`Emulator.serve_stream
<aioiothub.emulator.Emulator.serve_stream>` runs for an in-memory stream.
"""

from __future__ import annotations

import anyio.abc

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.listeners import PeerInfo
from aioiothub.emulator.mqtt.connection import MqttConnection, PacketHandler
from aioiothub.emulator.mqtt.device import DeviceHandler
from aioiothub.emulator.mqtt.dps import DpsHandler
from aioiothub.protocol.mqtt import Connect

__all__ = ["serve_mqtt"]


async def serve_mqtt(hub: Hub, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
    """Serve one MQTT connection until it ends; returns normally whatever the client did."""

    def handler_for(connection: MqttConnection, connect: Connect) -> PacketHandler:
        if hub.dps.claims(connect.username):
            return DpsHandler(hub.dps, connection)
        return DeviceHandler(hub.core, connection)

    await MqttConnection(hub.core, stream, peer, handler_for).run()
