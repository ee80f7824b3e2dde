"""The registry's record of what a device did: connection-state and activity times, as IoT Hub keeps them."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from aioiothub import IoTHubDeviceClient
from aioiothub.emulator import Emulator
from tests.service.service_helpers import service_client

pytestmark = pytest.mark.anyio

NEVER = "0001-01-01T00:00:00Z"
# IoT Hub's shape: UTC with seven fractional digits.
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")


def moment(text: str) -> datetime.datetime:
    assert _TIME.fullmatch(text), text
    return datetime.datetime.fromisoformat(text[:26] + "+00:00")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def test_connects_telemetry_twin_traffic_and_disconnects_are_recorded(
    transport: str, iothub_emulator: Emulator
) -> None:
    identity = iothub_emulator.add_device("dev1")
    async with service_client(iothub_emulator) as http:

        async def device() -> dict[str, Any]:
            answer = await http.get("/devices/dev1")
            assert answer.status_code == 200
            document: dict[str, Any] = answer.json()
            return document

        registered = await device()
        assert (registered["connectionStateUpdatedTime"], registered["lastActivityTime"]) == (NEVER, NEVER)
        assert (await http.get("/twins/dev1")).json()["lastActivityTime"] == NEVER

        before_connect = now()
        client = IoTHubDeviceClient.from_connection_string(
            identity.connection_string, port=iothub_emulator.port, ssl_context=iothub_emulator.client_ssl_context()
        )
        async with client:
            connected = await device()
            assert connected["connectionState"] == "Connected"
            connected_at = moment(connected["connectionStateUpdatedTime"])
            assert before_connect <= connected_at <= now()
            assert moment(connected["lastActivityTime"]) == connected_at

            await client.send_message({"t": 1})
            await iothub_emulator.wait_for_telemetry(1, "dev1", timeout=5)
            sent = await device()
            assert moment(sent["connectionStateUpdatedTime"]) == connected_at
            sent_at = moment(sent["lastActivityTime"])
            assert connected_at <= sent_at <= now()
            assert sent_at == iothub_emulator.telemetry("dev1")[0].enqueued_time

            before_twin = now()
            await client.update_reported_properties({"fw": "1.0"})
            twin_used = await device()
            assert before_twin <= moment(twin_used["lastActivityTime"]) <= now()
            assert moment((await http.get("/twins/dev1")).json()["lastActivityTime"]) == moment(
                twin_used["lastActivityTime"]
            )
            before_disconnect = now()
        await iothub_emulator.wait_disconnected("dev1", timeout=5)
        disconnected = await device()
        assert disconnected["connectionState"] == "Disconnected"
        disconnected_at = moment(disconnected["connectionStateUpdatedTime"])
        assert before_disconnect <= disconnected_at <= now()
        assert moment(disconnected["lastActivityTime"]) == disconnected_at
        assert disconnected["etag"] == registered["etag"]  # activity is not a change of the entry


async def test_an_update_keeps_the_generation_id_and_changes_the_etag(
    transport: str, iothub_emulator: Emulator
) -> None:
    identity = iothub_emulator.add_device("dev1")
    client = IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=iothub_emulator.port, ssl_context=iothub_emulator.client_ssl_context()
    )
    async with service_client(iothub_emulator) as http:
        async with client:
            await client.send_message({"t": 1})
            before = (await http.get("/devices/dev1")).json()
            updated = await http.put(
                "/devices/dev1", json={**before, "status": "disabled"}, headers={"If-Match": f'"{before["etag"]}"'}
            )
            assert updated.status_code == 200, updated.text
            await iothub_emulator.wait_disconnected("dev1", timeout=5)
        again = await http.put(
            "/devices/dev1", json={**updated.json(), "status": "enabled"}, headers={"If-Match": '"*"'}
        )
        after = (await http.get("/devices/dev1")).json()
    assert again.status_code == 200
    assert before["generationId"] == updated.json()["generationId"] == after["generationId"]
    assert len({before["etag"], updated.json()["etag"], after["etag"]}) == 3
    assert (after["status"], after["connectionState"]) == ("enabled", "Disconnected")
    assert moment(after["connectionStateUpdatedTime"]) >= moment(before["connectionStateUpdatedTime"])
