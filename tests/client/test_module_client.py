"""The module client against the emulator, over MQTT/TLS and MQTT/WebSocket with a shared access key.

A module is an identity of its own under a device: its telemetry carries the module id, it sends on
IoT Edge outputs and receives on inputs, and it has its own twin and direct methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator, ModuleIdentity
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION
from tests.client.client_helpers import (
    MODULE_SETUPS,
    STEP,
    TCP_SAS,
    Setup,
    device_client,
    module_client,
    new_id,
    round_trips,
    take,
    wait_subscribed,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=MODULE_SETUPS, ids=[setup.name for setup in MODULE_SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    """The transport and credential of one test run."""
    value: Setup = request.param
    return value


@pytest.fixture
def module(hub: Emulator) -> ModuleIdentity:
    """A freshly registered module of a freshly registered device."""
    device = hub.add_device(new_id("edge-device"))
    return hub.add_module(device.device_id, new_id("module"))


@pytest.fixture
def client(
    hub: Emulator, module: ModuleIdentity, setup: Setup, tmp_path: Path
) -> aioiothub.IoTHubModuleClient:
    """A module client for ``module``, not yet opened."""
    return module_client(hub, module, setup, tmp_path)


async def test_send_message_is_recorded_as_the_modules(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    async with client:
        await client.send_message({"reading": 1})
        await client.send_message(aioiothub.Message(b"raw", message_id="m-2", properties={"a b": "c/d"}))
    records = hub.telemetry(module.device_id, module.module_id)
    assert [(record.device_id, record.module_id) for record in records] == [
        (module.device_id, module.module_id)
    ] * 2
    assert records[0].json() == {"reading": 1}
    assert dict(records[0].system_properties) == {"$.ct": "application/json", "$.ce": "utf-8"}
    assert records[1].body == b"raw"
    assert dict(records[1].system_properties) == {"$.mid": "m-2"}
    assert dict(records[1].properties) == {"a b": "c/d"}
    assert records[1].annotations["iothub-connection-module-id"] == module.module_id


async def test_send_message_to_output_sets_the_output_name(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    async with client:
        await client.send_message_to_output({"ok": True}, "output1")
        await client.send_message_to_output(
            aioiothub.Message(b"alert", properties={"level": "high"}), "alerts"
        )
    first, second = hub.telemetry(module.device_id, module.module_id)
    assert first.json() == {"ok": True}
    assert dict(first.system_properties) == {"$.ct": "application/json", "$.ce": "utf-8", "$.on": "output1"}
    assert second.body == b"alert"
    assert dict(second.system_properties) == {"$.on": "alerts"}
    assert dict(second.properties) == {"level": "high"}


async def test_input_messages_yields_every_input_with_its_name(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    device_id, module_id = module.device_id, module.module_id
    await hub.send_to_input(
        device_id, module_id, "input1", b"one", properties={"k": "v 1"}, message_id="in-1"
    )
    await hub.send_to_input(device_id, module_id, "input2", "two", message_id="in-2")
    assert hub.c2d_queue_length(device_id, module_id) == 2
    async with client:
        first, second = await take(client.input_messages(), 2)
        await round_trips(client)
        assert hub.c2d_queue_length(device_id, module_id) == 0
    assert (first.input_name, first.body, first.message_id, dict(first.properties)) == (
        "input1",
        b"one",
        "in-1",
        {"k": "v 1"},
    )
    assert (second.input_name, second.body, second.message_id, dict(second.properties)) == (
        "input2",
        b"two",
        "in-2",
        {},
    )
    assert first.to == f"/devices/{device_id}/modules/{module_id}/inputs/input1"


async def test_input_messages_by_name_yields_only_that_input_and_keeps_the_others(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    device_id, module_id = module.device_id, module.module_id
    await hub.send_to_input(device_id, module_id, "input2", b"for input2", message_id="other")
    await hub.send_to_input(device_id, module_id, "input1", b"for input1", message_id="wanted")
    async with client:
        (wanted,) = await take(client.input_messages("input1"), 1)
        assert (wanted.input_name, wanted.body, wanted.message_id) == ("input1", b"for input1", "wanted")
        await round_trips(client)
        # Only the message that was taken is completed; the one for input2 still waits at the hub.
        assert hub.c2d_queue_length(device_id, module_id) == 1

        (other,) = await take(client.input_messages(), 1)
        assert (other.input_name, other.body, other.message_id) == ("input2", b"for input2", "other")
        await round_trips(client)
        assert hub.c2d_queue_length(device_id, module_id) == 0


async def test_module_twin_is_the_modules_own(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    device_id, module_id = module.device_id, module.module_id
    desired_version = await hub.update_desired(device_id, {"threshold": 3}, module_id=module_id)
    async with client, anyio.create_task_group() as tasks:
        twin = await client.get_twin()
        assert twin.desired == {"threshold": 3, "$version": desired_version}
        assert twin.reported == {"$version": 1}

        version = await client.update_reported_properties({"state": "running", "pid": 42})
        assert hub.twin(device_id, module_id)["reported"] == {
            "state": "running",
            "pid": 42,
            "$version": version,
        }

        patches: list[dict[str, Any]] = []
        received = anyio.Event()

        async def collect() -> None:
            patches.extend(await take(client.desired_property_patches(), 1))
            received.set()

        tasks.start_soon(collect)
        await wait_subscribed(hub, TWIN_DESIRED_SUBSCRIPTION, device_id, module_id)
        next_version = await hub.update_desired(device_id, {"threshold": 4}, module_id=module_id)
        with anyio.fail_after(STEP):
            await received.wait()
    assert patches == [{"threshold": 4, "$version": next_version}]
    # The device's own twin is untouched by everything its module did.
    assert hub.twin(device_id) == {"desired": {"$version": 1}, "reported": {"$version": 1}}


async def test_module_methods_are_invoked_on_the_module(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient
) -> None:
    device_id, module_id = module.device_id, module.module_id
    seen: list[tuple[str, Any]] = []

    async def serve() -> None:
        async for request in client.method_requests():
            seen.append((request.name, request.payload))
            await request.respond(200, {"module": module_id, "echo": request.payload})

    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        await wait_subscribed(hub, METHODS_SUBSCRIPTION, device_id, module_id)
        result = await hub.invoke_method(
            device_id, "restart", {"after": 2}, module_id=module_id, timeout=STEP
        )
        on_device = await hub.invoke_method(device_id, "restart", {"after": 2}, timeout=STEP)
        tasks.cancel_scope.cancel()
    assert (result.status, result.payload) == (200, {"module": module_id, "echo": {"after": 2}})
    assert seen == [("restart", {"after": 2})]
    # The device itself is not connected: the module's handler is not the device's.
    assert on_device.status == 404


async def test_device_and_module_are_connected_side_by_side(
    hub: Emulator, module: ModuleIdentity, client: aioiothub.IoTHubModuleClient, tmp_path: Path
) -> None:
    device_id, module_id = module.device_id, module.module_id
    device = hub.identity(device_id)
    async with client, device_client(hub, device, TCP_SAS, tmp_path) as device_side:
        await device_side.send_message(b"from the device")
        await client.send_message(b"from the module")
        assert hub.is_connected(device_id)
        assert hub.is_connected(device_id, module_id)
        assert client.connected
        assert device_side.connected
    assert [(record.module_id, record.body) for record in hub.telemetry(device_id)] == [
        (None, b"from the device"),
        (module_id, b"from the module"),
    ]
