"""The emulator's MQTT surface: one server loop for every MQTT connection, and its two handlers.

Modules, one job each: :mod:`.connection` (:class:`MqttConnection`, the loop: CONNECT, deadlines,
reading, batching answers, writing, closing), :mod:`.server` (:func:`serve_mqtt`: the loop with the
handler a CONNECT asks for), :mod:`.device` (:class:`DeviceHandler`, IoT Hub's
device and module rules) and :mod:`.dps` (:class:`DpsHandler`, the Device Provisioning Service's).
A connection's CONNECT username picks its handler.

It may import :mod:`aioiothub.emulator.hub` (the state and rules it applies), the listeners'
:class:`~aioiothub.emulator.listeners.PeerInfo`, and the shared protocol core below the emulator;
nothing here knows sockets or TLS, so the same loop serves any byte stream.
"""

from __future__ import annotations

from aioiothub.emulator.mqtt.connection import CONNECT_TIMEOUT, MAX_BYTES_BEFORE_CONNECT, WRITE_TIMEOUT, MqttConnection
from aioiothub.emulator.mqtt.server import serve_mqtt

__all__ = ["CONNECT_TIMEOUT", "MAX_BYTES_BEFORE_CONNECT", "WRITE_TIMEOUT", "MqttConnection", "serve_mqtt"]
