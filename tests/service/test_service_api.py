"""The service REST API over real HTTPS: identities, twins, query, statistics and the emulator-only endpoints."""

from __future__ import annotations

import json

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import c2d_subscription
from aioiothub.testing import EmulatedDevice
from tests.service.service_helpers import service_client

pytestmark = pytest.mark.anyio

THUMBPRINT = "AB" * 20


async def test_identity_life_cycle_with_etags(iothub_emulator: Emulator) -> None:
    async with service_client(iothub_emulator) as http:
        created = await http.put("/devices/d1", json={"deviceId": "d1", "authentication": {"type": "sas"}})
        assert created.status_code == 200
        device = created.json()
        assert device["authentication"]["symmetricKey"]["primaryKey"] == iothub_emulator.identity("d1").primary_key
        assert created.headers["etag"] == f'"{device["etag"]}"'
        assert (await http.put("/devices/d1", json={"deviceId": "d1"})).status_code == 409
        disabled = await http.put("/devices/d1", json={**device, "status": "disabled"}, headers={"If-Match": "*"})
        assert disabled.json()["status"] == "disabled"
        assert not iothub_emulator.identity("d1").enabled
        stale = await http.delete("/devices/d1", headers={"If-Match": f'"{device["etag"]}"'})
        assert stale.status_code == 412
        x509 = {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": THUMBPRINT}}
        assert (await http.put("/devices/d2", json={"deviceId": "d2", "authentication": x509})).status_code == 200
        assert iothub_emulator.identity("d2").thumbprints == {THUMBPRINT}
        module = await http.put("/devices/d2/modules/m1", json={"moduleId": "m1", "managedBy": "me"})
        assert module.json()["managedBy"] == "me"
        assert [item["moduleId"] for item in (await http.get("/devices/d2/modules")).json()] == ["m1"]
        assert [item["deviceId"] for item in (await http.get("/devices")).json()] == ["d1", "d2"]
        statistics = (await http.get("/statistics/devices")).json()
        assert statistics == {"totalDeviceCount": 2, "enabledDeviceCount": 1, "disabledDeviceCount": 1}
        current = disabled.json()["etag"]
        assert (await http.delete("/devices/d1", headers={"If-Match": f'"{current}"'})).status_code == 204
        assert (await http.delete("/devices/d2")).status_code == 204
        missing = await http.get("/devices/d2/modules/m1")
        assert missing.status_code == 404
        assert missing.json()["Message"].startswith("ErrorCode:DeviceNotFound;")
    assert iothub_emulator.identities() == []


async def test_twin_patch_replace_and_etag(iothub_emulator: Emulator, iothub_device: EmulatedDevice) -> None:
    device_id = iothub_device.device_id
    await iothub_device.client.update_reported_properties({"fw": "1.0"})
    send, received = anyio.create_memory_object_stream[dict[str, object]](10)
    async with service_client(iothub_emulator) as http, received, anyio.create_task_group() as tasks:

        async def collect() -> None:
            async with send:
                async for patch in iothub_device.client.desired_property_patches():
                    await send.send(patch)

        tasks.start_soon(collect)
        await iothub_emulator.wait_subscribed(device_id, "$iothub/twin/PATCH/properties/desired/#")
        twin = (await http.get(f"/twins/{device_id}")).json()
        assert twin["properties"]["reported"] == {"fw": "1.0", "$version": 2}
        patched = await http.patch(
            f"/twins/{device_id}",
            json={"tags": {"site": "b1"}, "properties": {"desired": {"a": 1, "b": 2}}},
            headers={"If-Match": f'"{twin["etag"]}"'},
        )
        assert patched.status_code == 200
        stale = await http.patch(f"/twins/{device_id}", json={"tags": {"x": 1}}, headers={"If-Match": twin["etag"]})
        assert stale.status_code == 412
        replaced = await http.put(
            f"/twins/{device_id}", json={"tags": {"site": "b2"}, "properties": {"desired": {"a": 1, "c": 3}}}
        )
        assert replaced.json()["tags"] == {"site": "b2"}
        assert replaced.json()["properties"]["desired"] == {"a": 1, "c": 3, "$version": 3}
        bad = await http.patch(f"/twins/{device_id}", json={"properties": {"desired": {"bad.key": 1}}})
        assert bad.status_code == 400
        with anyio.fail_after(10):
            patches = [await received.receive(), await received.receive()]
        tasks.cancel_scope.cancel()
    # The device applied both and ended where the service left the twin.
    assert patches == [{"a": 1, "b": 2, "$version": 2}, {"b": None, "c": 3, "$version": 3}]
    assert (await iothub_device.client.get_twin()).desired == {"a": 1, "c": 3, "$version": 3}


async def test_query_subset_and_paging(iothub_emulator: Emulator) -> None:
    for index in range(5):
        iothub_emulator.add_device(f"q{index}")
        await iothub_emulator.update_twin(f"q{index}", tags={"floor": index, "site": "b1" if index < 3 else "b2"})
    async with service_client(iothub_emulator) as http:
        answer = await http.post(
            "/devices/query", json={"query": "SELECT * FROM devices WHERE tags.site = 'b1' AND tags.floor >= 1"}
        )
        assert answer.headers["x-ms-item-type"] == "twin"
        assert [twin["deviceId"] for twin in answer.json()] == ["q1", "q2"]
        everything = {"query": "SELECT * FROM devices"}
        page = await http.post("/devices/query", json=everything, headers={"x-ms-max-item-count": "2"})
        assert [twin["deviceId"] for twin in page.json()] == ["q0", "q1"]
        rest = await http.post(
            "/devices/query",
            json={"query": "SELECT * FROM devices"},
            headers={"x-ms-max-item-count": "10", "x-ms-continuation": page.headers["x-ms-continuation"]},
        )
        assert [twin["deviceId"] for twin in rest.json()] == ["q2", "q3", "q4"]
        assert "x-ms-continuation" not in rest.headers
        unsupported = await http.post("/devices/query", json={"query": "SELECT deviceId FROM devices GROUP BY x"})
        assert unsupported.status_code == 400


async def test_c2d_over_rest_with_feedback(iothub_emulator: Emulator, iothub_device: EmulatedDevice) -> None:
    device_id = iothub_device.device_id
    messages = iothub_device.client.cloud_messages()
    async with service_client(iothub_emulator, "service") as http:
        sent = await http.post(
            f"/emulator/devices/{device_id}/messages",
            json={"body": "hello", "properties": {"k": "v"}, "ack": "full", "correlationId": "c1"},
        )
        assert sent.status_code == 201
        with anyio.fail_after(10):
            message = await anext(messages)
        assert message.body == b"hello"
        assert message.properties["k"] == "v"
        assert message.message_id == sent.json()["messageId"]
        assert message.correlation_id == "c1"
        feedback = await http.get("/emulator/feedback", params={"deviceId": device_id, "count": 1, "timeout": 10})
        assert [(item["originalMessageId"], item["statusCode"]) for item in feedback.json()] == [
            (sent.json()["messageId"], "Success")
        ]
        await iothub_emulator.wait_subscribed(device_id, c2d_subscription(device_id))
        assert (await http.post("/emulator/devices/nobody/messages", json={"body": "x"})).status_code == 404


async def test_telemetry_over_rest_is_the_in_process_record(
    iothub_emulator: Emulator, iothub_device: EmulatedDevice
) -> None:
    device_id = iothub_device.device_id
    client = iothub_device.client
    async with service_client(iothub_emulator, "service") as http:
        async with http.stream("GET", f"/emulator/devices/{device_id}/telemetry/stream") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == ": following telemetry"
            await client.send_message({"t": 21})
            await client.send_message(b"\xff raw")
            events = []
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("data: "):
                        events.append(json.loads(line.removeprefix("data: ")))
                        if len(events) == 2:
                            break
        stored = await http.get(f"/emulator/devices/{device_id}/telemetry", params={"count": 2, "timeout": 10})
        in_process = [record.as_dict() for record in iothub_emulator.telemetry(device_id)]
        assert stored.json() == in_process == events
        assert [event["body"] for event in events] == [{"t": 21}, None]
        assert events[1]["bodyBase64"] == "/yByYXc="
        assert events[0]["systemProperties"]["$.ct"] == "application/json"
        assert events[0]["annotations"]["iothub-connection-device-id"] == device_id
        timed_out = await http.get(f"/emulator/devices/{device_id}/telemetry", params={"count": 3, "timeout": 0.2})
        assert timed_out.status_code == 408


async def test_purging_the_command_queue_removes_every_waiting_message_with_feedback(iothub_emulator: Emulator) -> None:
    iothub_emulator.add_device("offline")
    for index in range(3):
        await iothub_emulator.send_c2d("offline", b"m%d" % index, message_id=f"p{index}", ack="negative")
    async with service_client(iothub_emulator, "service") as http:
        purged = await http.delete("/devices/offline/commands", params={"api-version": "2021-04-12"})
        assert purged.status_code == 200
        assert purged.json() == {"totalMessagesPurged": 3, "deviceId": "offline", "moduleId": None}
        assert iothub_emulator.c2d_queue_length("offline") == 0
        records = iothub_emulator.feedback("offline")
        assert [(record.original_message_id, record.status) for record in records] == [
            ("p0", "Purged"),
            ("p1", "Purged"),
            ("p2", "Purged"),
        ]
        assert (await http.delete("/devices/nobody/commands")).status_code == 404
        async with service_client(iothub_emulator, "registryRead") as reader:
            assert (await reader.delete("/devices/offline/commands")).status_code == 401
