"""Device-to-cloud telemetry: stored with decoded properties, acknowledged after storing."""

from __future__ import annotations

import contextlib
import datetime

import anyio
import pytest

from aioiothub.emulator import Emulator, TelemetryRecord
from aioiothub.protocol.connect import username
from aioiothub.protocol.mqtt import ConnAck, PubAck, Will, encode_connect, encode_disconnect, encode_publish
from tests.emulator.emulator_helpers import STEP, mqtt_client, raw_client, raw_connection, sas_password

pytestmark = pytest.mark.anyio


async def test_system_and_application_properties_are_decoded() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        before = datetime.datetime.now(datetime.UTC)
        async with mqtt_client(hub, device) as client:
            await client.publish(
                "devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=1&flag&sp=a%20b",
                b'{"t": 21.5}',
                qos=1,
            )
        (record,) = hub.telemetry("dev1")
        assert record.device_id == "dev1"
        assert record.module_id is None
        assert record.json() == {"t": 21.5}
        assert dict(record.system_properties) == {"$.mid": "m1", "$.ct": "application/json", "$.ce": "utf-8"}
        assert dict(record.properties) == {"alert": "1", "flag": None, "sp": "a b"}
        assert before <= record.enqueued_time <= datetime.datetime.now(datetime.UTC)
        annotations = record.annotations
        assert annotations["iothub-connection-device-id"] == "dev1"
        assert "iothub-connection-module-id" not in annotations
        assert annotations["iothub-enqueuedtime"].endswith("Z")


async def test_module_telemetry_carries_the_module_id() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with raw_client(hub, module) as client:
            await client.send(encode_publish("devices/dev1/modules/mod1/messages/events/%24.on=out1", b"m", 1, 5))
            assert await client.receive() == PubAck(5)
        (record,) = hub.telemetry("dev1", "mod1")
        assert record.module_id == "mod1"
        assert record.system_properties == {"$.on": "out1"}
        assert record.annotations["iothub-connection-module-id"] == "mod1"
        assert hub.telemetry("dev1") == [record]
        assert hub.telemetry("dev2") == []


async def test_the_message_is_stored_before_its_puback_is_sent() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            for packet_id in range(1, 4):
                await client.send(encode_publish("devices/dev1/messages/events/", b"%d" % packet_id, 1, packet_id))
                assert await client.receive() == PubAck(packet_id)
                assert len(hub.telemetry("dev1")) == packet_id


async def test_qos_0_telemetry_is_stored_without_puback_and_a_trailing_slash_is_tolerated() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.send(encode_publish("devices/dev1/messages/events/k=v/", b"zero", 0))
            records = await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
        assert records[0].properties == {"k": "v"}
        assert records[0].body == b"zero"


async def test_retained_telemetry_gets_the_mqtt_retain_property() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with mqtt_client(hub, device) as client:
            await client.publish("devices/dev1/messages/events/a=1", b"kept?", qos=1, retain=True)
        (record,) = hub.telemetry("dev1")
        assert record.properties == {"a": "1", "mqtt-retain": "true"}


async def test_message_of_exactly_256_kib_is_accepted() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        body = b"x" * (256 * 1024 - len("key") - len("value") - len("m1"))
        async with raw_client(hub, device) as client:
            await client.send(encode_publish("devices/dev1/messages/events/key=value&%24.mid=m1", body, 1, 1))
            assert await client.receive() == PubAck(1)
            await client.send(encode_publish("devices/dev1/messages/events/key=value&%24.mid=m12", body, 1, 2))
            assert await client.expect_closed() == []
        assert len(hub.telemetry("dev1")) == 1


async def test_will_is_published_as_telemetry_when_the_connection_drops() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        will = Will("devices/dev1/messages/events/reason=gone", b"bye", 1, False)
        async with raw_client(hub, device, will=will) as client:
            await hub.wait_connected("dev1", timeout=STEP)
            assert hub.drop_connection("dev1")
            await client.expect_closed()
        (record,) = await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
        assert record.body == b"bye"
        assert record.properties == {"reason": "gone", "iothub-MessageType": "Will"}


async def test_will_is_published_when_the_client_vanishes() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        will = Will("devices/dev1/messages/events/", b"lost", 0, False)
        async with raw_client(hub, device, will=will):
            await hub.wait_connected("dev1", timeout=STEP)
        (record,) = await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
        assert record.properties["iothub-MessageType"] == "Will"


async def test_will_is_discarded_after_disconnect() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        will = Will("devices/dev1/messages/events/", b"never", 1, False)
        async with raw_client(hub, device, will=will) as client:
            await client.send(encode_publish("devices/dev1/messages/events/", b"last", 1, 1))
            await client.send(encode_disconnect())
            assert await client.expect_closed() == [PubAck(1)]
        await hub.wait_disconnected("dev1", timeout=STEP)
        assert [record.body for record in hub.telemetry("dev1")] == [b"last"]


async def test_will_on_a_topic_other_than_telemetry_is_refused() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_connection(hub) as client:
            will = Will("$iothub/twin/GET/?$rid=1", b"", 0, False)
            password = sas_password(hub, device)
            await client.send(encode_connect("dev1", username(hub.hostname, "dev1"), password, will=will))
            assert await client.expect_closed() == [ConnAck(False, 5)]


async def test_delay_pubacks_holds_acknowledgements_back() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            hub.delay_pubacks(0.3)
            started = anyio.current_time()
            await client.send(encode_publish("devices/dev1/messages/events/", b"slow", 1, 1))
            assert await client.receive() == PubAck(1)
            assert anyio.current_time() - started >= 0.3
            hub.delay_pubacks(0)
            started = anyio.current_time()
            await client.send(encode_publish("devices/dev1/messages/events/", b"fast", 1, 2))
            assert await client.receive() == PubAck(2)
            assert anyio.current_time() - started < 0.3


async def test_wait_for_telemetry_filters_by_device_and_returns_all_matches() -> None:
    async with Emulator(websocket_port=None) as hub:
        one = hub.add_device("dev1")
        two = hub.add_device("dev2")
        waiter_result: list[TelemetryRecord] = []
        async with raw_client(hub, one) as first, raw_client(hub, two) as second, anyio.create_task_group() as group:

            async def wait() -> None:
                waiter_result.extend(await hub.wait_for_telemetry(2, device_id="dev2", timeout=STEP))

            group.start_soon(wait)
            await first.send(encode_publish("devices/dev1/messages/events/", b"a", 0))
            await second.send(encode_publish("devices/dev2/messages/events/", b"b", 0))
            await first.send(encode_publish("devices/dev1/messages/events/", b"c", 0))
            await second.send(encode_publish("devices/dev2/messages/events/", b"d", 0))
        assert [record.body for record in waiter_result] == [b"b", b"d"]


async def test_telemetry_stream_yields_new_messages_in_order() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.send(encode_publish("devices/dev1/messages/events/", b"old", 1, 1))
            assert await client.receive() == PubAck(1)
            received: list[bytes] = []
            stream = hub.telemetry_stream("dev1")
            async with anyio.create_task_group() as task_group:

                async def consume() -> None:
                    async with contextlib.aclosing(stream):
                        async for record in stream:
                            received.append(record.body)
                            if len(received) == 3:
                                return

                task_group.start_soon(consume)
                for index in range(3):
                    await client.send(encode_publish("devices/dev1/messages/events/", b"new%d" % index, 0))
            assert received == [b"new0", b"new1", b"new2"]


async def test_telemetry_store_is_bounded() -> None:
    async with Emulator(websocket_port=None, telemetry_limit=3) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            for index in range(1, 6):
                await client.send(encode_publish("devices/dev1/messages/events/", b"%d" % index, 1, index))
                assert await client.receive() == PubAck(index)
        assert [record.body for record in hub.telemetry()] == [b"3", b"4", b"5"]
        hub.clear_telemetry()
        assert hub.telemetry() == []
