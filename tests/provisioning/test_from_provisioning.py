"""Provision, then connect: IoTHubDeviceClient.from_provisioning against the emulator, every transport."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.emulator.hub.dps_enrollments import Allocation
from tests.provisioning.provisioning_helpers import STEP, dps_options, new_id, write_pair
from tests.proxy_helpers import ConnectProxy

pytestmark = pytest.mark.anyio

MODEL_ID = "dtmi:com:example:Thermostat;1"


def group_client(
    hub: Emulator, dps: ProvisioningService, transport: str, **options: Any
) -> aioiothub.ProvisioningClient:
    group = dps.add_enrollment_group(new_id("fleet"), **options.pop("group", {}))
    assert group.primary_key is not None
    return aioiothub.ProvisioningClient.from_enrollment_group_key(
        registration_id=options.pop("registration_id", new_id("sensor")),
        group_key=group.primary_key,
        **dps_options(hub, transport, websockets=options.pop("websockets", False)),
        **options,
    )


@pytest.mark.parametrize("websockets", [False, True], ids=["tls", "websocket"])
async def test_group_device_registers_then_sends_telemetry(
    hub: Emulator, dps: ProvisioningService, transport: str, websockets: bool
) -> None:
    provisioning = group_client(hub, dps, transport, websockets=websockets)
    client = await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning, register_timeout=STEP)
    assert isinstance(client, aioiothub.IoTHubDeviceClient)
    assert client.registration.device_id == provisioning.registration_id
    assert not provisioning.connected
    async with client:
        await client.send_message({"temperature": 21.5})
    (record,) = hub.telemetry(provisioning.registration_id)
    assert record.json() == {"temperature": 21.5}
    assert hub.identity(provisioning.registration_id).primary_key == provisioning.device_key


async def test_x509_device_registers_then_connects(
    hub: Emulator, dps: ProvisioningService, transport: str, tmp_path: Path
) -> None:
    group = dps.add_enrollment_group(new_id("x509-fleet"), attestation="x509")
    registration_id = new_id("x509-sensor")
    credential = write_pair(tmp_path, registration_id, *group.issue_device_certificate(registration_id))
    provisioning = aioiothub.ProvisioningClient.from_x509_certificate(x509=credential, **dps_options(hub, transport))
    async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
        await client.send_message(b"hello")
        twin = await client.get_twin()
    assert twin.desired == {"$version": 1}
    assert [record.body for record in hub.telemetry(registration_id)] == [b"hello"]


async def test_model_id_reaches_dps_and_the_hub(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    provisioning = group_client(hub, dps, transport, model_id=MODEL_ID)
    async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning, payload={"site": "a"}) as client:
        await client.send_message(b"x")
    (record,) = [r for r in dps.registrations() if r.registration_id == provisioning.registration_id]
    assert record.request_payload == {"site": "a", "modelId": MODEL_ID}
    assert hub.identity(provisioning.registration_id).model_id == MODEL_ID


async def test_allocated_device_id_and_initial_twin(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    def allocate(registration_id: str, payload: Any) -> Allocation:
        return Allocation(device_id=f"dev-of-{registration_id}", initial_twin={"properties": {"desired": {"rate": 2}}})

    provisioning = group_client(hub, dps, transport, group={"allocation": allocate})
    async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
        twin = await client.get_twin()
        await client.send_message(b"x")
    assert twin.desired["rate"] == 2
    assert len(hub.telemetry(f"dev-of-{provisioning.registration_id}")) == 1


async def test_an_open_provisioning_client_is_used_as_it_is(hub: Emulator, dps: ProvisioningService,
                                                             transport: str) -> None:
    provisioning = group_client(hub, dps, transport)
    async with provisioning:
        client = await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning)
        assert provisioning.connected
    async with client:
        await client.send_message(b"x")


def _replace_keys(hub: Emulator, device_id: str) -> None:
    # As if the device's hub identity had been re-created by someone else: its old key is refused.
    identity = hub.identity(device_id)
    identity.primary_key = identity.secondary_key = base64.b64encode(secrets.token_bytes(32)).decode()


async def test_a_refused_credential_is_an_error_without_reprovisioning(
    hub: Emulator, dps: ProvisioningService, transport: str
) -> None:
    provisioning = group_client(hub, dps, transport)
    client = await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning, reconnect=False)
    _replace_keys(hub, provisioning.registration_id)
    with pytest.raises(aioiothub.AuthenticationError):
        async with client:
            pass
    assert len([r for r in dps.registrations() if r.registration_id == provisioning.registration_id]) == 1


async def test_reprovisioning_on_a_refused_credential(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    provisioning = group_client(hub, dps, transport)
    client = await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning, reprovision=True)
    first = client.registration
    _replace_keys(hub, provisioning.registration_id)
    async with client:
        await client.send_message(b"after reprovisioning")
    assert client.registration.operation_id != first.operation_id
    (record,) = [r for r in dps.registrations() if r.registration_id == provisioning.registration_id]
    assert record.operation_id == client.registration.operation_id
    assert [r.body for r in hub.telemetry(provisioning.registration_id)] == [b"after reprovisioning"]


async def test_a_failed_registration_raises_before_any_hub_connection(
    hub: Emulator, dps: ProvisioningService, transport: str
) -> None:
    provisioning = group_client(hub, dps, transport, group={"enabled": False})
    with pytest.raises(aioiothub.ServiceError, match="disabled"):
        await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"device_id": "x"}, TypeError, "device_id comes from the registration"),
        ({"shared_access_key": "x"}, TypeError, "shared_access_key comes from the registration"),
        ({"keepalive": 0}, ValueError, "keepalive"),
        ({"reprovision": "yes"}, TypeError, "reprovision"),
    ],
)
async def test_invalid_options_are_refused_before_registering(
    hub: Emulator, dps: ProvisioningService, transport: str, options: dict[str, Any], error: type[Exception],
    match: str
) -> None:
    provisioning = group_client(hub, dps, transport)
    with pytest.raises(error, match=match):
        await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning, **options)
    assert provisioning.registration_id not in [r.registration_id for r in dps.registrations()]


async def test_both_connections_go_through_the_proxy(
    hub: Emulator, dps: ProvisioningService, transport: str, http_proxy: tuple[ConnectProxy, int]
) -> None:
    recorder, proxy_port = http_proxy
    provisioning = group_client(hub, dps, transport, proxy=aioiothub.ProxyOptions("http", "127.0.0.1", proxy_port))
    async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
        await client.send_message(b"via proxy")
    assert recorder.targets == [f"localhost:{hub.port}", f"localhost:{hub.port}"]
    assert [record.body for record in hub.telemetry(provisioning.registration_id)] == [b"via proxy"]
