"""Provision a device through DPS with an enrollment-group key, then send telemetry to its hub.

With no environment set it runs against the embedded emulator (hub and DPS on one listener). Against
a real DPS set ``IOTHUB_DPS_ID_SCOPE``, ``IOTHUB_DPS_REGISTRATION_ID`` and ``IOTHUB_DPS_GROUP_KEY``
(or ``IOTHUB_DPS_SYMMETRIC_KEY`` for an individual enrollment); ``IOTHUB_DPS_HOST`` defaults to the
global endpoint. This is the flow every IoT Central device runs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

import aioiothub
from aioiothub.emulator import Emulator


@asynccontextmanager
async def provisioning_client() -> AsyncIterator[tuple[aioiothub.ProvisioningClient, Emulator | None]]:
    """A provisioning client for the DPS the environment names, or for the embedded emulator."""
    id_scope = os.environ.get("IOTHUB_DPS_ID_SCOPE")
    if id_scope:
        common = {
            "id_scope": id_scope,
            "registration_id": os.environ["IOTHUB_DPS_REGISTRATION_ID"],
            "provisioning_host": os.environ.get("IOTHUB_DPS_HOST", "global.azure-devices-provisioning.net"),
        }
        if "IOTHUB_DPS_GROUP_KEY" in os.environ:
            yield aioiothub.ProvisioningClient.from_enrollment_group_key(
                group_key=os.environ["IOTHUB_DPS_GROUP_KEY"], **common
            ), None
        else:
            yield aioiothub.ProvisioningClient.from_symmetric_key(
                symmetric_key=os.environ["IOTHUB_DPS_SYMMETRIC_KEY"], **common
            ), None
        return
    async with Emulator(websocket_port=None) as hub:
        group = hub.dps.add_enrollment_group("example-fleet")
        assert group.primary_key is not None
        yield aioiothub.ProvisioningClient.from_enrollment_group_key(
            provisioning_host=hub.hostname,
            id_scope=hub.dps.id_scope,
            registration_id="example-sensor",
            group_key=group.primary_key,
            port=hub.port,
            ssl_context=hub.client_ssl_context(),
        ), hub


async def main() -> None:
    async with provisioning_client() as (provisioning, hub):
        async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
            registration = client.registration
            print(f"provisioned {registration.device_id!r} on {registration.assigned_hub}")
            for reading in range(3):
                await client.send_message({"temperature": 20 + reading})
        if hub is not None:
            print("the emulator received", len(hub.telemetry(registration.device_id)), "messages")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
