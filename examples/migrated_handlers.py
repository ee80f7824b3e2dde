"""A handler-style azure-iot-device program rewritten with ``async for``: telemetry on a schedule
while cloud-to-device messages, direct methods, desired-property patches and connection changes
are each handled by a loop of their own.

Run it with no arguments to use the embedded emulator (which then plays the solution's back end),
or set ``IOTHUB_DEVICE_CONNECTION_STRING`` to talk to a real hub.
"""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub
from aioiothub.emulator import Emulator

READINGS = 5


async def main() -> None:
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options) as client,
    ):
        handled: list[str] = []
        all_handled = anyio.Event()

        def note(kind: str) -> None:
            handled.append(kind)
            if len(handled) == 3:
                all_handled.set()

        async def cloud_messages() -> None:
            async for message in client.cloud_messages():
                print("C2D", message.body, dict(message.properties))
                note("c2d")

        async def methods() -> None:
            async for request in client.method_requests():
                print("method", request.name, request.payload)
                await request.respond(200, {"ok": True})
                note("method")

        async def desired() -> None:
            async for patch in client.desired_property_patches():
                print("desired", patch)
                note("desired")

        async def states() -> None:
            async for up in client.connection_states():
                print("connected" if up else "disconnected")

        async with anyio.create_task_group() as tasks:
            for handler in (cloud_messages, methods, desired, states):
                tasks.start_soon(handler)
            if hub is not None:
                tasks.start_soon(play_back_end, hub)
            for reading in range(READINGS):
                await client.send_message({"temperature": 21.5 + reading})
                print("sent reading", reading)
                await anyio.sleep(1)
            if hub is not None:
                with anyio.fail_after(60):
                    await all_handled.wait()
            tasks.cancel_scope.cancel()
        print("handled", sorted(handled))


async def play_back_end(hub: Emulator) -> None:
    """What the solution does, when the emulator stands in for the hub."""
    device_id = "example-device"
    for subscription in (
        "$iothub/methods/POST/#",
        "$iothub/twin/PATCH/properties/desired/#",
        f"devices/{device_id}/messages/devicebound/#",
    ):
        await hub.wait_subscribed(device_id, subscription)
    await hub.send_c2d(device_id, b"hello", properties={"priority": "high"})
    await hub.invoke_method(device_id, "reboot", {"delay": 0}, timeout=10)
    await hub.update_desired(device_id, {"interval": 10})


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
