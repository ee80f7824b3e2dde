"""Twin-change and lifecycle notifications: which route data sources reach the built-in endpoint, and
the properties and bodies of the events, as IoT Hub's non-telemetry event schema has them."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from proton import Message

from aioiothub.emulator import Hub
from aioiothub.emulator.amqp.messages import event_message
from aioiothub.emulator.hub.event_log import Event
from aioiothub.emulator.hub.management import remove_identity
from aioiothub.emulator.hub.notifications import check_event_sources, section_metadata
from aioiothub.emulator.hub.values import precise_time
from aioiothub.protocol.topics import TwinRequestTopic

pytestmark = pytest.mark.anyio

ALL = ("DeviceMessages", "TwinChangeEvents", "DeviceLifecycleEvents")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def events_of(hub: Hub, device_id: str) -> list[Event]:
    return list(hub.core.events.partition_for(device_id).events_from(0, 1000))


def notifications(hub: Hub, device_id: str) -> list[Event]:
    return [event for event in events_of(hub, device_id) if event.source != "Telemetry"]


def props(message: Message) -> dict[str, Any]:
    return dict(message.properties or {})


def body(event: Event) -> Any:
    return json.loads(event.record.body)


def store(hub: Hub, device_id: str, text: str) -> None:
    hub.core.store_telemetry(
        hub.identity(device_id), f"devices/{device_id}/messages/events/", text.encode(),
        retain=False, enqueued_time=datetime.datetime.now(datetime.UTC),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("DeviceMessages", "must be a collection"),
        (42, "must be a collection"),
        (["DeviceMessages", "Telemetry"], "'Telemetry' is not a route data source"),
        (["twinChangeEvents"], "'twinChangeEvents' is not a route data source"),
    ],
)
def test_event_sources_are_checked_naming_the_argument(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Hub(event_sources=value)  # type: ignore[arg-type]
    assert str(caught.value).startswith("event_sources")
    assert check_event_sources([]) == frozenset()
    assert check_event_sources(ALL) == frozenset(ALL)


async def test_a_hub_without_routes_sends_device_messages_only() -> None:
    hub = Hub()
    hub.add_device("dev1")
    await hub.update_desired("dev1", {"interval": 5})
    store(hub, "dev1", "hello")
    remove_identity(hub.core, "dev1")
    assert [(event.source, event.record.body) for event in events_of(hub, "dev1")] == [("Telemetry", b"hello")]
    assert hub.core.twins.changes is None


async def test_without_device_messages_telemetry_stays_off_the_endpoint() -> None:
    hub = Hub(event_sources=["TwinChangeEvents"])
    hub.add_device("dev1")
    store(hub, "dev1", "hello")
    await hub.update_desired("dev1", {"interval": 5})
    assert [event.source for event in events_of(hub, "dev1")] == ["twinChangeEvents"]
    assert [record.body for record in hub.telemetry("dev1")] == [b"hello"]  # the hub still received it


async def test_a_desired_patch_is_an_update_twin_event_with_metadata_and_versions() -> None:
    hub = Hub(hostname="contoso-hub.azure-devices.net", event_sources=ALL)
    hub.add_device("dev1")
    await hub.update_desired("dev1", {"interval": 5, "mode": {"eco": True}})
    (created, event) = notifications(hub, "dev1")
    assert created.source == "deviceLifecycleEvents"
    assert event.source == "twinChangeEvents"
    properties = dict(event.record.properties)
    stamp = properties.pop("operationTimestamp")
    assert TIMESTAMP.match(str(stamp))
    assert properties == {
        "hubName": "contoso-hub",
        "deviceId": "dev1",
        "iothub-message-schema": "twinChangeNotification",
        "opType": "updateTwin",
    }
    system = dict(event.record.system_properties)
    assert system["$.ct"] == "application/json"
    assert system["$.ce"] == "utf-8"
    assert system["$.uid"] == "contoso-hub"
    assert system["$.cid"]
    leaf = {"$lastUpdated": stamp, "$lastUpdatedVersion": 2}
    assert body(event) == {
        "version": 2,
        "properties": {
            "desired": {
                "interval": 5,
                "mode": {"eco": True},
                "$metadata": {**leaf, "interval": leaf, "mode": {**leaf, "eco": leaf}},
                "$version": 2,
            }
        },
    }
    assert event.enqueued_time >= created.enqueued_time


async def test_a_reported_patch_from_the_device_has_no_last_updated_version() -> None:
    hub = Hub(event_sources=["TwinChangeEvents"])
    device = hub.add_device("dev1")
    answer = hub.core.handle_twin_request(device, TwinRequestTopic("PATCH_REPORTED", "1"), b'{"fw":"1.2"}')
    assert answer == (204, b"", 2)
    refused = hub.core.handle_twin_request(device, TwinRequestTopic("PATCH_REPORTED", "2"), b"[1]")
    assert refused is not None
    assert refused[0] == 400
    (event,) = notifications(hub, "dev1")
    stamp = event.record.properties["operationTimestamp"]
    assert body(event) == {
        "version": 2,
        "properties": {
            "reported": {
                "fw": "1.2", "$metadata": {"$lastUpdated": stamp, "fw": {"$lastUpdated": stamp}}, "$version": 2
            }
        },
    }


async def test_tags_and_desired_patched_together_are_one_event_and_put_is_replace_twin() -> None:
    hub = Hub(event_sources=["TwinChangeEvents"])
    hub.add_device("dev1")
    hub.add_module("dev1", "mod1")
    await hub.update_twin("dev1", module_id="mod1", tags={"site": "b1"}, desired={"x": 1})
    await hub.update_twin("dev1", module_id="mod1", tags={"floor": 2})
    await hub.replace_twin("dev1", module_id="mod1", tags={"t": 1}, desired={"y": 2})
    patched, tagged, replaced = notifications(hub, "dev1")
    assert patched.record.module_id == "mod1"
    assert patched.record.properties["moduleId"] == "mod1"
    first = body(patched)
    assert first["version"] == 2
    assert first["tags"] == {"site": "b1"}
    assert first["properties"]["desired"]["x"] == 1
    assert first["properties"]["desired"]["$version"] == 2
    assert body(tagged) == {"version": 3, "tags": {"floor": 2}}
    assert replaced.record.properties["opType"] == "replaceTwin"
    whole = body(replaced)
    stamp = replaced.record.properties["operationTimestamp"]
    assert whole == {
        "deviceId": "dev1",
        "moduleId": "mod1",
        "etag": "AAAAAAAAAAQ=",
        "version": 4,
        "tags": {"t": 1},
        "properties": {
            "desired": {"y": 2, "$metadata": {"$lastUpdated": stamp}, "$version": 3},
            "reported": {"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 1},
        },
    }


async def test_created_and_deleted_identities_are_lifecycle_events_modules_first() -> None:
    hub = Hub(event_sources=["DeviceLifecycleEvents"])
    hub.add_device("dev1")
    hub.add_module("dev1", "mod1")
    await hub.update_desired("dev1", {"interval": 5})  # not routed: no twin-change event
    remove_identity(hub.core, "dev1")
    kinds = [
        (event.record.properties["opType"], event.record.properties["iothub-message-schema"], event.record.module_id)
        for event in events_of(hub, "dev1")
    ]
    assert kinds == [
        ("createDeviceIdentity", "deviceLifecycleNotification", None),
        ("createModuleIdentity", "moduleLifecycleNotification", "mod1"),
        ("deleteModuleIdentity", "moduleLifecycleNotification", "mod1"),
        ("deleteDeviceIdentity", "deviceLifecycleNotification", None),
    ]
    created, _, _, deleted = events_of(hub, "dev1")
    assert {event.source for event in events_of(hub, "dev1")} == {"deviceLifecycleEvents"}
    never = {"$lastUpdated": "0001-01-01T00:00:00Z"}
    assert body(created) == {
        "deviceId": "dev1",
        "etag": "AAAAAAAAAAE=",
        "version": 1,
        "properties": {"desired": {"$metadata": never, "$version": 1}, "reported": {"$metadata": never, "$version": 1}},
    }
    last = body(deleted)
    assert last["version"] == 2
    assert last["properties"]["desired"]["interval"] == 5
    assert last["properties"]["desired"]["$version"] == 2


async def test_notifications_go_to_the_partition_of_the_device_they_are_about() -> None:
    hub = Hub(event_sources=ALL)
    for index in range(8):
        hub.add_device(f"device-{index}")
    for index in range(8):
        partition = hub.core.events.partition_for(f"device-{index}")
        assert any(event.record.device_id == f"device-{index}" for event in partition.events_from(0, 100))
        assert all(hub.core.events.partition_for(event.record.device_id) is partition
                   for event in partition.events_from(0, 100))


async def test_the_amqp_message_of_a_notification_has_no_connection_auth_annotations() -> None:
    hub = Hub(event_sources=["TwinChangeEvents"])
    hub.add_device("dev1")
    hub.add_module("dev1", "mod1")
    await hub.update_desired("dev1", {"interval": 5}, module_id="mod1")
    (event,) = notifications(hub, "dev1")
    message = event_message(event, generation_id="g", authentication="sas")
    annotations = {str(key): value for key, value in (message.annotations or {}).items()}
    assert annotations["iothub-message-source"] == "twinChangeEvents"
    assert annotations["iothub-connection-device-id"] == "dev1"
    assert annotations["iothub-connection-module-id"] == "mod1"
    assert "iothub-connection-auth-method" not in annotations
    assert "iothub-connection-auth-generation-id" not in annotations
    assert (str(message.content_type), str(message.content_encoding)) == ("application/json", "utf-8")
    assert message.user_id == b"localhost"
    assert message.correlation_id == event.record.system_properties["$.cid"]
    assert props(message)["opType"] == "updateTwin"
    assert props(message)["moduleId"] == "mod1"
    telemetry = Hub()
    telemetry.add_device("dev1")
    store(telemetry, "dev1", "hi")
    (sent,) = events_of(telemetry, "dev1")
    sent_annotations = {str(key) for key in (event_message(sent, generation_id="g", authentication="sas")
                                             .annotations or {})}
    assert "iothub-connection-auth-method" in sent_annotations


def test_times_and_metadata_as_iot_hub_writes_them() -> None:
    moment = datetime.datetime(2026, 6, 1, 22, 27, 50, 261258, tzinfo=datetime.UTC)
    assert precise_time(moment) == "2026-06-01T22:27:50.2612580Z"
    stamp = precise_time(moment)
    assert section_metadata({"a": None, "b": {}}, stamp, 3) == {
        "$lastUpdated": stamp,
        "$lastUpdatedVersion": 3,
        "a": {"$lastUpdated": stamp, "$lastUpdatedVersion": 3},
        "b": {"$lastUpdated": stamp, "$lastUpdatedVersion": 3},
    }
