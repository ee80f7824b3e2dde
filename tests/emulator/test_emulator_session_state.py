"""What the hub keeps of a session between connections, as is_subscribed() shows it; and a will
or a retained message as the hub forwards them (protocol.md §1 CleanSession, §2.1)."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.mqtt import Will, encode_publish
from aioiothub.protocol.topics import c2d_subscription
from tests.emulator.emulator_helpers import STEP, raw_client

pytestmark = pytest.mark.anyio

C2D = c2d_subscription("dev1")


async def test_is_subscribed_follows_the_live_connection_and_its_session() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        assert not hub.is_subscribed("dev1", C2D)  # not connected
        async with raw_client(hub, device, clean_session=False) as client:
            assert not hub.is_subscribed("dev1", C2D)
            await client.subscribe(1, [(C2D, 1)])
            assert hub.is_subscribed("dev1", C2D)
        await hub.wait_disconnected("dev1", timeout=STEP)
        assert not hub.is_subscribed("dev1", C2D)
        async with raw_client(hub, device, clean_session=False):
            assert hub.is_subscribed("dev1", C2D)  # resumed with CleanSession=0
        await hub.wait_disconnected("dev1", timeout=STEP)
        async with raw_client(hub, device, clean_session=True):
            assert not hub.is_subscribed("dev1", C2D)  # CleanSession=1 starts empty
        await hub.wait_disconnected("dev1", timeout=STEP)
        async with raw_client(hub, device, clean_session=False):
            assert not hub.is_subscribed("dev1", C2D)  # and discarded what there was


async def test_a_retained_will_is_forwarded_with_both_properties() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        will = Will("devices/dev1/messages/events/a=1", b"bye", 1, True)
        async with raw_client(hub, device, will=will) as client:
            await client.send(encode_publish("devices/dev1/messages/events/", b"kept", 0, retain=True))
            await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
            assert hub.drop_connection("dev1")
            await client.expect_closed()
        retained, will_record = await hub.wait_for_telemetry(2, "dev1", timeout=STEP)
    assert dict(retained.properties) == {"mqtt-retain": "true"}
    assert (will_record.body, dict(will_record.properties)) == (
        b"bye",
        {"a": "1", "mqtt-retain": "true", "iothub-MessageType": "Will"},
    )
