"""Twin-change and lifecycle notifications read from the Event Hubs-compatible endpoint over AMQP, as a back
end reads them: a device over MQTT, the service REST API, and the route switch -- all over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from proton import Link, Message

import aioiothub
from aioiothub.emulator import Emulator
from tests.emulator.amqp_client import AmqpTestClient, authorized_client, partition_address
from tests.service.service_helpers import service_client

pytestmark = pytest.mark.anyio

ALL = ("DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents")
FROM_THE_START = "amqp.annotation.x-opt-offset > '-1'"


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(event_sources=ALL, amqp_port=None, amqp_plain_port=0) as emulator:
        yield emulator


async def read(hub: Emulator, device_id: str, count: int) -> tuple[AmqpTestClient, Link, list[Message]]:
    """A reader of ``device_id``'s partition from its start, once ``count`` events arrived."""
    reader = await authorized_client(hub)
    partition = hub.core.events.partition_for(device_id).identifier
    link = await reader.attach_receiver(partition_address(hub, partition), selector=FROM_THE_START, credit=100)
    await reader.until(lambda: len(reader.messages_on(link)) >= count)
    return reader, link, reader.messages_on(link)


def marks(message: Message) -> dict[str, Any]:
    """The message annotations, by name."""
    return {str(key): value for key, value in (message.annotations or {}).items()}


def props(message: Message) -> dict[str, Any]:
    """The application properties."""
    return dict(message.properties or {})


def body(message: Message) -> Any:
    assert isinstance(message.body, bytes | memoryview)
    return json.loads(bytes(message.body))


async def test_a_reported_patch_from_a_device_arrives_as_a_twin_change_event(transport: str, hub: Emulator) -> None:
    device = hub.add_device("dev1")
    async with aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
    ) as client:
        assert await client.update_reported_properties({"fw": "1.2.0"}) == 2
        await client.send_message("after the patch")
    reader, _, (created, changed, telemetry) = await read(hub, "dev1", 3)
    assert marks(created)["iothub-message-source"] == "deviceLifecycleEvents"
    assert telemetry.body == b"after the patch"
    assert marks(telemetry)["iothub-message-source"] == "Telemetry"

    annotations = marks(changed)
    assert annotations["iothub-message-source"] == "twinChangeEvents"
    assert annotations["iothub-connection-device-id"] == "dev1"
    assert "iothub-connection-module-id" not in annotations
    assert annotations["x-opt-sequence-number"] == 1
    assert (str(changed.content_type), str(changed.content_encoding)) == ("application/json", "utf-8")
    assert changed.user_id == hub.hostname.encode()
    properties = props(changed)
    stamp = properties.pop("operationTimestamp")
    assert properties == {
        "hubName": hub.hostname,
        "deviceId": "dev1",
        "iothub-message-schema": "twinChangeNotification",
        "opType": "updateTwin",
    }
    assert body(changed) == {
        "version": 2,
        "properties": {
            "reported": {
                "fw": "1.2.0",
                "$metadata": {"$lastUpdated": stamp, "fw": {"$lastUpdated": stamp}},
                "$version": 2,
            }
        },
    }
    await reader.aclose()


async def test_the_service_api_patch_and_put_of_a_twin_arrive_as_update_and_replace(hub: Emulator) -> None:
    hub.add_device("dev1")
    hub.add_module("dev1", "mod1")
    async with service_client(hub) as http:
        patched = await http.patch("/twins/dev1", json={"tags": {"site": "b1"}, "properties": {"desired": {"x": 1}}})
        assert patched.status_code == 200
        replaced = await http.put("/twins/dev1/modules/mod1", json={"tags": {"t": 2}, "properties": {"desired": {}}})
        assert replaced.status_code == 200
    reader, _, messages = await read(hub, "dev1", 4)
    update, replace = messages[2], messages[3]
    assert props(update)["opType"] == "updateTwin"
    update_body = body(update)
    assert update_body["version"] == patched.json()["version"]
    assert update_body["tags"] == {"site": "b1"}
    assert update_body["properties"]["desired"]["x"] == 1
    assert update_body["properties"]["desired"]["$metadata"]["x"]["$lastUpdatedVersion"] == 2
    assert props(replace)["opType"] == "replaceTwin"
    assert props(replace)["moduleId"] == "mod1"
    assert marks(replace)["iothub-connection-module-id"] == "mod1"
    replace_body = body(replace)
    assert replace_body["moduleId"] == "mod1"
    assert replace_body["etag"] == replaced.json()["etag"]
    assert replace_body["tags"] == {"t": 2}
    await reader.aclose()


async def test_identities_created_and_deleted_over_rest_arrive_as_lifecycle_events(hub: Emulator) -> None:
    async with service_client(hub) as http:
        assert (await http.put("/devices/dev1", json={"deviceId": "dev1"})).status_code == 200
        assert (await http.put("/devices/dev1/modules/mod1", json={"moduleId": "mod1"})).status_code == 200
        assert (await http.delete("/devices/dev1/modules/mod1")).status_code == 204
        assert (await http.delete("/devices/dev1")).status_code == 204
    reader, _, messages = await read(hub, "dev1", 4)
    assert [(props(message)["opType"], props(message)["iothub-message-schema"]) for message in messages] == [
        ("createDeviceIdentity", "deviceLifecycleNotification"),
        ("createModuleIdentity", "moduleLifecycleNotification"),
        ("deleteModuleIdentity", "moduleLifecycleNotification"),
        ("deleteDeviceIdentity", "deviceLifecycleNotification"),
    ]
    assert {marks(message)["iothub-message-source"] for message in messages} == {"deviceLifecycleEvents"}
    assert body(messages[0]) == {
        "deviceId": "dev1",
        "etag": "AAAAAAAAAAE=",
        "version": 1,
        "properties": {
            "desired": {"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1},
            "reported": {"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1},
        },
    }
    assert body(messages[1])["moduleId"] == "mod1"
    assert props(messages[1])["moduleId"] == "mod1"
    await reader.aclose()


async def test_without_routes_only_device_messages_reach_the_endpoint(transport: str) -> None:
    async with Emulator(amqp_port=None, amqp_plain_port=0) as hub:
        device = hub.add_device("dev1")
        hub.add_module("dev1", "mod1")
        await hub.update_desired("dev1", {"interval": 5})
        async with service_client(hub) as http:
            assert (await http.patch("/twins/dev1", json={"tags": {"site": "b1"}})).status_code == 200
            assert (await http.delete("/devices/dev1/modules/mod1")).status_code == 204
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as client:
            await client.update_reported_properties({"fw": "1"})
            await client.send_message("only this")
        # One device's events keep their order: a notification appended before the message would come first.
        reader, _, messages = await read(hub, "dev1", 1)
        assert [(message.body, marks(message)["iothub-message-source"]) for message in messages] == [
            (b"only this", "Telemetry")
        ]
        assert marks(messages[0])["x-opt-sequence-number"] == 0
        await reader.aclose()


async def test_with_device_messages_unrouted_telemetry_stays_off_the_endpoint(transport: str) -> None:
    async with Emulator(event_sources=["TwinChangeEvents"], amqp_port=None, amqp_plain_port=0) as hub:
        device = hub.add_device("dev1")
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as client:
            await client.send_message("not routed")
            await client.update_reported_properties({"fw": "1"})
        await hub.wait_for_telemetry(1, device_id="dev1")  # received by the hub all the same
        # The message came first: had it been routed, it would be the first event read.
        reader, _, messages = await read(hub, "dev1", 1)
        assert [marks(message)["iothub-message-source"] for message in messages] == ["twinChangeEvents"]
        await reader.aclose()
