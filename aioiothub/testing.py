"""pytest fixtures: a running IoT Hub emulator and a connected device, for testing device code offline.

Installed with aioiothub and registered through the ``pytest11`` entry point, so the fixtures are
there in every test session; they are async, so tests run under anyio's pytest plugin::

    import pytest

    pytestmark = pytest.mark.anyio

    async def test_reports_temperature(iothub_emulator, iothub_device):
        await iothub_device.client.send_message({"temperature": 21.5})
        records = await iothub_emulator.wait_for_telemetry(1, device_id=iothub_device.device_id)
        assert records[0].json() == {"temperature": 21.5}

Fixtures:

* ``iothub_emulator`` -- an :class:`~aioiothub.emulator.Emulator` on free ports, started for the test
  and stopped after it; drive it in process (``update_desired``, ``invoke_method``, ``send_c2d``,
  ``telemetry``) or over its service REST API (``service_connection_string``).
* ``iothub_emulator_module`` -- the same, shared by the tests of one module.
* ``iothub_device`` -- a device registered on ``iothub_emulator`` under a fresh id, with an
  :class:`~aioiothub.IoTHubDeviceClient` connected to it (:class:`EmulatedDevice`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from aioiothub import IoTHubDeviceClient
from aioiothub.emulator import DeviceIdentity, Emulator

__all__ = ["EmulatedDevice", "iothub_device", "iothub_emulator", "iothub_emulator_module"]


@dataclass(frozen=True, slots=True)
class EmulatedDevice:
    """What the ``iothub_device`` fixture gives a test.

    Attributes:
        device_id: the device's id (fresh for each test).
        identity: its registration on the emulator (keys, connection string).
        client: a connected client of the device.
    """

    device_id: str
    identity: DeviceIdentity
    client: IoTHubDeviceClient


@pytest.fixture
async def iothub_emulator() -> AsyncIterator[Emulator]:
    """A running emulator for one test: MQTT/TLS, WebSocket and HTTPS (service API) on free ports."""
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
async def iothub_emulator_module() -> AsyncIterator[Emulator]:
    """A running emulator shared by the tests of one module (register distinct ids per test)."""
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def iothub_device(iothub_emulator: Emulator) -> AsyncIterator[EmulatedDevice]:
    """A freshly registered device on ``iothub_emulator`` and a client connected as it."""
    device_id = f"device-{uuid.uuid4().hex[:8]}"
    identity = iothub_emulator.add_device(device_id)
    client = IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=iothub_emulator.port, ssl_context=iothub_emulator.client_ssl_context()
    )
    async with client:
        yield EmulatedDevice(device_id, identity, client)
