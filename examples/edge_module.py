"""An IoT Edge style module: read an input, forward to an output."""

from __future__ import annotations

import os

import anyio

import aioiothub
from aioiothub.emulator import Emulator


async def pipe(module: aioiothub.IoTHubModuleClient, count: int) -> None:
    forwarded = 0
    async for message in module.input_messages("input1"):
        print("input", message.input_name, message.body)
        await module.send_message_to_output(aioiothub.Message(message.body.upper()), "output1")
        forwarded += 1
        if forwarded == count:
            return


async def main() -> None:
    connection_string = os.environ.get("IOTHUB_MODULE_CONNECTION_STRING")
    if connection_string:
        async with aioiothub.IoTHubModuleClient.from_connection_string(connection_string) as module:
            await pipe(module, count=10)
        return
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("edge-device")
        identity = hub.add_module("edge-device", "filter")
        async with aioiothub.IoTHubModuleClient.from_connection_string(
            identity.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as module, anyio.create_task_group() as tasks:
            tasks.start_soon(pipe, module, 2)
            await hub.wait_subscribed("edge-device", "devices/edge-device/modules/filter/inputs/#", module_id="filter")
            for body in (b"first", b"second"):
                await hub.send_to_input("edge-device", "filter", "input1", body)
        records = hub.telemetry("edge-device", "filter")
        outputs = [(record.system_properties.get("$.on"), record.body) for record in records]
        print("the hub received", outputs)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
