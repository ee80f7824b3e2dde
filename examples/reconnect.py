"""Connection states, automatic reconnects and at-least-once telemetry.

Run it with no arguments to use the embedded emulator, which drops the connection halfway
through; the client reconnects with back-off and nothing is lost. With
``IOTHUB_DEVICE_CONNECTION_STRING`` set it talks to a real hub (unplug the network to see it).
"""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub

MESSAGES = 10


async def main() -> None:
    policy = aioiothub.ReconnectPolicy(initial_delay=0.2, max_delay=10, max_attempts=None)
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, reconnect=policy, **options) as client,
        anyio.create_task_group() as tasks,
    ):
        went_down, came_back = anyio.Event(), anyio.Event()

        async def watch() -> None:
            async for up in client.connection_states():  # the state now, then each change
                print("connection", "up" if up else "down")
                if not up:
                    went_down.set()
                elif went_down.is_set():
                    came_back.set()

        tasks.start_soon(watch)
        for number in range(MESSAGES):
            if number == MESSAGES // 2 and hub is not None:
                hub.drop_connection("example-device")  # the network fails
                with anyio.fail_after(60):
                    await came_back.wait()
            await client.send_message({"n": number})  # waits for the connection, then for the PUBACK
        print("sent", MESSAGES, "messages")
        if hub is not None:
            received = {record.json()["n"] for record in hub.telemetry("example-device")}
            print("the emulator has all of them:", received == set(range(MESSAGES)))
        tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
