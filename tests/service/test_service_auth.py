"""Who may call the service API: each shared access policy limited to its rights, device keys refused."""

from __future__ import annotations

import time

import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token
from tests.service.service_helpers import policy_token, service_client

pytestmark = pytest.mark.anyio


def _error_name(body: dict[str, str]) -> str:
    return body["Message"].split(";")[0].removeprefix("ErrorCode:")


async def test_registry_read_cannot_invoke_methods_or_write(iothub_emulator: Emulator) -> None:
    iothub_emulator.add_device("d1")
    async with service_client(iothub_emulator, "registryRead") as http:
        assert (await http.get("/devices/d1")).status_code == 200
        assert (await http.get("/statistics/devices")).json()["totalDeviceCount"] == 1
        refused = await http.post("/twins/d1/methods", json={"methodName": "reboot"})
        assert refused.status_code == 401
        assert _error_name(refused.json()) == "IotHubUnauthorizedAccess"
        assert (await http.put("/devices/d2", json={"deviceId": "d2"})).status_code == 401
        assert (await http.get("/twins/d1")).status_code == 401
    assert [identity.device_id for identity in iothub_emulator.identities()] == ["d1"]


async def test_service_policy_reads_twins_but_not_the_registry(iothub_emulator: Emulator) -> None:
    iothub_emulator.add_device("d1")
    async with service_client(iothub_emulator, "service") as http:
        assert (await http.get("/twins/d1")).status_code == 200
        assert (await http.get("/devices/d1")).status_code == 401
        assert (await http.delete("/devices/d1", headers={"If-Match": "*"})).status_code == 401
    async with service_client(iothub_emulator, "registryReadWrite") as http:
        assert (await http.put("/devices/d2", json={"deviceId": "d2"})).status_code == 200
        assert (await http.post("/twins/d2/methods", json={"methodName": "m"})).status_code == 401
    async with service_client(iothub_emulator, "device") as http:
        assert (await http.get("/devices/d1")).status_code == 401


async def test_a_device_key_cannot_call_the_service_api(iothub_emulator: Emulator) -> None:
    device = iothub_emulator.add_device("d1")
    assert device.primary_key is not None
    token = generate_sas_token(device_resource_uri("localhost", "d1"), device.primary_key, int(time.time()) + 600)
    async with service_client(iothub_emulator, token=token) as http:
        for response in (
            await http.get("/devices/d1"),
            await http.get("/twins/d1"),
            await http.post("/twins/d1/methods", json={"methodName": "m"}),
            await http.get("/emulator/telemetry"),
        ):
            assert response.status_code == 401
            assert _error_name(response.json()) == "IotHubUnauthorizedAccess"


async def test_token_scope_with_or_without_the_port(iothub_emulator: Emulator) -> None:
    iothub_emulator.add_device("d1")
    assert iothub_emulator.service_host == f"localhost:{iothub_emulator.websocket_port}"
    for scope in ("localhost", f"localhost:{iothub_emulator.websocket_port}"):
        async with service_client(iothub_emulator, token=policy_token(iothub_emulator, scope=scope)) as http:
            assert (await http.get("/devices/d1")).status_code == 200
    for scope in ("otherhub", "localhost:1"):
        async with service_client(iothub_emulator, token=policy_token(iothub_emulator, scope=scope)) as http:
            assert (await http.get("/devices/d1")).status_code == 401


async def test_bad_signature_expired_token_and_no_header(iothub_emulator: Emulator) -> None:
    owner = iothub_emulator.policies[0]
    wrong_key = iothub_emulator.policies[1].primary_key
    forged = generate_sas_token(iothub_emulator.service_host, wrong_key, int(time.time()) + 600, policy_name=owner.name)
    expired = generate_sas_token(iothub_emulator.service_host, owner.primary_key, 1000, policy_name=owner.name)
    for token in (forged, expired, "Bearer nothing"):
        async with service_client(iothub_emulator, token=token) as http:
            assert (await http.get("/devices")).status_code == 401
    async with service_client(iothub_emulator) as http:
        response = await http.get("/devices", headers={"Authorization": ""})
        assert response.status_code == 401
