"""Upload a file to the hub's storage account, with progress, then list what the hub was told.

With ``IOTHUB_DEVICE_CONNECTION_STRING`` set it uploads ``upload_file.py`` itself to that hub;
otherwise the embedded emulator (and its blob store) stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

import aioiothub
from aioiothub.emulator import Emulator

SOURCE = Path(__file__)


def show_progress(done: int, total: int | None) -> None:
    print(f"uploaded {done} of {total} bytes")


async def main() -> None:
    connection_string = os.environ.get("IOTHUB_DEVICE_CONNECTION_STRING")
    if connection_string:
        client = aioiothub.IoTHubDeviceClient.from_connection_string(connection_string)
        await client.upload_file("examples/upload_file.py", SOURCE, content_type="text/x-python")
        return
    async with Emulator() as hub:
        device = hub.add_device("uploader")
        # The emulator serves REST on its WebSocket port, as IoT Hub serves both on 443.
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
        )
        await client.upload_file(
            "examples/upload_file.py", SOURCE, content_type="text/x-python", chunk_size=1024, progress=show_progress
        )
        for record in hub.uploads("uploader"):
            content = await hub.upload_content(record)
            print(f"the hub was notified: {record.blob_name} success={record.is_success} ({len(content)} bytes)")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
