"""What the client recovers from on its own, on ``client.errors()``; a will the hub sends if the
device vanishes; a retained message.

Run it with no arguments to use the embedded emulator, which drops the connection: the client
reports the drop, reconnects, and the hub sends the device's will as its telemetry. With
``IOTHUB_DEVICE_CONNECTION_STRING`` set it sends one retained message to that hub.
"""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub

DEVICE = "example-device"


async def main() -> None:
    will = aioiothub.Message.json({"state": "offline"}, properties={"reason": "connection-lost"})
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, will=will, **options) as client,
        anyio.create_task_group() as tasks,
    ):
        dropped = anyio.Event()

        async def watch_errors() -> None:
            async for error in client.errors():
                print("recovered from:", type(error).__name__, "-", error)
                if isinstance(error, aioiothub.ConnectionDropped):
                    dropped.set()

        tasks.start_soon(watch_errors)
        # RETAIN: IoT Hub stores nothing; it forwards the message with "mqtt-retain: true".
        await client.send_message({"firmware": "1.2.0"}, retain=True)
        if hub is not None:
            (retained,) = await hub.wait_for_telemetry(1, device_id=DEVICE, timeout=30)
            print("the hub got", retained.json(), "with", dict(retained.properties))
            hub.drop_connection(DEVICE)  # the network fails: no DISCONNECT from the client
            with anyio.fail_after(60):
                await dropped.wait()
                await client.wait_connected()
            records = await hub.wait_for_telemetry(2, device_id=DEVICE, timeout=30)
            print("the hub sent the will:", records[-1].json(), dict(records[-1].properties))
        tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
