"""Direct methods by name: one loop per method, and one for every method no loop asked for.

Run it with no arguments to use the embedded emulator, which invokes ``reboot`` and ``getStatus``;
with ``IOTHUB_DEVICE_CONNECTION_STRING`` set it serves that hub's method calls until two arrived.
"""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub


async def main() -> None:
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options) as client,
        anyio.create_task_group() as tasks,
    ):
        served = anyio.Semaphore(0)

        async def reboots() -> None:
            async for request in client.method_requests("reboot"):
                await request.respond(200, {"rebooting": True, "delay": request.payload})
                served.release()

        async def everything_else() -> None:
            async for request in client.method_requests():
                await request.respond(404, {"error": f"unknown method {request.name}"})
                served.release()

        tasks.start_soon(reboots)
        tasks.start_soon(everything_else)
        if hub is not None:
            await hub.wait_subscribed("example-device", "$iothub/methods/POST/#")
            for name in ("reboot", "getStatus"):
                result = await hub.invoke_method("example-device", name, 5, timeout=10)
                print(f"{name} returned {result.status} {result.payload}")
        with anyio.fail_after(600):
            for _ in range(2):
                await served.acquire()
        tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
