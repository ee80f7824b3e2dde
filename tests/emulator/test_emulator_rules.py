"""Whatever a device does wrong closes only its own connection, with the reason logged."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import anyio
import pytest

from aioiothub.emulator import Emulator, Identity
from aioiothub.protocol.connect import username
from aioiothub.protocol.mqtt import (
    PingResp,
    PubAck,
    SubAck,
    encode_connect,
    encode_pingreq,
    encode_publish,
    encode_subscribe,
)
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_RESPONSE_SUBSCRIPTION, c2d_subscription
from tests.emulator.emulator_helpers import STEP, RawClient, raw_client, raw_connection, sas_password

pytestmark = pytest.mark.anyio

Misbehaviour = Callable[[Emulator, Identity], Awaitable[None]]


async def _connected_then(hub: Emulator, device: Identity, data: bytes) -> None:
    async with raw_client(hub, device) as client:
        await client.send(data)
        await client.expect_closed()


async def _before_connect(hub: Emulator, device: Identity, data: bytes) -> None:
    async with raw_connection(hub) as client:
        await client.send(data)
        await client.expect_closed()


def _after_connect(data: bytes) -> Misbehaviour:
    return lambda hub, device: _connected_then(hub, device, data)


def _instead_of_connect(data: bytes) -> Misbehaviour:
    return lambda hub, device: _before_connect(hub, device, data)


async def _truncated_then_gone(hub: Emulator, device: Identity) -> None:
    async with raw_client(hub, device) as client:
        packet = encode_publish("devices/dev1/messages/events/", b"x" * 100, 1, 7)
        await client.send(packet[:20])
    await hub.wait_disconnected("dev1", timeout=STEP)


async def _random_bytes(hub: Emulator, device: Identity) -> None:
    # Random bytes may look like the start of a long packet; then the keep-alive deadline ends it.
    async with raw_client(hub, device, keepalive=1) as client:
        await client.send(os.urandom(256))
        await client.expect_closed()


async def _second_connect(hub: Emulator, device: Identity) -> None:
    async with raw_client(hub, device) as client:
        await client.send(encode_connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device)))
        await client.expect_closed()


MISBEHAVIOURS: dict[str, tuple[Misbehaviour, str]] = {
    "subscribe to another device's messages": (
        _after_connect(encode_subscribe(1, [("devices/dev2/messages/devicebound/#", 1)])),
        "SUBSCRIBE to 'devices/dev2/messages/devicebound/#' is not allowed",
    ),
    "subscribe to everything": (_after_connect(encode_subscribe(1, [("#", 0)])), "SUBSCRIBE to '#'"),
    "publish as another device": (
        _after_connect(encode_publish("devices/dev2/messages/events/", b"spoof", 1, 1)),
        "PUBLISH to 'devices/dev2/messages/events/' is not allowed",
    ),
    "publish to an unknown topic": (
        _after_connect(encode_publish("some/topic", b"x", 0)),
        "PUBLISH to 'some/topic' is not allowed",
    ),
    "publish to a DPS topic": (
        _after_connect(encode_publish("$dps/registrations/PUT/iotdps-register/?$rid=1", b"{}", 0)),
        "not allowed",
    ),
    "QoS 2 publish": (
        _after_connect(encode_publish("devices/dev1/messages/events/", b"x", 2, 1)),
        "QoS 2 PUBLISH",
    ),
    "twin request without $rid": (_after_connect(encode_publish("$iothub/twin/GET/", b"", 0)), "twin request"),
    "malformed property bag": (
        _after_connect(encode_publish("devices/dev1/messages/events/a=%zz", b"", 0)),
        "malformed",
    ),
    "random bytes after CONNECT": (_random_bytes, "closed: "),
    "a reserved packet type instead of CONNECT": (
        _instead_of_connect(b"\x00\x05" + os.urandom(5)),
        "malformed packet",
    ),
    "a packet before CONNECT": (_instead_of_connect(encode_pingreq()), "first packet is PingReq"),
    "an oversize packet": (_after_connect(b"\x30\xff\xff\xff\x7f"), "packet too large"),
    "telemetry over 256 KiB": (
        _after_connect(encode_publish("devices/dev1/messages/events/", b"x" * (256 * 1024 + 1), 1, 1)),
        "exceeds 262144 bytes",
    ),
    "a reserved packet type": (_after_connect(b"\xf0\x00"), "malformed packet"),
    "a second CONNECT": (_second_connect, "a second CONNECT"),
    "a truncated packet, then gone": (_truncated_then_gone, "without DISCONNECT"),
}


@pytest.mark.parametrize("case", list(MISBEHAVIOURS))
async def test_misbehaviour_closes_only_that_connection(case: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aioiothub.emulator")
    misbehave, reason = MISBEHAVIOURS[case]
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        healthy = hub.add_device("dev2")
        async with raw_client(hub, healthy) as bystander:
            await _healthy_round_trip(bystander, packet_id=1)
            await misbehave(hub, device)
            await _healthy_round_trip(bystander, packet_id=2)
            assert hub.is_connected("dev2")
            assert not hub.is_connected("dev1")
            records = await hub.wait_for_telemetry(2, device_id="dev2", timeout=STEP)
            assert [record.body for record in records] == [b"ping 1", b"ping 2"]
        assert hub.telemetry("dev1") == []
    closes = [record.getMessage() for record in caplog.records if "connection closed" in record.getMessage()]
    assert any(reason in message for message in closes), closes
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "aioiothub.emulator")


async def _healthy_round_trip(client: RawClient, *, packet_id: int) -> None:
    await client.send(encode_pingreq())
    assert isinstance(await client.receive(), PingResp)
    await client.send(encode_publish("devices/dev2/messages/events/", f"ping {packet_id}".encode(), 1, packet_id))
    assert await client.receive() == PubAck(packet_id)


async def test_qos_2_subscription_is_granted_qos_1() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            ack = await client.subscribe(
                1, [(c2d_subscription("dev1"), 2), (TWIN_RESPONSE_SUBSCRIPTION, 0), (METHODS_SUBSCRIPTION, 1)]
            )
            assert ack == SubAck(1, (1, 0, 1))


async def test_many_bad_connections_at_once_leave_the_hub_working() -> None:
    async with Emulator(websocket_port=None) as hub:
        devices = [hub.add_device(f"bad{index}") for index in range(20)]
        healthy = hub.add_device("dev2")
        async with raw_client(hub, healthy) as bystander:
            async with anyio.create_task_group() as task_group:
                for device in devices:
                    task_group.start_soon(_before_connect, hub, device, b"\x00\x05" + os.urandom(5))
                    task_group.start_soon(_connected_then, hub, device, b"\x30\x02\x00\x00")
            await _healthy_round_trip(bystander, packet_id=1)
            assert not any(hub.is_connected(device.device_id) for device in devices)
