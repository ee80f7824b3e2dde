"""An IoT Edge module: read an input, forward it upper-cased to an output.

Inside the Edge runtime (``IOTEDGE_*`` set) it runs as the module it is deployed as. Without it, it
starts the embedded emulator, which plays the Edge runtime: a workload API for the module's tokens
and trust bundle, and edgeHub for its messages.
"""

from __future__ import annotations

import os

import anyio

import aioiothub
from aioiothub.emulator import Emulator


async def pipe(module: aioiothub.IoTHubModuleClient, count: int | None) -> None:
    forwarded = 0
    async for message in module.input_messages("input1"):
        print("input", message.input_name, message.body)
        await module.send_message_to_output(aioiothub.Message(message.body.upper()), "output1")
        forwarded += 1
        if forwarded == count:
            return


async def main() -> None:
    if os.environ.get("IOTEDGE_WORKLOADURI"):
        module = await aioiothub.IoTHubModuleClient.from_edge_environment()
        async with module:
            await pipe(module, count=None)
        return
    async with Emulator(websocket_port=None) as hub:
        env = await hub.edge_environment("edge-device", "filter")
        # The Edge runtime's edgeHub listens on 8883; the emulator's port is a free one.
        module = await aioiothub.IoTHubModuleClient.from_edge_environment(environ=env.variables, port=hub.port)
        async with module, anyio.create_task_group() as tasks:
            tasks.start_soon(pipe, module, 2)
            await hub.wait_subscribed("edge-device", "devices/edge-device/modules/filter/inputs/#", module_id="filter")
            for body in (b"first", b"second"):
                await hub.send_to_input("edge-device", "filter", "input1", body)
        records = hub.telemetry("edge-device", "filter")
        outputs = [(record.system_properties.get("$.on"), record.body) for record in records]
        print("the hub received", outputs)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
