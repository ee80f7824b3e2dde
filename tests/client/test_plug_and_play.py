"""Plug and Play against the emulator: model id, component telemetry and properties, writable-property
acknowledgements and component commands, checked on the hub's side (telemetry records, the twin)."""

from __future__ import annotations

import anyio
import pytest

from aioiothub import pnp
from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION
from tests.client.client_helpers import STEP, device_client, new_id, take, wait_subscribed

pytestmark = pytest.mark.anyio

MODEL_ID = "dtmi:com:example:TemperatureController;2"


async def test_the_model_id_component_telemetry_and_component_properties_reach_the_hub(hub: Emulator) -> None:
    device = hub.add_device(new_id("pnp"))
    async with device_client(hub, device, model_id=MODEL_ID) as client:
        assert hub.identity(device.device_id).model_id == MODEL_ID
        await client.send_message(pnp.telemetry_message({"temperature": 21.5}, component="thermostat1"))
        await client.send_message(pnp.telemetry_message({"workingSet": 1024}))
        version = await client.update_reported_properties(
            pnp.reported_properties({"maxTempSinceLastReboot": 21.5}, component="thermostat1")
        )
    component, root = hub.telemetry(device.device_id)
    assert component.system_properties["$.sub"] == "thermostat1"
    assert component.json() == {"temperature": 21.5}
    assert "$.sub" not in root.system_properties
    reported = hub.twin(device.device_id)["reported"]
    assert reported["$version"] == version
    assert reported["thermostat1"] == {"__t": "c", "maxTempSinceLastReboot": 21.5}


async def test_writable_properties_are_split_and_acknowledged_in_the_twin(hub: Emulator) -> None:
    device = hub.add_device(new_id("pnp"))
    async with device_client(hub, device, model_id=MODEL_ID) as client:
        requests = client.writable_property_requests()
        got: list[pnp.WritablePropertyRequest] = []
        async with anyio.create_task_group() as tasks:

            async def collect() -> None:
                got.extend(await take(requests, 3))

            tasks.start_soon(collect)
            await wait_subscribed(hub, TWIN_DESIRED_SUBSCRIPTION, device.device_id)
            version = await hub.update_desired(
                device.device_id,
                {
                    "thermostat1": {"__t": "c", "targetTemperature": 23.5},
                    "thermostat2": {"__t": "c", "targetTemperature": 99},
                    "fanSpeed": 3,
                },
            )
        assert [(r.component, r.name, r.value, r.version) for r in got] == [
            ("thermostat1", "targetTemperature", 23.5, version),
            ("thermostat2", "targetTemperature", 99, version),
            (None, "fanSpeed", 3, version),
        ]
        await got[0].respond(200, "applied")
        await got[1].respond(400, "out of range", value=20)
        await got[2].respond(202)
        await got[2].respond(200)
        await requests.aclose()
    reported = hub.twin(device.device_id)["reported"]
    assert reported["thermostat1"] == {
        "__t": "c",
        "targetTemperature": {"value": 23.5, "ac": 200, "av": version, "ad": "applied"},
    }
    assert reported["thermostat2"]["targetTemperature"] == {"value": 20, "ac": 400, "av": version, "ad": "out of range"}
    assert reported["fanSpeed"] == {"value": 3, "ac": 200, "av": version}


async def test_writes_made_while_the_device_was_away_are_yielded_first(hub: Emulator) -> None:
    device = hub.add_device(new_id("pnp"))
    await hub.update_desired(device.device_id, {"thermostat1": {"__t": "c", "targetTemperature": 21}})
    async with device_client(hub, device) as client:
        (request,) = await take(client.writable_property_requests(), 1)
        await request.respond(200)
    version = await hub.update_desired(device.device_id, {"fanSpeed": 2})
    async with device_client(hub, device) as client:
        # targetTemperature was acknowledged with its value: only fanSpeed is pending.
        requests = client.writable_property_requests()
        (pending,) = await take(requests, 1)
        assert (pending.component, pending.name, pending.value, pending.version) == (None, "fanSpeed", 2, version)
        # A write after the start arrives as a patch of its own.
        later = await hub.update_desired(device.device_id, {"thermostat1": {"__t": "c", "targetTemperature": 25}})
        (patched,) = await take(requests, 1)
        assert (patched.component, patched.value, patched.version) == ("thermostat1", 25, later)
        await requests.aclose()


async def test_component_commands_arrive_split_and_can_be_served_by_name(hub: Emulator) -> None:
    device = hub.add_device(new_id("pnp"))
    async with device_client(hub, device, model_id=MODEL_ID) as client, anyio.create_task_group() as tasks:

        async def serve() -> None:
            async for request in client.method_requests("thermostat1*getMaxMinReport"):
                await request.respond(200, {"component": request.component, "command": request.command})

        tasks.start_soon(serve)
        await wait_subscribed(hub, METHODS_SUBSCRIPTION, device.device_id)
        result = await hub.invoke_method(device.device_id, "thermostat1*getMaxMinReport", "2024-01-01", timeout=STEP)
        tasks.cancel_scope.cancel()
    assert (result.status, result.payload) == (200, {"component": "thermostat1", "command": "getMaxMinReport"})
