"""The emulator's port-443 listener as an HTTP server: framing, routing and refusals over real TLS."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri

pytestmark = pytest.mark.anyio


def token(hub: Emulator, device_id: str, key: str, lifetime: int = 3600) -> str:
    return aioiothub.generate_sas_token(device_resource_uri(hub.hostname, device_id), key, int(time.time()) + lifetime)


async def test_routes_and_refusals(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    assert identity.primary_key is not None
    base = f"https://localhost:{hub.websocket_port}"
    good = {"Authorization": token(hub, "dev1", identity.primary_key)}
    async with httpx.AsyncClient(base_url=base, verify=hub.client_ssl_context()) as http:
        # One kept-alive connection carries several requests.
        first = await http.post("/devices/dev1/files", json={"blobName": "a"}, headers=good)
        second = await http.post("/devices/dev1/files", json={"blobName": "b"}, headers=good)
        unknown = await http.get("/no/such/path")
        wrong_method = await http.get("/devices/dev1/files")
        not_json = await http.post("/devices/dev1/files", content=b"{", headers=good)
        no_name = await http.post("/devices/dev1/files", json={}, headers=good)
        unsigned = await http.post("/devices/dev1/files", json={"blobName": "c"})
        other_device = await http.post("/devices/dev2/files", json={"blobName": "c"}, headers=good)
        expired = await http.post(
            "/devices/dev1/files", json={"blobName": "c"},
            headers={"Authorization": token(hub, "dev1", identity.primary_key, lifetime=-10)},
        )
        too_big = await http.post("/devices/dev1/files", content=b"x" * 300_000, headers=good)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["correlationId"] != second.json()["correlationId"]
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405
    assert not_json.status_code == 400
    assert no_name.status_code == 400
    assert unsigned.status_code == 401
    assert "ErrorCode:401002" in unsigned.json()["Message"]
    assert other_device.status_code == 401
    assert expired.status_code == 401
    assert "expired" in expired.json()["Message"]
    assert too_big.status_code == 413


@pytest.mark.usefixtures("transport")  # its last step connects a client over MQTT/WebSocket
async def test_malformed_request_gets_400_and_the_listener_goes_on(hub: Emulator) -> None:
    context = hub.client_ssl_context()
    port = hub.websocket_port
    assert port is not None
    async with await anyio.connect_tcp("127.0.0.1", port, ssl_context=context, tls_hostname="localhost") as stream:
        await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
        answer = await stream.receive()
    assert answer.startswith(b"HTTP/1.1 400")

    # The MQTT WebSocket upgrade still works on the same port.
    identity = hub.add_device("ws")
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.websocket_port, websockets=True, ssl_context=context
    )
    async with client:
        await client.send_message(b"over websocket")
    (record,) = await hub.wait_for_telemetry(1, device_id="ws", timeout=10)
    assert record.body == b"over websocket"


async def test_edge_method_route_needs_a_module_caller(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    assert identity.primary_key is not None
    base = f"https://localhost:{hub.websocket_port}"
    body = {"methodName": "m", "payload": None, "responseTimeoutInSeconds": 5}
    async with httpx.AsyncClient(base_url=base, verify=hub.client_ssl_context()) as http:
        no_module = await http.post(
            "/twins/dev1/methods", json=body, headers={"Authorization": token(hub, "dev1", identity.primary_key)}
        )
        bad_header = await http.post("/twins/dev1/methods", json=body, headers={"x-ms-edge-moduleId": "justone"})
    assert no_module.status_code == 401
    assert bad_header.status_code == 400
    # Without the Edge header the caller is taken for a service SDK, and a device token is no policy's.
    assert json.loads(no_module.content)["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")
