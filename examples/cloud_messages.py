"""Receive cloud-to-device messages; each is completed when the loop takes it."""

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
            for number in range(3):
                await hub.send_c2d("example-device", f"command {number}".encode(), properties={"n": str(number)})
        received = 0
        with anyio.fail_after(60):
            async for message in client.cloud_messages():
                print("received", message.body, dict(message.properties), message.message_id)
                received += 1
                if received == 3:
                    break


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
