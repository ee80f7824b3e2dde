"""Cloud-to-device messages and module inputs: queued, delivered at QoS 1, removed only on PUBACK."""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from aioiothub.exceptions import ServiceError
from aioiothub.protocol.connect import username
from aioiothub.protocol.mqtt import PingResp, SubAck, encode_pingreq, encode_puback, encode_subscribe
from aioiothub.protocol.topics import c2d_subscription, input_subscription, parse_c2d_topic, parse_input_topic
from tests.emulator.emulator_helpers import STEP, raw_client, raw_connection, sas_password

pytestmark = pytest.mark.anyio

C2D = c2d_subscription("dev1")


async def test_c2d_message_is_delivered_with_its_properties_and_removed_on_puback() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            assert await client.subscribe(1, [(C2D, 1)]) == SubAck(1, (1,))
            message_id = await hub.send_c2d(
                "dev1",
                b"hello",
                properties={"k": "v w"},
                correlation_id="c1",
                content_type="text/plain",
                ack="full",
            )
            packet = await client.next_publish()
            assert (packet.qos, packet.dup, packet.payload) == (1, False, b"hello")
            properties = parse_c2d_topic(packet.topic).properties
            assert properties["$.mid"] == message_id
            assert properties["$.to"] == "/devices/dev1/messages/devicebound"
            assert properties["$.cid"] == "c1"
            assert properties["$.ct"] == "text/plain"
            assert properties["iothub-ack"] == "full"
            assert properties["k"] == "v w"
            assert "$.exp" in properties
            assert hub.c2d_queue_length("dev1") == 1
            await client.acknowledge(packet)
            await client.send(encode_puback(0xFFFF))  # an unknown id is ignored
            await client.subscribe(2, [(C2D, 1)])
            assert hub.c2d_queue_length("dev1") == 0


async def test_queued_messages_are_delivered_on_subscribe() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        for index in range(3):
            await hub.send_c2d("dev1", b"m%d" % index)
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            bodies = [(await client.next_publish()).payload for _ in range(3)]
            assert bodies == [b"m0", b"m1", b"m2"]


async def test_unacknowledged_messages_are_redelivered_with_dup_after_reconnect() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        await hub.send_c2d("dev1", b"first")
        await hub.send_c2d("dev1", b"second")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            first = await client.next_publish()
            second = await client.next_publish()
            assert (first.dup, second.dup) == (False, False)
            await client.acknowledge(first)
            await client.subscribe(2, [(C2D, 1)])  # a round trip: the PUBACK has been handled
        await hub.wait_disconnected("dev1", timeout=STEP)
        assert hub.c2d_queue_length("dev1") == 1
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            again = await client.next_publish()
            assert (again.payload, again.dup) == (b"second", True)


async def test_clean_session_0_keeps_the_subscription_and_delivers_on_reconnect() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device, clean_session=False) as client:
            await client.subscribe(1, [(C2D, 1)])
        await hub.wait_disconnected("dev1", timeout=STEP)
        await hub.send_c2d("dev1", b"while you were away")
        async with raw_client(hub, device, clean_session=False) as client:
            # The CONNACK was checked by raw_client; the message arrives without a new SUBSCRIBE.
            packet = await client.next_publish()
            assert packet.payload == b"while you were away"
            await client.acknowledge(packet)


async def test_session_present_flag() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")

        async def connack(clean_session: bool) -> bool:
            async with raw_connection(hub) as client:
                ack = await client.connect(
                    "dev1", username(hub.hostname, "dev1"), sas_password(hub, device), clean_session=clean_session
                )
                assert ack.return_code == 0
                await client.subscribe(1, [(C2D, 1)])
            await hub.wait_disconnected("dev1", timeout=STEP)
            return ack.session_present

        assert await connack(clean_session=False) is False
        assert await connack(clean_session=False) is True
        assert await connack(clean_session=True) is False
        assert await connack(clean_session=False) is False


async def test_clean_session_1_drops_the_subscription() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device, clean_session=True) as client:
            await client.subscribe(1, [(C2D, 1)])
        await hub.wait_disconnected("dev1", timeout=STEP)
        await hub.send_c2d("dev1", b"queued")
        async with raw_client(hub, device, clean_session=True) as client:
            # The first answer must be the PINGRESP, not a PUBLISH of the queued message.
            await client.send(encode_pingreq())
            assert isinstance(await client.receive(), PingResp)
            assert hub.c2d_queue_length("dev1") == 1
            await client.subscribe(1, [(C2D, 1)])
            assert (await client.next_publish()).payload == b"queued"


async def test_qos_0_subscription_gets_messages_at_qos_0_and_they_complete_at_once() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 0)])
            await hub.send_c2d("dev1", b"fire and forget")
            packet = await client.next_publish()
            assert (packet.qos, packet.packet_id) == (0, None)
            assert hub.c2d_queue_length("dev1") == 0


async def test_queue_full_while_connected_but_not_acknowledging() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            for index in range(50):
                await hub.send_c2d("dev1", b"%d" % index)
            with pytest.raises(ServiceError, match="queue full"):
                await hub.send_c2d("dev1", b"overflow")
            packets = [await client.next_publish() for _ in range(50)]
            assert len({packet.packet_id for packet in packets}) == 50
            for packet in packets[:10]:
                await client.acknowledge(packet)
            await client.subscribe(2, [(C2D, 1)])
            assert hub.c2d_queue_length("dev1") == 40
            await hub.send_c2d("dev1", b"room again")


async def test_module_input_messages() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with raw_client(hub, module) as client:
            assert await client.subscribe(1, [(input_subscription("dev1", "mod1"), 1)]) == SubAck(1, (1,))
            await hub.send_to_input("dev1", "mod1", "input1", b"data", properties={"p": "1"})
            packet = await client.next_publish()
            parsed = parse_input_topic(packet.topic)
            assert (parsed.input_name, parsed.properties["p"], packet.payload) == ("input1", "1", b"data")
            assert hub.c2d_queue_length("dev1", "mod1") == 1
            await client.acknowledge(packet)
            await client.subscribe(2, [(input_subscription("dev1", "mod1"), 1)])
            assert hub.c2d_queue_length("dev1", "mod1") == 0


async def test_a_module_may_not_subscribe_to_c2d() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with raw_client(hub, module) as client:
            await client.send(encode_subscribe(1, [(C2D, 1)]))
            assert await client.expect_closed() == []


async def test_puback_completes_only_its_own_message() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            await hub.send_c2d("dev1", b"a")
            await hub.send_c2d("dev1", b"b")
            first = await client.next_publish()
            second = await client.next_publish()
            await client.acknowledge(second)
            await client.subscribe(2, [(C2D, 1)])
            assert hub.c2d_queue_length("dev1") == 1
            assert first.packet_id is not None
            await client.send(encode_puback(first.packet_id))
            await client.send(encode_pingreq())
            assert isinstance(await client.receive(), PingResp)
            assert hub.c2d_queue_length("dev1") == 0


async def test_a_message_delivered_ten_times_unacknowledged_is_dead_lettered_with_feedback() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        await hub.send_c2d("dev1", b"poison", message_id="p1", ack="negative")
        for delivery in range(1, 11):
            async with raw_client(hub, device) as client:
                await client.subscribe(1, [(C2D, 1)])
                packet = await client.next_publish()
                assert (packet.payload, packet.dup) == (b"poison", delivery > 1)
            await hub.wait_disconnected("dev1", timeout=STEP)
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(C2D, 1)])
            await client.send(encode_pingreq())
            assert isinstance(await client.receive(), PingResp)  # no eleventh delivery came first
        assert hub.c2d_queue_length("dev1") == 0
        (record,) = hub.feedback("dev1")
        assert (record.original_message_id, record.status, record.description) == (
            "p1",
            "DeliveryCountExceeded",
            "Message delivery count exceeded",
        )
        assert record.device_generation_id == device.generation_id
