"""Shared by the simulator tests: a fleet key and an endpoint on a running emulator."""

from __future__ import annotations

import base64

from aioiothub import derive_device_key
from aioiothub.emulator import Emulator
from aioiothub.simulator.endpoint import FleetEndpoint

FLEET_KEY = base64.b64encode(bytes(range(32))).decode("ascii")


def register_fleet(hub: Emulator, device_ids: list[str], fleet_key: str = FLEET_KEY) -> None:
    """Register devices whose keys derive from ``fleet_key``."""
    for device_id in device_ids:
        hub.add_device(device_id, primary_key=derive_device_key(fleet_key, device_id))


def endpoint_of(hub: Emulator, fleet_key: str = FLEET_KEY) -> FleetEndpoint:
    """How a fleet reaches the running emulator ``hub``."""
    return FleetEndpoint(
        hostname=hub.hostname, fleet_key=fleet_key, port=hub.port, connect_host=hub.host,
        ca_pem=hub.ca_pem.decode("ascii"),
    )
