"""Wills, RETAIN, CleanSession, output QoS, methods by name and SAS tokens, against the emulator.

Each feature is checked on both ends: what the client did and what the hub recorded (telemetry
records with the properties the hub adds, subscriptions, queues, connections).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator, Identity
from aioiothub.protocol.sas import device_resource_uri
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION
from tests.client.client_helpers import (
    STEP,
    TCP_SAS,
    client_options,
    device_client,
    module_client,
    new_id,
    round_trips,
    take,
    wait_subscribed,
)

pytestmark = pytest.mark.anyio


def _c2d(device_id: str) -> str:
    return f"devices/{device_id}/messages/devicebound/#"


def _token(hub: Emulator, identity: Identity, lifetime: float) -> str:
    assert identity.primary_key is not None
    resource = device_resource_uri(hub.hostname, identity.device_id, identity.module_id)
    return aioiothub.generate_sas_token(resource, identity.primary_key, int(time.time() + lifetime))


async def test_the_will_is_sent_when_the_connection_drops_and_not_when_the_client_closes(hub: Emulator) -> None:
    device = hub.add_device(new_id("will"))
    will = aioiothub.Message.json({"state": "offline"}, properties={"reason": "connection-lost"})
    async with device_client(hub, device, will=will, reconnect=aioiothub.ReconnectPolicy(initial_delay=0)) as client:
        assert hub.drop_connection(device.device_id)
        (record,) = await hub.wait_for_telemetry(1, device.device_id, timeout=STEP)
        await client.wait_connected()
        await round_trips(client)
    await hub.wait_disconnected(device.device_id, timeout=STEP)
    assert record.json() == {"state": "offline"}
    assert dict(record.properties) == {"reason": "connection-lost", "iothub-MessageType": "Will"}
    assert record.system_properties["$.ct"] == "application/json"
    # The clean close at the end of the block discarded the will of the second connection.
    assert len(hub.telemetry(device.device_id)) == 1


async def test_a_module_s_will_is_telemetry_of_the_module(hub: Emulator) -> None:
    device = hub.add_device(new_id("will"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module, will=aioiothub.Message(b"gone")):
        assert hub.drop_connection(device.device_id, module.module_id)
        (record,) = await hub.wait_for_telemetry(1, device.device_id, module.module_id, timeout=STEP)
    assert (record.module_id, record.body) == (module.module_id, b"gone")
    assert record.properties["iothub-MessageType"] == "Will"


async def test_retained_telemetry_is_forwarded_with_mqtt_retain(hub: Emulator) -> None:
    device = hub.add_device(new_id("retain"))
    async with device_client(hub, device) as client:
        await client.send_message({"firmware": "1.2.0"}, retain=True)
        await client.send_message(aioiothub.Message(b"plain", properties={"k": "v"}))
        await client.send_message(aioiothub.Message(b"both", properties={"k": "v"}), qos=0, retain=True)
        await round_trips(client)
        with pytest.raises(TypeError, match="retain must be True or False"):
            await client.send_message(b"x", retain="yes")  # type: ignore[arg-type]
    retained, plain, both = hub.telemetry(device.device_id)
    assert dict(retained.properties) == {"mqtt-retain": "true"}
    assert dict(plain.properties) == {"k": "v"}
    assert dict(both.properties) == {"k": "v", "mqtt-retain": "true"}


async def test_with_clean_session_queued_messages_wait_until_the_client_asks_for_them(hub: Emulator) -> None:
    device = hub.add_device(new_id("clean"))
    async with device_client(hub, device) as client:
        messages = client.cloud_messages()
        await hub.send_c2d(device.device_id, b"first")
        assert [message.body for message in await take(messages, 1)] == [b"first"]
        await messages.aclose()
    await hub.wait_disconnected(device.device_id, timeout=STEP)
    await hub.send_c2d(device.device_id, b"queued while offline")

    # CleanSession=0 (the default): the hub resumes the C2D subscription at once.
    async with device_client(hub, device) as client:
        await round_trips(client)
        assert hub.is_subscribed(device.device_id, _c2d(device.device_id))
    await hub.wait_disconnected(device.device_id, timeout=STEP)

    # CleanSession=1: nothing is subscribed, nothing is delivered, until the client asks.
    async with device_client(hub, device, clean_session=True) as client:
        await round_trips(client)
        assert not hub.is_subscribed(device.device_id, _c2d(device.device_id))
        assert hub.c2d_queue_length(device.device_id) == 1
        (message,) = await take(client.cloud_messages(), 1)
        assert message.body == b"queued while offline"
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 0
    await hub.wait_disconnected(device.device_id, timeout=STEP)
    # The clean session was not kept: a later CleanSession=0 connection starts with nothing.
    async with device_client(hub, device) as client:
        await round_trips(client)
        assert not hub.is_subscribed(device.device_id, _c2d(device.device_id))


async def test_output_messages_can_go_at_qos_0(hub: Emulator) -> None:
    device = hub.add_device(new_id("edge"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module) as client:
        hub.delay_pubacks(STEP * 4)  # a QoS 1 send would now wait; a QoS 0 send does not
        try:
            with anyio.fail_after(STEP):
                await client.send_message_to_output({"n": 1}, "output1", qos=0)
            (record,) = await hub.wait_for_telemetry(1, device.device_id, module.module_id, timeout=STEP)
        finally:
            hub.delay_pubacks(0)
        with pytest.raises(ValueError, match="qos must be 0 or 1"):
            await client.send_message_to_output({"n": 2}, "output1", qos=2)
    assert record.system_properties["$.on"] == "output1"
    assert record.json() == {"n": 1}


async def test_method_requests_by_name_go_to_their_own_loop(hub: Emulator) -> None:
    device = hub.add_device(new_id("methods"))
    async with device_client(hub, device) as client, anyio.create_task_group() as tasks:

        async def serve(name: str | None, label: str) -> None:
            async for request in client.method_requests(name):
                await request.respond(200, {"served_by": label, "method": request.name})

        tasks.start_soon(serve, "reboot", "reboot loop")
        tasks.start_soon(serve, None, "catch-all")
        await wait_subscribed(hub, METHODS_SUBSCRIPTION, device.device_id)
        reboot = await hub.invoke_method(device.device_id, "reboot", timeout=STEP)
        other = await hub.invoke_method(device.device_id, "getLog", timeout=STEP)
        tasks.cancel_scope.cancel()
    assert (reboot.status, reboot.payload) == (200, {"served_by": "reboot loop", "method": "reboot"})
    assert (other.status, other.payload) == (200, {"served_by": "catch-all", "method": "getLog"})


async def test_clients_made_from_a_sas_token_connect_as_its_identity(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("token"))
    module = hub.add_module(device.device_id, new_id("module"))
    options = client_options(hub, device, TCP_SAS, tmp_path)
    async with aioiothub.IoTHubDeviceClient.from_sas_token(_token(hub, device, 3600), **options) as client:
        await client.send_message(b"from the device")
    async with aioiothub.IoTHubModuleClient.from_sas_token(_token(hub, module, 3600), **options) as client:
        await client.send_message(b"from the module")
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"from the device", b"from the module"]
    assert hub.telemetry(device.device_id)[1].module_id == module.module_id


async def test_a_pushed_token_replaces_the_old_one_before_it_expires(hub: Emulator, tmp_path: Path) -> None:
    device = hub.add_device(new_id("token"))
    options = client_options(hub, device, TCP_SAS, tmp_path)
    short_lived = _token(hub, device, 5)
    async with aioiothub.IoTHubDeviceClient.from_sas_token(short_lived, **options) as client:
        with pytest.raises(aioiothub.CredentialError, match="scoped to"):
            await client.update_sas_token(_token(hub, hub.add_device(new_id("other")), 3600))
        with pytest.raises(aioiothub.CredentialError, match="expired"):
            await client.update_sas_token(_token(hub, device, -10))
        await client.update_sas_token(_token(hub, device, 3600))
        assert client.connected
        # The hub ends a connection when its token expires: the first token's end passes unnoticed.
        with pytest.raises(TimeoutError):
            await hub.wait_disconnected(device.device_id, timeout=6)
        await client.send_message(b"still here")
    assert [record.body for record in hub.telemetry(device.device_id)] == [b"still here"]


async def test_only_a_client_made_with_a_sas_token_takes_a_pushed_one(hub: Emulator) -> None:
    device = hub.add_device(new_id("token"))
    async with device_client(hub, device) as client:
        with pytest.raises(RuntimeError, match="needs a client created with a SAS token"):
            await client.update_sas_token(_token(hub, device, 3600))
