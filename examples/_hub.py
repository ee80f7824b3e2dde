"""Shared by the examples: a real hub from the environment, or the embedded emulator."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aioiothub.emulator import Emulator


@asynccontextmanager
async def device_options(
    device_id: str = "example-device",
) -> AsyncIterator[tuple[str, dict[str, Any], Emulator | None]]:
    """Yield (connection string, client options, emulator or None).

    With ``IOTHUB_DEVICE_CONNECTION_STRING`` set, the example talks to that hub (on the port
    ``IOTHUB_PORT`` when set, 8883 otherwise); otherwise it starts the embedded emulator and
    registers a device there.
    """
    connection_string = os.environ.get("IOTHUB_DEVICE_CONNECTION_STRING")
    if connection_string:
        # The standalone emulator moves off 8883 when that port is taken. Its CA needs no option:
        # the client's default TLS context reads SSL_CERT_FILE.
        port = os.environ.get("IOTHUB_PORT")
        yield connection_string, {"port": int(port)} if port else {}, None
        return
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device(device_id)
        yield device.connection_string, {"port": hub.port, "ssl_context": hub.client_ssl_context()}, hub
