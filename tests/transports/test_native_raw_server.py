"""The native transport against a scripted raw MQTT server: exact packets, silence, and malformed bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aioiothub import ConnectError, ConnectionLostError, ProtocolError
from aioiothub.protocol.mqtt import (
    Connect,
    Disconnect,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    encode_connack,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
)
from aioiothub.transports.base import InboundPublish
from aioiothub.transports.native import NativeConnection
from tests.transports.transport_helpers import STEP, RawPeer, RawServer, raw_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as running:
        yield running


@asynccontextmanager
async def recording_loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)


async def accept(server: RawServer, *, session_present: bool = False) -> RawPeer:
    """Take the next connection, read its CONNECT and accept it."""
    peer = await server.peer()
    assert isinstance(await peer.packet(), Connect)
    await peer.send(encode_connack(session_present, 0))
    return peer


@asynccontextmanager
async def connected(
    server: RawServer, on_message: Callable[[InboundPublish], None] = lambda message: None, **changes: Any
) -> AsyncIterator[tuple[NativeConnection, RawPeer]]:
    """A native connection to ``server`` and the server's end of it."""
    peers: list[RawPeer] = []

    async def serve() -> None:
        peers.append(await accept(server))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        connection = NativeConnection(server.parameters(**changes), on_message)
        await connection.__aenter__()
    try:
        yield connection, peers[0]
    finally:
        await connection.__aexit__(None, None, None)


async def wait_lost(connection: NativeConnection) -> ConnectionLostError:
    with anyio.fail_after(STEP):
        await asyncio.wait((connection.lost,))
    error = connection.lost.exception()
    assert isinstance(error, ConnectionLostError)
    return error


# --- the packets on the wire ---------------------------------------------------------------------------


async def test_connect_carries_the_parameters_and_leaving_sends_disconnect(server: RawServer) -> None:
    async def serve() -> None:
        peer = await server.peer()
        connect = await peer.packet()
        assert connect == Connect(
            client_id="dev1",
            username="localhost/dev1/?api-version=2021-04-12",
            password=b"token",
            keepalive=60,
            clean_session=False,
            will=None,
            protocol_level=4,
        )
        await peer.send(encode_connack(False, 0))
        assert await peer.packet() == Disconnect()
        assert await peer.closed_by_client()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        async with NativeConnection(server.parameters(), lambda message: None) as connection:
            assert connection.connected
        assert connection.lost.done()


async def test_publishes_of_one_turn_leave_in_order_with_distinct_packet_ids(server: RawServer) -> None:
    async with connected(server) as (connection, peer):
        futures = [connection.publish("devices/dev1/messages/events/", bytes([index]), 1) for index in range(50)]
        packets = [await peer.packet() for _ in range(50)]
        publishes = [packet for packet in packets if isinstance(packet, Publish)]
        assert [packet.payload for packet in publishes] == [bytes([index]) for index in range(50)]
        packet_ids = [packet.packet_id or 0 for packet in publishes]
        assert 0 not in packet_ids
        assert len(set(packet_ids)) == 50
        # Acknowledged out of order: each future completes on its own PUBACK.
        await peer.send(b"".join(encode_puback(packet_id) for packet_id in reversed(packet_ids[25:])))
        with anyio.fail_after(STEP):
            await asyncio.gather(*futures[25:])
        assert not any(future.done() for future in futures[:25])
        await peer.send(b"".join(encode_puback(packet_id) for packet_id in packet_ids[:25]))
        with anyio.fail_after(STEP):
            await asyncio.gather(*futures[:25])


async def test_publish_refuses_qos_2_and_bad_topics_without_sending(server: RawServer) -> None:
    async with connected(server) as (connection, peer):
        with pytest.raises(ValueError, match="qos must be 0 or 1, not 2"):
            connection.publish("devices/dev1/messages/events/", b"", 2)
        with pytest.raises(ValueError, match="wildcards"):
            connection.publish("devices/#", b"", 1)
        connection.publish("devices/dev1/messages/events/", b"fine", 0)
        packet = await peer.packet()
        assert isinstance(packet, Publish)
        assert packet.payload == b"fine"


async def test_qos1_message_is_acknowledged_only_when_asked(server: RawServer) -> None:
    inbox: list[InboundPublish] = []
    arrived = asyncio.Event()

    def on_message(message: InboundPublish) -> None:
        inbox.append(message)
        arrived.set()

    async with connected(server, on_message) as (connection, peer):
        await peer.send(encode_publish("devices/dev1/messages/devicebound/", b"c2d", 1, 7))
        with anyio.fail_after(STEP):
            await arrived.wait()
        assert inbox == [InboundPublish("devices/dev1/messages/devicebound/", b"c2d", 1, 7)]
        connection.publish("devices/dev1/messages/events/", b"after", 0)
        assert isinstance(await peer.packet(), Publish)  # no PUBACK went out before it
        connection.acknowledge(inbox[0])
        assert await peer.packet() == PubAck(7)


async def test_subscribe_returns_the_suback_codes_including_failure(server: RawServer) -> None:
    async with connected(server) as (connection, peer):

        async def answer() -> None:
            subscribe = await peer.packet()
            assert isinstance(subscribe, Subscribe)
            assert subscribe.filters == (("a/#", 1), ("b/#", 0))
            await peer.send(encode_suback(subscribe.packet_id, [1, 0x80]))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            assert await connection.subscribe([("a/#", 1), ("b/#", 0)]) == [1, 0x80]


async def test_suback_with_the_wrong_number_of_codes_loses_the_connection(server: RawServer) -> None:
    async with connected(server) as (connection, peer):

        async def answer() -> None:
            subscribe = await peer.packet()
            assert isinstance(subscribe, Subscribe)
            await peer.send(encode_suback(subscribe.packet_id, [1]))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            with pytest.raises(ConnectionLostError, match="1 return codes for 2 filters"):
                await connection.subscribe([("a/#", 1), ("b/#", 1)])
        assert isinstance((await wait_lost(connection)).__cause__, ProtocolError)


async def test_subscribe_without_suback_times_out_as_connection_lost(server: RawServer) -> None:
    async with connected(server, connect_timeout=0.2) as (connection, peer):
        with pytest.raises(ConnectionLostError, match=r"no SUBACK within 0\.2 s"):
            await connection.subscribe([("a/#", 1)])
        assert isinstance(await peer.packet(), Subscribe)


async def test_a_handler_that_raises_is_logged_and_the_connection_lives_on(
    server: RawServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: InboundPublish) -> None:
        raise RuntimeError("handler bug")

    async with connected(server, broken) as (connection, peer):
        await peer.send(encode_publish("t/1", b"x", 0))
        future = connection.publish("devices/dev1/messages/events/", b"", 1)
        publish = await peer.packet()
        assert isinstance(publish, Publish)
        assert publish.packet_id is not None
        await peer.send(encode_puback(publish.packet_id))
        with anyio.fail_after(STEP):
            await future
        assert connection.connected
    assert "message handler failed for topic 't/1'" in caplog.text


# --- keep-alive ------------------------------------------------------------------------------------------


async def test_idle_connection_pings_and_stays_up_while_pingresps_come(server: RawServer) -> None:
    async with connected(server, keepalive=1) as (connection, peer):
        for _ in range(2):
            assert await peer.packet() == PingReq()
            await peer.send(encode_pingresp())
        assert connection.connected


async def test_missing_pingresp_drops_the_connection(server: RawServer) -> None:
    async with connected(server, keepalive=1) as (connection, peer):
        assert await peer.packet() == PingReq()
        future = connection.publish("devices/dev1/messages/events/", b"stuck", 1)
        error = await wait_lost(connection)
        assert "no PINGRESP within 1" in str(error)
        with pytest.raises(ConnectionLostError):
            await future
        assert await peer.closed_by_client()


async def test_ping_is_sent_on_demand(server: RawServer) -> None:
    async with connected(server) as (connection, peer):
        connection.ping()
        assert await peer.packet() == PingReq()
        await peer.send(encode_pingresp())
        connection.ping()
        assert await peer.packet() == PingReq()
        assert connection.connected


# --- malformed or unexpected server bytes -----------------------------------------------------------------

MALFORMED_AFTER_CONNACK = {
    "reserved packet type 0": b"\x00\x00",
    "PUBREL, which a client never receives": b"\x62\x02\x00\x01",
    "PUBACK with packet id 0": b"\x40\x02\x00\x00",
    "PUBACK too long": b"\x40\x03\x00\x01\x00",
    "remaining length of five bytes": b"\x30\xff\xff\xff\xff\x01",
    "PUBLISH topic not UTF-8": b"\x30\x04\x00\x02\xff\xfe",
    "QoS 2 PUBLISH": encode_publish("t", b"x", 2, 1),
    "a second CONNACK": encode_connack(False, 0),
    "SUBACK with return code 3": b"\x90\x03\x00\x01\x03",
}


@pytest.mark.parametrize("data", MALFORMED_AFTER_CONNACK.values(), ids=MALFORMED_AFTER_CONNACK.keys())
async def test_malformed_bytes_lose_the_connection_with_a_protocol_error(server: RawServer, data: bytes) -> None:
    async with recording_loop_errors() as errors, connected(server) as (connection, peer):
        future = connection.publish("devices/dev1/messages/events/", b"in flight", 1)
        assert isinstance(await peer.packet(), Publish)
        await peer.send(data)
        error = await wait_lost(connection)
        assert isinstance(error.__cause__, ProtocolError)
        with pytest.raises(ConnectionLostError):
            await future
        assert await peer.closed_by_client()
        with pytest.raises(ConnectionLostError):
            connection.publish("devices/dev1/messages/events/", b"", 1)
    assert errors == []


async def test_valid_packets_before_malformed_bytes_are_still_acted_on(server: RawServer) -> None:
    async with connected(server) as (connection, peer):
        future = connection.publish("devices/dev1/messages/events/", b"", 1)
        publish = await peer.packet()
        assert isinstance(publish, Publish)
        assert publish.packet_id is not None
        await peer.send(encode_puback(publish.packet_id) + b"\x00\x00")
        await wait_lost(connection)
        assert future.result() is None


async def test_malformed_connack_is_a_connect_error_caused_by_a_protocol_error(server: RawServer) -> None:
    async def serve() -> None:
        peer = await server.peer()
        await peer.packet()
        await peer.send(b"\x20\x02\x02\x00")  # reserved acknowledge flags

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        with pytest.raises(ConnectError) as caught:
            async with NativeConnection(server.parameters(), lambda message: None):
                pass
    assert isinstance(caught.value.__cause__, ProtocolError)


async def test_server_closing_before_connack_is_a_connect_error(server: RawServer) -> None:
    async def serve() -> None:
        peer = await server.peer()
        await peer.packet()
        peer.writer.close()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        with pytest.raises(ConnectError, match="before CONNACK"):
            async with NativeConnection(server.parameters(), lambda message: None):
                pass


# --- silence and cancellation -----------------------------------------------------------------------------


Stage = Callable[[RawServer], Awaitable[RawPeer]]


async def _silent_after_tcp(server: RawServer) -> RawPeer:
    return await server.peer()  # a plain TCP server: the TLS handshake never completes


async def _silent_after_connect(server: RawServer) -> RawPeer:
    peer = await server.peer()
    assert isinstance(await peer.packet(), Connect)  # and no CONNACK
    return peer


@pytest.mark.parametrize(
    ("tls", "stage"), [(False, _silent_after_tcp), (True, _silent_after_connect)], ids=["tls-handshake", "connack"]
)
async def test_connect_times_out_and_closes_its_socket(tls: bool, stage: Stage) -> None:
    async with raw_server(tls=tls) as server:
        peers: list[RawPeer] = []

        async def serve() -> None:
            peers.append(await stage(server))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            with pytest.raises(ConnectError, match=r"within 0\.3 s"):
                async with NativeConnection(server.parameters(connect_timeout=0.3), lambda message: None):
                    pass
        assert await peers[0].closed_by_client()


@pytest.mark.parametrize(
    ("tls", "stage"), [(False, _silent_after_tcp), (True, _silent_after_connect)], ids=["tls-handshake", "connack"]
)
async def test_cancelled_connect_leaves_no_socket_and_no_task(tls: bool, stage: Stage) -> None:
    async with raw_server(tls=tls) as server:
        tasks_before = asyncio.all_tasks()
        reached = asyncio.Event()
        peers: list[RawPeer] = []

        async def serve() -> None:
            peers.append(await stage(server))
            reached.set()

        connection = NativeConnection(server.parameters(), lambda message: None)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)

            async def connect() -> None:
                async with connection:
                    pytest.fail("the connection should not have come up")

            tasks.start_soon(connect)
            with anyio.fail_after(STEP):
                await reached.wait()
            tasks.cancel_scope.cancel()
        assert connection.lost.done()
        assert not connection.connected
        assert await peers[0].closed_by_client()
        await asyncio.sleep(0)
        assert {task for task in asyncio.all_tasks() - tasks_before if not task.done()} == set()
