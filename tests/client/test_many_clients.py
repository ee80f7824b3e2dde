"""Hundreds of device clients in one process share one event loop, without threads per client."""

from __future__ import annotations

import threading

import anyio
import pytest

import aioiothub
from aioiothub.emulator import DeviceIdentity, Emulator

pytestmark = pytest.mark.anyio

CLIENTS = 200


async def test_200_clients_connect_send_telemetry_and_read_their_twin() -> None:
    async with Emulator(websocket_port=None) as hub:
        identities = [hub.add_device(f"device-{number:03}") for number in range(CLIENTS)]
        for identity in identities:
            await hub.update_desired(identity.device_id, {"slot": identity.device_id})
        ssl_context = hub.client_ssl_context()
        all_connected = anyio.Event()
        connected = 0
        peak_threads = threading.active_count()
        twins: dict[str, object] = {}

        async def run_device(identity: DeviceIdentity) -> None:
            nonlocal connected, peak_threads
            client = aioiothub.IoTHubDeviceClient.from_connection_string(
                identity.connection_string, port=hub.port, ssl_context=ssl_context
            )
            async with client:
                connected += 1
                if connected == CLIENTS:
                    all_connected.set()
                await all_connected.wait()  # every client is connected at the same time
                peak_threads = max(peak_threads, threading.active_count())
                await client.send_message({"from": identity.device_id})
                twin = await client.get_twin()
                twins[identity.device_id] = twin.desired["slot"]

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tasks:
                for identity in identities:
                    tasks.start_soon(run_device, identity)

        assert twins == {identity.device_id: identity.device_id for identity in identities}
        senders = {record.device_id for record in hub.telemetry()}
        assert senders == {identity.device_id for identity in identities}
        # No thread per client: only the event loop and a small shared executor pool.
        assert peak_threads <= 10, f"{peak_threads} threads for {CLIENTS} clients"
