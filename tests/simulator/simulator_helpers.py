"""Shared by the simulator tests: a fleet key, an endpoint on a running emulator, and the command line."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from aioiothub import derive_device_key
from aioiothub.emulator import Emulator
from aioiothub.simulator.endpoint import FleetEndpoint

FLEET_KEY = base64.b64encode(bytes(range(32))).decode("ascii")

ROOT = Path(__file__).resolve().parents[2]
SIMULATE = [sys.executable, "-m", "aioiothub", "simulate"]
QUICK = ["--interval", "0.2", "--jitter", "0"]
"""Options of a short run: a message every 0.2 s per device."""


def run(arguments: list[str], *, environment: dict[str, str] | None = None, timeout: float = 120) -> (
    subprocess.CompletedProcess[str]
):
    """Run a command from the repository root, as a user would, and wait for it."""
    return subprocess.run(
        arguments, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, **(environment or {})}, check=False,
    )


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
