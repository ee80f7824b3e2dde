"""MQTT over WebSocket (port 443), for networks that let only HTTPS out.

Run it with no arguments to use the embedded emulator's WebSocket listener, or set
``IOTHUB_DEVICE_CONNECTION_STRING`` to talk to a real hub on port 443.
"""

from __future__ import annotations

import os

import anyio

import aioiothub
from aioiothub.emulator import Emulator


async def main() -> None:
    connection_string = os.environ.get("IOTHUB_DEVICE_CONNECTION_STRING")
    if connection_string:
        async with aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, websockets=True) as client:
            await client.send_message({"over": "websocket"})
            print("sent a message over MQTT/WebSocket")
        return
    async with Emulator() as hub:  # TLS and WebSocket listeners on free ports
        device = hub.add_device("websocket-device")
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, websockets=True, port=hub.websocket_port, ssl_context=hub.client_ssl_context()
        ) as client:
            await client.send_message({"over": "websocket"})
        record = (await hub.wait_for_telemetry(1, device_id="websocket-device"))[0]
        print("the emulator received over MQTT/WebSocket:", record.body.decode())


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
