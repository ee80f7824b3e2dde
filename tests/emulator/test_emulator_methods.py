"""Direct methods: requests published with a unique $rid, answers matched back, 404 and 504."""

from __future__ import annotations

import json

import anyio
import pytest

from aioiothub.emulator import Emulator, MethodResult
from aioiothub.protocol.mqtt import PubAck, encode_publish
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, method_response_topic, parse_method_request_topic
from tests.emulator.emulator_helpers import raw_client

pytestmark = pytest.mark.anyio


async def test_method_call_round_trip() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client, anyio.create_task_group() as group:
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 1)])
            results: list[MethodResult] = []

            async def call() -> None:
                results.append(await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=5))

            group.start_soon(call)
            request = await client.next_publish()
            parsed = parse_method_request_topic(request.topic)
            assert parsed.name == "reboot"
            assert json.loads(request.payload) == {"delay": 1}
            await client.send(encode_publish(method_response_topic(200, parsed.request_id), b'{"ok": true}', 1, 9))
            assert await client.receive() == PubAck(9)
        assert results == [MethodResult(200, {"ok": True})]


async def test_request_ids_are_unique_and_answers_may_come_in_any_order() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        results: dict[str, MethodResult] = {}
        async with raw_client(hub, device) as client, anyio.create_task_group() as group:
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])

            async def call(name: str) -> None:
                results[name] = await hub.invoke_method("dev1", name, None, timeout=5)

            for name in ("one", "two", "three"):
                group.start_soon(call, name)
            requests = [parse_method_request_topic((await client.next_publish()).topic) for _ in range(3)]
            assert len({request.request_id for request in requests}) == 3
            for status, request in zip((201, 202, 203), reversed(requests), strict=True):
                await client.send(encode_publish(method_response_topic(status, request.request_id), b"", 0))
        by_name = {request.name: status for status, request in zip((203, 202, 201), requests, strict=True)}
        assert {name: result.status for name, result in results.items()} == by_name
        assert all(result.payload is None for result in results.values())


async def test_component_command_and_null_payload() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client, anyio.create_task_group() as group:
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])
            group.start_soon(hub.invoke_method, "dev1", "thermostat*getMaxMinReport")
            request = await client.next_publish()
            parsed = parse_method_request_topic(request.topic)
            assert (parsed.component, parsed.command, request.payload) == ("thermostat", "getMaxMinReport", b"null")
            await client.send(encode_publish(method_response_topic(200, parsed.request_id), b"[]", 0))


async def test_not_subscribed_is_404_and_silence_is_504() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            assert (await hub.invoke_method("dev1", "m", timeout=1)).status == 404
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])
            started = anyio.current_time()
            result = await hub.invoke_method("dev1", "m", timeout=0.3)
            assert result.status == 504
            assert anyio.current_time() - started >= 0.3
            late = parse_method_request_topic((await client.next_publish()).topic)
            # A late answer is ignored and does not disturb the connection.
            await client.send(encode_publish(method_response_topic(200, late.request_id), b"{}", 1, 3))
            assert await client.receive() == PubAck(3)


async def test_module_methods_and_answers_from_another_identity_are_ignored() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        module = hub.add_module("dev1", "mod1")
        results: list[MethodResult] = []
        async with (
            raw_client(hub, module) as module_client,
            raw_client(hub, device) as device_client,
            anyio.create_task_group() as group,
        ):
            await module_client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])

            async def call() -> None:
                results.append(await hub.invoke_method("dev1", "m", module_id="mod1", timeout=5))

            group.start_soon(call)
            request = parse_method_request_topic((await module_client.next_publish()).topic)
            await device_client.send(encode_publish(method_response_topic(999, request.request_id), b"", 1, 1))
            assert await device_client.receive() == PubAck(1)
            await module_client.send(encode_publish(method_response_topic(200, request.request_id), b"1", 0))
        assert results == [MethodResult(200, 1)]


async def test_dropped_device_after_the_request_ends_in_504() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])
            async with anyio.create_task_group() as group:
                results: list[MethodResult] = []

                async def call() -> None:
                    results.append(await hub.invoke_method("dev1", "m", timeout=0.5))

                group.start_soon(call)
                await client.next_publish()
                hub.drop_connection("dev1")
            assert [result.status for result in results] == [504]
