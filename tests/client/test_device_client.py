"""The device client against the emulator, over every transport and credential it supports.

Each behaviour runs over MQTT/TLS and MQTT/WebSocket with a shared access key, over TLS with a
self-signed and a CA-signed X.509 certificate, and over TLS with a caller-made SAS token. Every test
checks both ends: what the client returned and what the hub recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

import aioiothub
from aioiothub.emulator import DeviceIdentity, Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION
from tests.client.client_helpers import (
    DEVICE_SETUPS,
    STEP,
    TCP_SAS,
    Setup,
    device_client,
    new_id,
    round_trips,
    take,
    wait_subscribed,
)

pytestmark = pytest.mark.anyio

# Application properties whose names and values need percent-encoding in the topic.
AWKWARD_PROPERTIES = {
    "with space": "a b",
    "slash/name": "x/y",
    "plus+name": "1+1",
    "percent%name": "100%",
    "amp&name": "a&b",
    "equals=name": "k=v",
    "all": " /+%&=",
}


@pytest.fixture(params=DEVICE_SETUPS, ids=[setup.name for setup in DEVICE_SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    """The transport and credential of one test run."""
    value: Setup = request.param
    return value


@pytest.fixture
def device(hub: Emulator, setup: Setup) -> DeviceIdentity:
    """A freshly registered device authenticating the way the setup says."""
    return hub.add_device(new_id("device"), authentication=setup.authentication)


@pytest.fixture
def client(
    hub: Emulator, device: DeviceIdentity, setup: Setup, tmp_path: Path
) -> aioiothub.IoTHubDeviceClient:
    """A device client for ``device``, not yet opened."""
    if setup.authentication != "sas":
        assert device.connection_string.endswith(";x509=true")
    return device_client(hub, device, setup, tmp_path)


# --------------------------------------------------------------------------------------------- telemetry


async def test_send_dict_is_json_with_content_type_and_encoding(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    async with client:
        await client.send_message({"temperature": 21.5, "name": "caf\u00e9"})
    (record,) = hub.telemetry(device.device_id)
    assert record.device_id == device.device_id
    assert record.module_id is None
    assert record.json() == {"temperature": 21.5, "name": "caf\u00e9"}
    assert dict(record.system_properties) == {"$.ct": "application/json", "$.ce": "utf-8"}
    assert dict(record.properties) == {}


async def test_send_bytes_and_str_bodies_arrive_unchanged(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    raw = bytes(range(256))
    async with client:
        await client.send_message(raw)
        await client.send_message("h\u00e9llo \u2713")
        await client.send_message(b"")
    records = hub.telemetry(device.device_id)
    assert [record.body for record in records] == [raw, "h\u00e9llo \u2713".encode(), b""]
    for record in records:
        assert dict(record.system_properties) == {}
        assert dict(record.properties) == {}


async def test_send_message_with_every_system_property_and_awkward_application_properties(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    expiry = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    # A local time two hours ahead of UTC: the wire carries the same instant in UTC.
    created = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone(timedelta(hours=2)))
    message = aioiothub.Message(
        b'{"v":1}',
        message_id="msg 1/2+3%&=",
        correlation_id="corr-1",
        user_id="user@example",
        content_type="application/json; charset=utf-8",
        content_encoding="utf-8",
        creation_time=created,
        expiry_time=expiry,
        component="thermostat1",
        interface_id="urn:azureiot:Security:SecurityAgent:1",
        properties=AWKWARD_PROPERTIES,
    )
    async with client:
        await client.send_message(message)
    (record,) = hub.telemetry(device.device_id)
    assert record.body == b'{"v":1}'
    assert dict(record.properties) == AWKWARD_PROPERTIES
    system = dict(record.system_properties)
    times = {key: system.pop(key) for key in ("$.exp", "$.ctime")}
    assert system == {
        "$.mid": "msg 1/2+3%&=",
        "$.cid": "corr-1",
        "$.uid": "user@example",
        "$.ct": "application/json; charset=utf-8",
        "$.ce": "utf-8",
        "$.sub": "thermostat1",
        "$.ifid": "urn:azureiot:Security:SecurityAgent:1",
    }
    for key, expected in (("$.exp", expiry), ("$.ctime", created)):
        text = times[key]
        assert text is not None
        assert text.endswith("Z"), f"{key} should be sent in UTC: {text!r}"
        assert datetime.fromisoformat(text) == expected


async def test_send_message_at_qos_0(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    async with client:
        await client.send_message(aioiothub.Message(b"fire and forget", message_id="q0"), qos=0)
        records = await hub.wait_for_telemetry(1, device_id=device.device_id, timeout=STEP)
    assert [(record.body, record.system_properties["$.mid"]) for record in records] == [
        (b"fire and forget", "q0")
    ]


# -------------------------------------------------------------------------------------------------- twin


async def test_get_twin_returns_what_the_hub_holds(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    desired_version = await hub.update_desired(
        device.device_id, {"interval": 5, "limits": {"low": -1, "high": 9}}
    )
    async with client:
        twin = await client.get_twin()
    assert twin.desired == {"interval": 5, "limits": {"low": -1, "high": 9}, "$version": desired_version}
    assert twin.desired_version == desired_version == 2
    assert twin.desired == hub.twin(device.device_id)["desired"]
    assert twin.reported == hub.twin(device.device_id)["reported"] == {"$version": 1}


async def test_update_reported_properties_returns_the_hubs_new_version(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    async with client:
        first = await client.update_reported_properties(
            {"fw": "1.2.0", "battery": {"level": 80, "charging": True}}
        )
        reported = hub.twin(device.device_id)["reported"]
        assert reported == {"fw": "1.2.0", "battery": {"level": 80, "charging": True}, "$version": first}

        # null deletes, nested objects merge
        second = await client.update_reported_properties(
            {"fw": None, "battery": {"charging": None, "level": 79}}
        )
        reported = hub.twin(device.device_id)["reported"]
        assert reported == {"battery": {"level": 79}, "$version": second}
        assert second == first + 1

        twin = await client.get_twin()
    assert twin.reported == reported
    assert twin.reported_version == second


async def test_desired_property_patches_arrive_in_order_with_their_version(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    async with client, anyio.create_task_group() as tasks:
        patches: list[dict[str, Any]] = []
        received = anyio.Event()

        async def collect() -> None:
            patches.extend(await take(client.desired_property_patches(), 2))
            received.set()

        tasks.start_soon(collect)
        await wait_subscribed(hub, TWIN_DESIRED_SUBSCRIPTION, device.device_id)
        first = await hub.update_desired(device.device_id, {"interval": 10, "mode": {"eco": True}})
        second = await hub.update_desired(device.device_id, {"interval": None, "mode": {"eco": False}})
        with anyio.fail_after(STEP):
            await received.wait()
    assert second == first + 1
    assert patches == [
        {"interval": 10, "mode": {"eco": True}, "$version": first},
        {"interval": None, "mode": {"eco": False}, "$version": second},
    ]
    assert hub.twin(device.device_id)["desired"] == {"mode": {"eco": False}, "$version": second}


# ----------------------------------------------------------------------------------------------- methods


async def test_method_requests_are_answered_with_status_and_payload(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    answers: dict[str, tuple[int, Any]] = {
        "reboot": (200, {"rebooting": True, "in": [1, 2]}),
        "thermostat*getMaxMinReport": (201, "report"),
        "*leadingStar": (202, 3.5),
        "ping": (204, None),
        "missing": (404, {"error": "no such method"}),
    }
    seen: list[tuple[str, str | None, str, Any, str]] = []

    async def serve() -> None:
        async for request in client.method_requests():
            seen.append(
                (request.name, request.component, request.command, request.payload, request.request_id)
            )
            status, payload = answers[request.name]
            await request.respond(status, payload)

    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        await wait_subscribed(hub, METHODS_SUBSCRIPTION, device.device_id)
        results = {
            "reboot": await hub.invoke_method(device.device_id, "reboot", {"delay": 1}, timeout=STEP),
            "thermostat*getMaxMinReport": await hub.invoke_method(
                device.device_id, "thermostat*getMaxMinReport", "2024-01-01T00:00:00Z", timeout=STEP
            ),
            "*leadingStar": await hub.invoke_method(
                device.device_id, "*leadingStar", [1, None], timeout=STEP
            ),
            "ping": await hub.invoke_method(device.device_id, "ping", timeout=STEP),
            "missing": await hub.invoke_method(device.device_id, "missing", {}, timeout=STEP),
        }
        tasks.cancel_scope.cancel()
    assert {name: (result.status, result.payload) for name, result in results.items()} == answers
    assert [entry[:4] for entry in seen] == [
        ("reboot", None, "reboot", {"delay": 1}),
        ("thermostat*getMaxMinReport", "thermostat", "getMaxMinReport", "2024-01-01T00:00:00Z"),
        ("*leadingStar", None, "*leadingStar", [1, None]),
        ("ping", None, "ping", None),
        ("missing", None, "missing", {}),
    ]
    request_ids = [entry[4] for entry in seen]
    assert all(request_ids), "every request carries the hub's $rid"
    assert len(set(request_ids)) == len(request_ids)


# -------------------------------------------------------------------------------------- cloud-to-device


async def test_cloud_messages_carry_the_hubs_fields_and_complete_only_when_taken(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    device_id = device.device_id
    sent_id = await hub.send_c2d(
        device_id,
        b"first",
        properties=AWKWARD_PROPERTIES,
        message_id="c2d-1",
        correlation_id="corr-1",
        user_id="backend",
        content_type="text/plain",
        content_encoding="utf-8",
        ack="full",
    )
    assert sent_id == "c2d-1"
    assert hub.c2d_queue_length(device_id) == 1
    async with client:
        messages = client.cloud_messages()
        (first,) = await take(messages, 1)
        assert first.body == b"first"
        assert first.message_id == "c2d-1"
        assert first.correlation_id == "corr-1"
        assert first.user_id == "backend"
        assert first.content_type == "text/plain"
        assert first.content_encoding == "utf-8"
        assert dict(first.properties) == AWKWARD_PROPERTIES
        assert first.ack == "full"
        assert first.to == f"/devices/{device_id}/messages/devicebound"
        assert first.expiry_time is not None
        assert first.expiry_time > datetime.now(UTC)
        await round_trips(client)
        assert hub.c2d_queue_length(device_id) == 0

        # Delivered while nobody takes it: the client holds it, the hub still waits for the PUBACK.
        await hub.send_c2d(device_id, "second", properties={"n": "2"})
        await round_trips(client)
        connection = hub.connection(device_id)
        assert connection is not None
        assert hub.core.undelivered(connection) == [], "the hub has delivered the second message"
        assert hub.c2d_queue_length(device_id) == 1, (
            "the message was completed before the application took it"
        )

        (second,) = await take(messages, 1)
        assert (second.body, dict(second.properties), second.ack) == (b"second", {"n": "2"}, "none")
        await round_trips(client)
        assert hub.c2d_queue_length(device_id) == 0


async def test_a_message_taken_just_before_closing_is_completed(
    hub: Emulator, device: DeviceIdentity, client: aioiothub.IoTHubDeviceClient
) -> None:
    await hub.send_c2d(device.device_id, b"last words")
    async with client:
        (message,) = await take(client.cloud_messages(), 1)
        assert message.body == b"last words"
    # Closing the client must not lose the acknowledgement of a message the application took.
    await hub.wait_disconnected(device.device_id, timeout=STEP)
    assert hub.c2d_queue_length(device.device_id) == 0


# -------------------------------------------------------------------------------------------- concurrency


async def test_a_thousand_concurrent_sends_all_arrive(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("flood"))
    count = 1000
    async with device_client(hub, device, TCP_SAS, tmp_path, max_in_flight=32) as client:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                for number in range(count):
                    tasks.start_soon(
                        client.send_message, aioiothub.Message(str(number), message_id=str(number))
                    )
        records = hub.telemetry(device.device_id)
    assert len(records) == count
    assert sorted(int(record.body) for record in records) == list(range(count))
    assert {record.system_properties["$.mid"] for record in records} == {
        str(number) for number in range(count)
    }


async def test_qos_0_send_does_not_wait_for_the_hubs_acknowledgement(tmp_path: Path) -> None:
    # A private emulator: delaying PUBACKs is hub-wide and would slow every other test down.
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device(new_id("qos0"))
        async with device_client(hub, device, TCP_SAS, tmp_path) as client:
            hub.delay_pubacks(STEP * 2)
            with anyio.fail_after(STEP):
                await client.send_message(b"not acknowledged", qos=0)
                await hub.wait_for_telemetry(1, device_id=device.device_id, timeout=STEP)
            hub.delay_pubacks(0)
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"not acknowledged"]
