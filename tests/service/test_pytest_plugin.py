"""The ``aioiothub.testing`` pytest plugin, as its documentation shows it (registered through ``pytest11``)."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.testing import EmulatedDevice

pytestmark = pytest.mark.anyio


async def test_reports_temperature(iothub_emulator: Emulator, iothub_device: EmulatedDevice) -> None:
    await iothub_device.client.send_message({"temperature": 21.5})
    records = await iothub_emulator.wait_for_telemetry(1, device_id=iothub_device.device_id)
    assert records[0].json() == {"temperature": 21.5}


async def test_device_fixture_is_registered_and_connected(
    iothub_emulator: Emulator, iothub_device: EmulatedDevice
) -> None:
    assert iothub_emulator.identity(iothub_device.device_id) is iothub_device.identity
    assert iothub_emulator.is_connected(iothub_device.device_id)
    assert iothub_device.client.connected


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("aioiothub")
