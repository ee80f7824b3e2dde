"""What the client tells its user when something is wrong: host names, refusals, deadlines, its repr.

Each message must send the user the right way: name the option to use, the likely cause, and
whether a message that timed out ever left.
"""

from __future__ import annotations

import time

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri
from tests.client.client_helpers import STEP, device_client, module_client, new_id, take

pytestmark = pytest.mark.anyio

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
HOST = "example.azure-devices.net"

# ---------------------------------------------------------------------------- a port in a host name


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (
            lambda: aioiothub.IoTHubDeviceClient(hostname="localhost:18883", device_id="d", shared_access_key=KEY),
            "hostname",
        ),
        (
            lambda: aioiothub.IoTHubDeviceClient(
                hostname=HOST, device_id="d", shared_access_key=KEY, gateway_hostname="edge:8883"
            ),
            "gateway_hostname",
        ),
        (
            lambda: aioiothub.IoTHubDeviceClient.from_connection_string(
                f"HostName=localhost:18883;DeviceId=d;SharedAccessKey={KEY}"
            ),
            "HostName",
        ),
        (
            lambda: aioiothub.IoTHubModuleClient.from_connection_string(
                f"HostName={HOST};DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=[::1]:18883"
            ),
            "GatewayHostName",
        ),
        (
            lambda: aioiothub.ProvisioningClient.from_symmetric_key(
                provisioning_host="localhost:18883", registration_id="r", id_scope="0ne0", symmetric_key=KEY
            ),
            "provisioning_host",
        ),
    ],
    ids=["hostname", "gateway_hostname", "HostName", "GatewayHostName", "provisioning_host"],
)
def test_a_port_in_a_host_name_is_refused_saying_how_to_give_one(build: object, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must be a host name without a port") as excinfo:
        build()  # type: ignore[operator]
    message = str(excinfo.value)
    assert "port=18883" in message or "port=8883" in message
    assert "GatewayHostName" in message
    assert "gateway_hostname=" in message


@pytest.mark.parametrize("host", ["localhost", "hub.azure-devices.net", "::1", "fe80::1:2"])
def test_host_names_without_a_port_are_accepted(host: str) -> None:
    client = aioiothub.IoTHubDeviceClient(hostname=host, device_id="d", shared_access_key=KEY)
    assert host in repr(client)


# ------------------------------------------------------------------------------------------- repr


def test_repr_shows_the_device_and_module_ids_and_never_the_key() -> None:
    device = aioiothub.IoTHubDeviceClient(hostname=HOST, device_id="dev1", shared_access_key=KEY)
    module = aioiothub.IoTHubModuleClient.from_connection_string(
        f"HostName={HOST};DeviceId=dev1;ModuleId=mod1;SharedAccessKey={KEY}"
    )
    assert repr(device) == f"<IoTHubDeviceClient hostname={HOST!r} device_id='dev1' not open>"
    assert repr(module) == f"<IoTHubModuleClient hostname={HOST!r} device_id='dev1' module_id='mod1' not open>"
    for text in (repr(device), repr(module), str(device), str(module)):
        assert KEY not in text


async def test_repr_of_an_open_client_says_it_is_connected(hub: Emulator) -> None:
    device = hub.add_device(new_id("repr"))
    module = hub.add_module(device.device_id, "mod1")
    async with device_client(hub, device) as client, module_client(hub, module) as module_side:
        assert repr(client).endswith(f"device_id={device.device_id!r} connected>")
        assert repr(module_side).endswith(f"device_id={device.device_id!r} module_id='mod1' connected>")
        assert device.primary_key is not None
        assert device.primary_key not in repr(client)


# ----------------------------------------------------------------------------- a disabled device


async def test_a_disabled_device_is_refused_with_an_error_saying_it_may_be_disabled(hub: Emulator) -> None:
    device = hub.add_device(new_id("disabled"))
    hub.set_device_status(device.device_id, enabled=False)
    with pytest.raises(aioiothub.DeviceDisabledError, match=r"CONNACK 3.*the device may be disabled") as excinfo:
        async with device_client(hub, device):
            pytest.fail("a disabled device connected")
    assert isinstance(excinfo.value, aioiothub.ConnectError)
    assert excinfo.value.return_code == 3


# --------------------------------------------------------------------------- an expired SAS token


async def test_an_expired_sas_token_names_renew_sas_token_and_an_iso_time(hub: Emulator) -> None:
    device = hub.add_device(new_id("expired"))
    assert device.primary_key is not None
    expiry = int(time.time()) - 10
    token = aioiothub.generate_sas_token(
        device_resource_uri(hub.hostname, device.device_id), device.primary_key, expiry
    )
    client = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname,
        device_id=device.device_id,
        sas_token=token,
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
    with pytest.raises(aioiothub.CredentialError) as excinfo:
        async with client:
            pytest.fail("connected with an expired token")
    message = str(excinfo.value)
    assert f"expired at {moment}" in message
    assert "renew_sas_token=" in message
    assert "pass renew=..." not in message
    assert token not in message


# ------------------------------------------------------------------------- send_message deadlines


async def test_a_send_without_a_connection_times_out_saying_it_was_not_sent(hub: Emulator) -> None:
    device = hub.add_device(new_id("unsent"))
    async with device_client(hub, device, request_timeout=0.3) as client:
        # Disabling drops the connection and refuses every reconnect (CONNACK 3): no connection for
        # the whole deadline.
        states = client.connection_states()
        hub.set_device_status(device.device_id, enabled=False)
        assert await take(states, 2) == [True, False]  # the client knows it has no connection
        with pytest.raises(aioiothub.SendTimeoutError, match=r"^the message was not sent") as excinfo:
            await client.send_message(b"never sent")
        assert excinfo.value.sent is False
        assert isinstance(excinfo.value, TimeoutError)
        hub.set_device_status(device.device_id, enabled=True)
    assert hub.telemetry(device.device_id) == []


async def test_a_send_whose_puback_is_late_times_out_saying_it_was_sent(hub: Emulator) -> None:
    device = hub.add_device(new_id("late"))
    async with device_client(hub, device, request_timeout=0.3, liveness_timeout=30.0) as client:
        hub.delay_pubacks(2 * STEP)
        try:
            with pytest.raises(aioiothub.SendTimeoutError, match=r"^the message was sent but .*\(PUBACK\)") as excinfo:
                await client.send_message(b"sent, acknowledged late")
        finally:
            hub.delay_pubacks(0)
        assert excinfo.value.sent is True
    (record,) = await hub.wait_for_telemetry(1, device_id=device.device_id, timeout=STEP)
    assert record.body == b"sent, acknowledged late"


# ------------------------------------------------------------------------------ why a drop happened


async def test_a_drop_without_reconnecting_says_why_and_chains_the_loss(hub: Emulator) -> None:
    device = hub.add_device(new_id("dropped"))
    client = device_client(hub, device, reconnect=False)

    async def drop_and_wait() -> None:
        async with client:
            hub.drop_connection(device.device_id)
            with anyio.fail_after(STEP):
                await anyio.sleep_forever()  # ended by the client failing

    with pytest.raises(aioiothub.ConnectionLostError) as excinfo:
        await drop_and_wait()
    error = excinfo.value
    assert "reconnecting is disabled" in str(error)
    assert error.reason in (aioiothub.LossReason.EOF, aioiothub.LossReason.RESET)
    assert isinstance(error.__cause__, aioiothub.ConnectionLostError)
    assert error.__cause__.reason is error.reason
