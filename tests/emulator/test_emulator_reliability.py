"""Hostile or careless peers and hub-side calls: the emulator answers as IoT Hub does and keeps going."""

from __future__ import annotations

import logging

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.exceptions import ServiceError
from aioiothub.protocol.mqtt import PingResp, PubAck, encode_pingreq, encode_publish
from aioiothub.protocol.topics import (
    METHODS_SUBSCRIPTION,
    TWIN_DESIRED_SUBSCRIPTION,
    TWIN_RESPONSE_SUBSCRIPTION,
    c2d_subscription,
    method_response_topic,
    parse_method_request_topic,
    parse_twin_response_topic,
    twin_patch_reported_topic,
)
from tests.emulator.emulator_helpers import STEP, RawClient, raw_client, raw_connection

pytestmark = pytest.mark.anyio

#: JSON nested far deeper than Python's decoder can recurse.
DEEPLY_NESTED = b"[" * 100_000


async def _still_connected(client: RawClient) -> None:
    await client.send(encode_pingreq())
    assert isinstance(await client.receive(), PingResp)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def test_deeply_nested_reported_patch_is_answered_400(caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.subscribe(1, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])
            await client.send(encode_publish(twin_patch_reported_topic("deep"), DEEPLY_NESTED, 1, 2))
            assert await client.receive() == PubAck(2)
            response = parse_twin_response_topic((await client.next_publish()).topic)
            assert (response.status, response.request_id) == (400, "deep")
            await _still_connected(client)
            assert hub.is_connected("dev1")
        assert hub.twin("dev1")["reported"] == {"$version": 1}
    assert _errors(caplog) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [(DEEPLY_NESTED, "nested too deeply"), (b"oops", "not valid JSON"), (b"\xff\xfe", "not valid JSON")],
)
async def test_method_response_that_is_not_json_raises_service_error_400(
    body: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        failures: list[ServiceError] = []
        async with raw_client(hub, device) as client, anyio.create_task_group() as group:
            await client.subscribe(1, [(METHODS_SUBSCRIPTION, 0)])

            async def call() -> None:
                with pytest.raises(ServiceError) as caught:
                    await hub.invoke_method("dev1", "m", timeout=STEP)
                failures.append(caught.value)

            group.start_soon(call)
            request = parse_method_request_topic((await client.next_publish()).topic)
            await client.send(encode_publish(method_response_topic(200, request.request_id), body, 1, 3))
            assert await client.receive() == PubAck(3)
            await _still_connected(client)
            assert hub.is_connected("dev1")
        [failure] = failures
        assert failure.status == 400
        assert problem in str(failure)
    assert _errors(caplog) == []


async def test_deeply_nested_telemetry_is_stored_and_its_json_is_a_value_error() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as client:
            await client.send(encode_publish("devices/dev1/messages/events/", DEEPLY_NESTED, 1, 4))
            assert await client.receive() == PubAck(4)
        (record,) = await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
        assert record.body == DEEPLY_NESTED
        with pytest.raises(ValueError, match="nested too deeply"):
            record.json()


async def test_nothing_reaches_a_dropped_connection() -> None:
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device, clean_session=False) as client:
            await client.subscribe(
                1, [(c2d_subscription("dev1"), 1), (METHODS_SUBSCRIPTION, 0), (TWIN_DESIRED_SUBSCRIPTION, 0)]
            )
            assert hub.drop_connection("dev1") is True
            # Gone from the hub's tables at once, though its socket may still be closing.
            assert not hub.is_connected("dev1")
            assert hub.connection("dev1") is None
            await hub.wait_disconnected("dev1", timeout=0)
            await hub.send_c2d("dev1", b"after the drop")
            assert (await hub.invoke_method("dev1", "m", timeout=STEP)).status == 404
            assert await hub.update_desired("dev1", {"a": 1}) == 2
            assert await client.expect_closed() == []
        assert hub.c2d_queue_length("dev1") == 1
        async with raw_client(hub, device, clean_session=False) as client:
            packet = await client.next_publish()
            # Never sent on the dropped connection, so this is its first delivery.
            assert (packet.payload, packet.dup) == (b"after the drop", False)


async def test_a_silent_connection_is_closed_after_10_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aioiothub.emulator")
    async with Emulator(websocket_port=None) as hub, raw_connection(hub) as client:
        started = anyio.current_time()
        await client.send(b"\x10")  # the first byte of a CONNECT, and then nothing
        assert await client.expect_closed(seconds=15) == []
        assert anyio.current_time() - started >= 9.9
    closes = [record.getMessage() for record in caplog.records if "connection closed" in record.getMessage()]
    assert any("no CONNECT within 10 s" in message for message in closes), closes


async def test_more_than_64_kib_before_connect_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aioiothub.emulator")
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("dev1")
        async with raw_client(hub, device) as bystander:
            async with raw_connection(hub) as client:
                # A CONNECT announcing 200 KiB (under the packet size limit), then 65 KiB of it.
                remaining = 200 * 1024
                header = bytes([0x10, remaining & 0x7F | 0x80, remaining >> 7 & 0x7F | 0x80, remaining >> 14])
                await client.send(header + b"\x00" * (65 * 1024))
                assert await client.expect_closed() == []
            await _still_connected(bystander)
    closes = [record for record in caplog.records if "connection closed" in record.getMessage()]
    assert any("more than 65536 bytes before a complete CONNECT" in record.getMessage() for record in closes), [
        record.getMessage() for record in closes
    ]
    assert all(record.levelno == logging.INFO for record in closes)
