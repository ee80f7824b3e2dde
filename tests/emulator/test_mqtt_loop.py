"""The one MQTT server loop: device and DPS connections are served alike, and any byte stream will do."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping

import anyio
import anyio.abc
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aioiothub.emulator import Emulator
from aioiothub.protocol.connect import dps_username, username
from aioiothub.protocol.mqtt import (
    ConnAck,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    encode_connect,
    encode_pingreq,
    encode_publish,
    encode_subscribe,
)
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION, TWIN_RESPONSE_SUBSCRIPTION
from tests.emulator.emulator_helpers import STEP, RawClient, raw_connection, sas_password
from tests.emulator.test_emulator_dps import REGISTER, dps_token

pytestmark = pytest.mark.anyio

#: A reserved packet type: the codec rejects it, after the packets before it in the same chunk.
MALFORMED = b"\xf0\x00"


def _device_opening(hub: Emulator) -> tuple[bytes, str]:
    device = hub.add_device("dev1")
    connect = encode_connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device))
    return connect, TWIN_RESPONSE_SUBSCRIPTION


def _dps_opening(hub: Emulator) -> tuple[bytes, str]:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    connect = encode_connect("dev1", dps_username(hub.dps.id_scope, "dev1"), dps_token(hub, "dev1", key))
    return connect, DPS_RESPONSE_SUBSCRIPTION


OPENINGS: Mapping[str, Callable[[Emulator], tuple[bytes, str]]] = {"device": _device_opening, "dps": _dps_opening}


@pytest.mark.parametrize("kind", list(OPENINGS))
async def test_packets_before_a_malformed_one_are_answered_then_the_connection_ends(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the DPS connection used to drop the valid packets of the chunk with the bad one.
    caplog.set_level(logging.INFO, logger="aioiothub.emulator")
    async with Emulator(websocket_port=None) as hub:
        connect, subscription = OPENINGS[kind](hub)
        async with raw_connection(hub) as client:
            await client.send(connect)
            assert isinstance(await client.receive(), ConnAck)
            await client.send(encode_subscribe(1, [(subscription, 1)]) + encode_pingreq() + MALFORMED)
            assert await client.expect_closed() == [SubAck(1, (1,)), PingResp()]
    assert any("malformed packet" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("kind", list(OPENINGS))
async def test_packets_sent_with_the_connect_are_served_after_the_connack(kind: str) -> None:
    async with Emulator(websocket_port=None) as hub:
        connect, subscription = OPENINGS[kind](hub)
        async with raw_connection(hub) as client:
            await client.send(connect + encode_subscribe(1, [(subscription, 1)]) + encode_pingreq())
            assert isinstance(await client.receive(), ConnAck)
            assert await client.receive() == SubAck(1, (1,))
            assert await client.receive() == PingResp()


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory byte-stream pair (no socket, no TLS)."""

    def __init__(self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._send = send
        self._receive = receive

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    to_server, from_client = anyio.create_memory_object_stream[bytes](16)
    to_client, from_server = anyio.create_memory_object_stream[bytes](16)
    return MemoryByteStream(to_server, from_server), MemoryByteStream(to_client, from_client)


@pytest.mark.parametrize("started", [True, False], ids=["running", "not-started"])
async def test_serve_stream_serves_a_device_over_an_in_memory_stream(started: bool) -> None:
    hub = Emulator(websocket_port=None)
    device = hub.add_device("dev1")
    client_side, server_side = memory_stream_pair()
    async with hub if started else contextlib.nullcontext(), anyio.create_task_group() as task_group:
        task_group.start_soon(hub.serve_stream, server_side)
        client = RawClient(client_side)
        assert await client.connect("dev1", username(hub.hostname, "dev1"), sas_password(hub, device)) == ConnAck(
            False, 0
        )
        await hub.wait_connected("dev1", timeout=STEP)
        await client.send(encode_publish("devices/dev1/messages/events/", b"over memory", 1, 7))
        assert await client.receive() == PubAck(7)
        assert [record.body for record in await hub.wait_for_telemetry(1, "dev1", timeout=STEP)] == [b"over memory"]
        assert (await client.subscribe(2, [(TWIN_RESPONSE_SUBSCRIPTION, 0)])).granted == (0,)
        await client.send(encode_publish("$iothub/twin/GET/?$rid=r1", b"", 0))
        answer = await client.next_publish()
        assert json.loads(answer.payload) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
        assert hub.drop_connection("dev1")
        assert await client.expect_closed() == []
        await client_side.aclose()
    assert not hub.is_connected("dev1")


async def test_serve_stream_serves_dps_and_refuses_a_bad_token() -> None:
    async with Emulator(websocket_port=None) as hub:
        key = hub.dps.add_enrollment("dev1").primary_key
        assert key is not None
        for password, code in ((dps_token(hub, "dev1", key), 0), ("SharedAccessSignature sr=x&sig=y&se=1", 5)):
            client_side, server_side = memory_stream_pair()
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(hub.serve_stream, server_side)
                client = RawClient(client_side)
                ack = await client.connect("dev1", dps_username(hub.dps.id_scope, "dev1"), password)
                assert ack.return_code == code
                if code:
                    assert await client.expect_closed() == []
                    await client_side.aclose()
                    continue
                assert (await client.subscribe(1, [(DPS_RESPONSE_SUBSCRIPTION, 1)])).granted == (1,)
                await client.send(encode_publish(REGISTER.format(rid="r1"), b'{"registrationId":"dev1"}', 0))
                answer = await client.next_publish()
                assert isinstance(answer, Publish)
                assert json.loads(answer.payload)["status"] == "assigning"
                await client_side.aclose()

