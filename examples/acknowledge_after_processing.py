"""Acknowledge a cloud-to-device message only once it is processed: a crash before that loses nothing.

With ``ack="manual"`` the hub keeps a message until ``await message.acknowledge()``; if the
connection ends first, the hub delivers it again. Run it with no arguments to use the embedded
emulator, which drops the connection while the first delivery is being processed; with
``IOTHUB_DEVICE_CONNECTION_STRING`` set it waits for one message from that hub.
"""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub


async def main() -> None:
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options) as client,
    ):
        if hub is not None:
            await hub.send_c2d("example-device", b"job 1")
        deliveries = 0
        with anyio.fail_after(60):
            async for message in client.cloud_messages(ack="manual"):
                deliveries += 1
                print(f"delivery {deliveries}: processing {message.body!r}")
                if hub is not None and deliveries == 1:
                    # The device "crashes" here: its connection ends before the acknowledgement.
                    hub.drop_connection("example-device")
                    print("  the connection dropped before the message was acknowledged")
                    continue
                print("  processed; acknowledged:", await message.acknowledge())
                break
        if hub is not None:
            await client.get_twin()  # one round trip: the hub has taken the acknowledgement before it answers
            print("messages the hub still holds:", hub.c2d_queue_length("example-device"))


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
