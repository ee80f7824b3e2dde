"""Device twin and direct methods: report state, follow desired changes, answer a method."""

from __future__ import annotations

import anyio
from _hub import device_options

import aioiothub


async def serve(client: aioiothub.IoTHubDeviceClient, done: anyio.Event) -> None:
    async for request in client.method_requests():
        print("method", request.name, request.payload)
        await request.respond(200, {"accepted": request.name})
        done.set()


async def follow(client: aioiothub.IoTHubDeviceClient, done: anyio.Event) -> None:
    async for patch in client.desired_property_patches():
        print("desired patch", patch)
        # Acknowledge a writable property the Plug and Play way.
        if "interval" in patch:
            await client.update_reported_properties(
                {"interval": {"value": patch["interval"], "ac": 200, "av": patch["$version"]}}
            )
        done.set()


async def main() -> None:
    async with (
        device_options() as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options) as client,
    ):
        twin = await client.get_twin()
        print("desired:", twin.desired, "reported:", twin.reported)
        version = await client.update_reported_properties({"firmware": "1.2.0"})
        print("reported $version is now", version)
        method_done, patch_done = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, client, method_done)
            tasks.start_soon(follow, client, patch_done)
            if hub is not None:
                # Play the solution back end.
                await hub.wait_subscribed("example-device", "$iothub/methods/POST/#")
                await hub.wait_subscribed("example-device", "$iothub/twin/PATCH/properties/desired/#")
                await hub.update_desired("example-device", {"interval": 30})
                result = await hub.invoke_method("example-device", "reboot", {"delay": 0}, timeout=10)
                print("back end saw", result.status, result.payload)
            with anyio.fail_after(60):
                await method_done.wait()
                await patch_done.wait()
            tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
