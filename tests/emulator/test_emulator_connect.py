"""Connecting to the running emulator over TLS and WebSocket: credentials, sessions and deadlines."""

from __future__ import annotations

import time
from pathlib import Path

import aiomqtt
import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.mqtt import ConnAck, PingResp, encode_connect, encode_pingreq
from tests.emulator.emulator_helpers import STEP, mqtt_client, raw_client, raw_connection, sas_password, x509_context

pytestmark = pytest.mark.anyio


async def test_sas_device_connects_with_aiomqtt_and_is_reported_connected() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with mqtt_client(hub, device):
            await hub.wait_connected("dev1", timeout=STEP)
            assert hub.is_connected("dev1")
        await hub.wait_disconnected("dev1", timeout=STEP)
        assert not hub.is_connected("dev1")


async def test_module_connects() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with mqtt_client(hub, module):
            await hub.wait_connected("dev1", "mod1", timeout=STEP)
            assert not hub.is_connected("dev1")


@pytest.mark.parametrize(("case", "code"), [("bad key", 5), ("disabled", 3), ("expired", 5), ("unknown", 5)])
async def test_refused_connects_get_the_connack_code_then_the_connection_closes(case: str, code: int) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        other = hub.add_device("dev2")
        password = sas_password(hub, device)
        client = "dev1"
        if case == "bad key":
            password = sas_password(hub, device, key=other.primary_key)
        elif case == "disabled":
            hub.set_device_status("dev1", enabled=False)
        elif case == "expired":
            password = sas_password(hub, device, ttl=-10)
        elif case == "unknown":
            client = "ghost"
        async with raw_connection(hub) as raw:
            await raw.send(encode_connect(client, username(hub.hostname, client), password))
            assert await raw.expect_closed() == [ConnAck(session_present=False, return_code=code)]
        assert not hub.is_connected("dev1")


async def test_aiomqtt_sees_a_refusal_as_a_connect_error() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authorized"):
            async with mqtt_client(hub, device, password=sas_password(hub, device, ttl=-10)):
                pass


async def test_disabling_a_connected_device_closes_it_and_its_modules() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with raw_client(hub, device) as device_client, raw_client(hub, module) as module_client:
            hub.set_device_status("dev1", enabled=False)
            assert await device_client.expect_closed() == []
            assert await module_client.expect_closed() == []
        async with raw_connection(hub) as client:
            ack = await client.connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device))
            assert ack.return_code == 3


async def test_refuse_connects_then_accept() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        hub.refuse_connects(1, return_code=3)
        async with raw_connection(hub) as client:
            ack = await client.connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device))
            assert ack == ConnAck(session_present=False, return_code=3)
            await client.expect_closed()
        async with raw_client(hub, device):
            await hub.wait_connected("dev1", timeout=STEP)


async def test_x509_self_signed_device_connects_with_its_certificate(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev2", authentication="x509")
        async with mqtt_client(hub, device, tls_context=x509_context(hub, device, tmp_path)):
            await hub.wait_connected("dev2", timeout=STEP)


async def test_x509_device_added_before_start_is_trusted(tmp_path: Path) -> None:
    hub = Emulator(websocket_port=None)
    device = hub.add_device("early", authentication="x509")
    async with hub, mqtt_client(hub, device, tls_context=x509_context(hub, device, tmp_path)):
        await hub.wait_connected("early", timeout=STEP)


async def test_x509_ca_device_connects(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev3", authentication="x509_ca")
        async with mqtt_client(hub, device, tls_context=x509_context(hub, device, tmp_path)):
            await hub.wait_connected("dev3", timeout=STEP)


async def test_x509_device_without_certificate_or_with_another_devices_certificate_is_refused(
    tmp_path: Path,
) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev2", authentication="x509")
        other = hub.add_device("dev4", authentication="x509")
        with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authorized"):
            async with mqtt_client(hub, device):
                pass
        with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authorized"):
            async with mqtt_client(hub, device, tls_context=x509_context(hub, other, tmp_path)):
                pass


async def test_model_id_in_the_username_is_stored() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("pnp")
        user = username(hub.hostname, "pnp", product_info="test/1.0", model_id="dtmi:com:example:Thermostat;1")
        async with raw_connection(hub) as client:
            ack = await client.connect("pnp", user, sas_password(hub, device))
            assert ack.return_code == 0
            assert device.model_id == "dtmi:com:example:Thermostat;1"


async def test_a_new_connection_closes_the_older_one() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as first, raw_client(hub, device) as second:
            assert await first.expect_closed() == []
            await second.send(encode_pingreq())
            assert isinstance(await second.receive(), PingResp)
            assert hub.is_connected("dev1")


async def test_keepalive_timeout_closes_after_one_and_a_half_intervals() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device, keepalive=1) as client:
            started = anyio.current_time()
            await client.expect_closed(seconds=STEP)
            elapsed = anyio.current_time() - started
            assert 1.3 <= elapsed < 3.0


async def test_pings_keep_the_connection_alive() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device, keepalive=1) as client:
            for _ in range(4):
                await anyio.sleep(0.5)
                await client.send(encode_pingreq())
                assert isinstance(await client.receive(), PingResp)
            assert hub.is_connected("dev1")


async def test_expired_token_disconnects_the_device() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        # Tokens carry whole seconds: this one runs out in one to two seconds.
        expiry = int(time.time()) + 2
        password = sas_password(hub, device, ttl=expiry - time.time())
        async with raw_client(hub, device, password=password) as client:
            await client.expect_closed(seconds=STEP)
            assert time.time() >= expiry - 1
        assert not hub.is_connected("dev1")


async def test_mqtt_3_1_is_refused_with_code_1() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_connection(hub) as client:
            await client.send(
                encode_connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device), protocol_level=3)
            )
            packets = await client.expect_closed()
            assert packets == [ConnAck(session_present=False, return_code=1)]


async def test_websocket_transport() -> None:
    async with Emulator() as hub:
        device = hub.add_device("dev1")
        assert hub.websocket_port is not None
        client = aiomqtt.Client(
            "localhost",
            hub.websocket_port,
            identifier=client_id("dev1"),
            username=username(hub.hostname, "dev1"),
            password=sas_password(hub, device),
            tls_context=hub.client_ssl_context(),
            protocol=aiomqtt.ProtocolVersion.V311,
            transport="websockets",
            websocket_path="/$iothub/websocket",
        )
        async with client:
            await client.publish("devices/dev1/messages/events/", b"over websocket", qos=1)
            records = await hub.wait_for_telemetry(1, device_id="dev1", timeout=STEP)
            assert records[0].body == b"over websocket"
