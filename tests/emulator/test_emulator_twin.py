"""Device twins over MQTT: GET, reported PATCH, desired notifications, limits and 429s."""

from __future__ import annotations

import functools
import json

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.mqtt import PingResp, PubAck, encode_pingreq, encode_publish
from aioiothub.protocol.topics import (
    TWIN_DESIRED_SUBSCRIPTION,
    TWIN_RESPONSE_SUBSCRIPTION,
    parse_twin_desired_topic,
    parse_twin_response_topic,
    twin_get_topic,
    twin_patch_reported_topic,
)
from tests.emulator.emulator_helpers import STEP, RawClient, mqtt_client, raw_client

pytestmark = pytest.mark.anyio


async def _request(
    client: RawClient, topic: str, body: bytes = b"", *, packet_id: int = 1
) -> tuple[int, int | None, bytes]:
    await client.send(encode_publish(topic, body, 1, packet_id))
    assert await client.receive() == PubAck(packet_id)
    response = await client.next_publish()
    parsed = parse_twin_response_topic(response.topic)
    return parsed.status, parsed.version, response.payload


async def _nothing_pending(client: RawClient) -> None:
    # A PINGRESP overtakes nothing: if it comes first, the hub had nothing else queued for us.
    await client.send(encode_pingreq())
    assert isinstance(await client.receive(), PingResp)


async def test_get_returns_both_sections_with_versions() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        await hub.update_desired("dev1", {"interval": 5})
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            status, version, body = await _request(client, twin_get_topic("r1"))
            assert (status, version) == (200, None)
            assert json.loads(body) == {"desired": {"interval": 5, "$version": 2}, "reported": {"$version": 1}}


async def test_reported_patch_merges_and_answers_204_with_the_new_version() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 1)])
            first = await _request(client, twin_patch_reported_topic("a"), b'{"fw": "1.0", "x": {"y": 1}}')
            assert first == (204, 2, b"")
            second = await _request(client, twin_patch_reported_topic("b"), b'{"x": null, "z": true}', packet_id=2)
            assert second == (204, 3, b"")
        assert hub.twin("dev1")["reported"] == {"fw": "1.0", "z": True, "$version": 3}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"bad.key": 1}',
        b'{"$bad": 1}',
        json.dumps({"a": "x" * 5000}).encode(),
        json.dumps({f"k{i}": "x" * 4000 for i in range(9)}).encode(),
        b'{"n":' * 12 + b"1" + b"}" * 12,
        b"\xff\xfe",
    ],
)
async def test_invalid_reported_patch_is_answered_400_and_changes_nothing(body: bytes) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            assert await _request(client, twin_patch_reported_topic("bad"), body) == (400, None, b"")
            # The connection stays usable.
            assert await _request(client, twin_patch_reported_topic("ok"), b'{"a": 1}', packet_id=2) == (204, 2, b"")
        assert hub.twin("dev1")["reported"] == {"a": 1, "$version": 2}


async def test_desired_update_is_published_to_a_subscribed_device() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_DESIRED_SUBSCRIPTION, 1)])
            assert await hub.update_desired("dev1", {"interval": 5, "gone": None}) == 2
            packet = await client.next_publish()
            assert packet.qos == 0
            assert parse_twin_desired_topic(packet.topic).version == 2
            assert json.loads(packet.payload) == {"interval": 5, "gone": None, "$version": 2}


async def test_desired_update_is_not_sent_without_the_subscription() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 1)])
            await hub.update_desired("dev1", {"interval": 5})
            await _nothing_pending(client)


async def test_twin_requests_are_not_answered_without_the_response_subscription() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.send(encode_publish(twin_get_topic("1"), b"", 1, 1))
            assert await client.receive() == PubAck(1)
            await _nothing_pending(client)


async def test_fail_twin_operations_answers_429_then_recovers() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        hub.fail_twin_operations(2, status=429)
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            assert (await _request(client, twin_get_topic("1")))[0] == 429
            assert (await _request(client, twin_patch_reported_topic("2"), b'{"a": 1}', packet_id=2))[0] == 429
            assert (await _request(client, twin_get_topic("3"), packet_id=3))[0] == 200
        assert hub.twin("dev1")["reported"] == {"$version": 1}


async def test_module_twin_over_mqtt() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        async with raw_client(hub, module) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0), (TWIN_DESIRED_SUBSCRIPTION, 0)])
            assert await _request(client, twin_patch_reported_topic("1"), b'{"m": 1}') == (204, 2, b"")
            await hub.update_desired("dev1", {"d": 1}, module_id="mod1")
            assert parse_twin_desired_topic((await client.next_publish()).topic).version == 2
        assert hub.twin("dev1", "mod1")["reported"] == {"m": 1, "$version": 2}
        assert hub.twin("dev1")["reported"] == {"$version": 1}


async def test_twin_flow_with_aiomqtt() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with mqtt_client(hub, device) as client:
            await client.subscribe(TWIN_RESPONSE_SUBSCRIPTION, qos=1)
            await client.subscribe(TWIN_DESIRED_SUBSCRIPTION, qos=1)
            await client.publish(twin_patch_reported_topic("7"), b'{"state": "on"}', qos=1)
            await hub.update_desired("dev1", {"target": 20})
            seen: list[str] = []
            async for message in client.messages:
                seen.append(str(message.topic))
                if len(seen) == 2:
                    break
        assert sorted(seen) == [
            "$iothub/twin/PATCH/properties/desired/?$version=2",
            "$iothub/twin/res/204/?$rid=7&$version=2",
        ]
        assert hub.twin("dev1") == {
            "desired": {"target": 20, "$version": 2},
            "reported": {"state": "on", "$version": 2},
        }
        await hub.wait_disconnected("dev1", timeout=STEP)


async def test_ignore_twin_requests_leaves_them_unanswered_and_without_effect() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        hub.ignore_twin_requests(1)
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            await client.send(encode_publish(twin_patch_reported_topic("lost"), b'{"a": 1}', 1, 1))
            assert await client.receive() == PubAck(1)
            await _nothing_pending(client)
            assert await _request(client, twin_patch_reported_topic("kept"), b'{"b": 2}', packet_id=2) == (204, 2, b"")
        assert hub.twin("dev1")["reported"] == {"b": 2, "$version": 2}


async def test_drop_on_twin_requests_closes_the_connection_with_the_request_in_flight() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        hub.drop_on_twin_requests(1)
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            await client.send(encode_publish(twin_patch_reported_topic("1"), b'{"a": 1}', 1, 1))
            assert await client.expect_closed() == []
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            assert await _request(client, twin_patch_reported_topic("2"), b'{"a": 1}') == (204, 2, b"")


async def test_wait_subscribed_wakes_on_the_subscription() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        with pytest.raises(TimeoutError):
            await hub.wait_subscribed("dev1", TWIN_DESIRED_SUBSCRIPTION, timeout=0.05)
        async with raw_client(hub, device) as client, anyio.create_task_group() as group:
            group.start_soon(functools.partial(hub.wait_subscribed, "dev1", TWIN_DESIRED_SUBSCRIPTION, timeout=STEP))
            await client.subscribe(1, [(TWIN_DESIRED_SUBSCRIPTION, 0)])
