"""Entry script: an unmodified official Edge module, created with ``create_from_edge_environment()``.

Run with the peer virtual environment's interpreter and the emulator's Edge environment variables;
pytest does not collect it. It connects to edgeHub (the emulator, on 8883), sends ``from sdk`` to
output ``out1``, waits for one input message, invokes method ``reboot`` on device ``sensor`` over
HTTPS (443), and reports each step as one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from azure.iot.device import Message
from azure.iot.device.aio import IoTHubModuleClient

STEP_TIMEOUT = 30


def report(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main() -> None:
    client = IoTHubModuleClient.create_from_edge_environment()
    inputs: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def on_message(message: Any) -> None:
        loop.call_soon_threadsafe(inputs.put_nowait, message)

    await asyncio.wait_for(client.connect(), STEP_TIMEOUT)
    client.on_message_received = on_message
    report(step="connected")
    await asyncio.wait_for(client.send_message_to_output(Message("from sdk"), "out1"), STEP_TIMEOUT)
    message = await asyncio.wait_for(inputs.get(), STEP_TIMEOUT)
    data = message.data.decode() if isinstance(message.data, bytes) else message.data
    report(step="input", input_name=message.input_name, data=data)
    params = {"methodName": "reboot", "payload": {"delay": 1}, "connectTimeoutInSeconds": 5,
              "responseTimeoutInSeconds": 10}
    result = await asyncio.wait_for(client.invoke_method(params, "sensor"), STEP_TIMEOUT)
    report(step="method", result=result)
    await asyncio.wait_for(client.shutdown(), STEP_TIMEOUT)
    report(step="done")


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
