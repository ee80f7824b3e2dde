"""Send telemetry: a JSON reading every second, with properties, and a burst sent concurrently."""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub


async def main() -> None:
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options) as client,
    ):
        for reading in range(3):
            await client.send_message({"temperature": 20 + reading})
            print("sent reading", reading)
        alert = aioiothub.Message.json({"level": "high"}, message_id="alert-1", properties={"severity": "2"})
        await client.send_message(alert)
        # Concurrent sends share the one connection; each returns after its PUBACK.
        async with anyio.create_task_group() as tasks:
            for number in range(100):
                tasks.start_soon(client.send_message, f"sample {number}")
        print("sent 100 samples concurrently")
        if hub is not None:
            print("the emulator received", len(hub.telemetry()), "messages")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
