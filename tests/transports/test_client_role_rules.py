"""The client-role rules both transports take from ``ClientSession``, checked on each of them.

QoS 2 is refused the same way on both (a publish raises before anything is sent; a QoS 2 PUBLISH
from the server ends the connection as a protocol error), and a duplicated PUBACK is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aioiothub import ConnectionLostError, LossReason, ProtocolError
from aioiothub.protocol.mqtt import Connect, Publish, encode_connack, encode_puback, encode_publish
from aioiothub.transports.aiomqtt import MqttConnection
from aioiothub.transports.base import InboundPublish, Transport
from aioiothub.transports.native import NativeConnection
from tests.transport_matrix import selected_transports
from tests.transports.transport_helpers import STEP, RawPeer, RawServer, raw_server

pytestmark = pytest.mark.anyio

_CLASSES: dict[str, Any] = {"aiomqtt": MqttConnection, "native": NativeConnection}


@pytest.fixture(params=selected_transports())
def transport_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def connected(
    transport_name: str, received: list[InboundPublish] | None = None
) -> AsyncIterator[tuple[Transport, RawPeer]]:
    """A connection of ``transport_name`` to a raw server that accepted it, and the server's end."""
    async with raw_server() as server:
        peers: list[RawPeer] = []

        async def serve(server: RawServer) -> None:
            peer = await server.peer()
            assert isinstance(await peer.packet(), Connect)
            await peer.send(encode_connack(False, 0))
            peers.append(peer)

        handler = received.append if received is not None else (lambda message: None)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, server)
            connection: Transport = _CLASSES[transport_name](server.parameters(), handler)
            await connection.__aenter__()
        try:
            yield connection, peers[0]
        finally:
            await connection.__aexit__(None, None, None)


async def test_publishing_qos_2_is_refused_before_anything_is_sent(transport_name: str) -> None:
    async with connected(transport_name) as (connection, peer):
        with pytest.raises(ValueError, match="qos must be 0 or 1, not 2"):
            connection.publish("devices/dev1/messages/events/", b"", 2)
        future = connection.publish("devices/dev1/messages/events/", b"next", 0)
        with anyio.fail_after(STEP):
            await future
            packet = await peer.packet()
        assert isinstance(packet, Publish)
        assert packet.payload == b"next"  # the refused QoS 2 publish never went out


async def test_a_qos_2_publish_from_the_hub_ends_the_connection_as_a_protocol_error(transport_name: str) -> None:
    received: list[InboundPublish] = []
    async with connected(transport_name, received) as (connection, peer):
        await peer.send(encode_publish("devices/dev1/messages/devicebound/", b"x", 2, 9))
        # paho answers PUBREC itself and reports the message only on PUBREL.
        await peer.send(bytes.fromhex("62 02 00 09"))
        with anyio.fail_after(STEP):
            await asyncio.wait((connection.lost,))
        error = connection.lost.exception()
        assert isinstance(error, ConnectionLostError)
        assert str(error) == (
            "the hub sent a QoS 2 PUBLISH to 'devices/dev1/messages/devicebound/'; it was never asked for one"
        )
        assert error.reason is LossReason.PROTOCOL_ERROR
        assert isinstance(error.__cause__, ProtocolError)
        assert received == []


async def test_a_duplicated_puback_is_ignored(transport_name: str) -> None:
    async with connected(transport_name) as (connection, peer):
        first = connection.publish("devices/dev1/messages/events/", b"1", 1)
        with anyio.fail_after(STEP):
            packet = await peer.packet()
        assert isinstance(packet, Publish)
        assert packet.packet_id is not None
        await peer.send(encode_puback(packet.packet_id) * 2)
        with anyio.fail_after(STEP):
            await first
        second = connection.publish("devices/dev1/messages/events/", b"2", 1)
        with anyio.fail_after(STEP):
            again = await peer.packet()
        assert isinstance(again, Publish)
        assert again.packet_id is not None
        await peer.send(encode_puback(again.packet_id))
        with anyio.fail_after(STEP):
            await second
        assert connection.connected
