"""A dropped connection says what happened, on both transports: end of stream, reset, keep-alive, TLS.

Each case is produced for real by a raw TLS server (``RawServer``): it accepts the CONNECT, then
closes, resets, falls silent or sends bytes that are not TLS. The loss carries a
:class:`~aioiothub.LossReason` and, where there is one, the underlying error as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aioiothub import ConnectionLostError, LossReason
from aioiothub.protocol.mqtt import Connect, encode_connack
from aioiothub.transports.aiomqtt import MqttConnection
from aioiothub.transports.base import Transport
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
async def connected(transport_name: str, **changes: Any) -> AsyncIterator[tuple[Transport, RawPeer]]:
    """A connection of ``transport_name`` to a raw server that accepted it, and the server's end."""
    async with raw_server() as server:
        peers: list[RawPeer] = []

        async def serve(server: RawServer) -> None:
            peer = await server.peer()
            assert isinstance(await peer.packet(), Connect)
            await peer.send(encode_connack(False, 0))
            peers.append(peer)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, server)
            connection: Transport = _CLASSES[transport_name](server.parameters(**changes), lambda message: None)
            await connection.__aenter__()
        try:
            yield connection, peers[0]
        finally:
            await connection.__aexit__(None, None, None)


async def lost(connection: Transport, *, timeout: float = STEP) -> ConnectionLostError:  # noqa: ASYNC109
    with anyio.fail_after(timeout):
        await asyncio.wait((connection.lost,))
    error = connection.lost.exception()
    assert isinstance(error, ConnectionLostError)
    return error


async def test_the_hub_closing_the_connection_is_end_of_stream(transport_name: str) -> None:
    async with connected(transport_name) as (connection, peer):
        peer.writer.close()  # TLS close_notify, then FIN
        error = await lost(connection)
    assert error.reason is LossReason.EOF
    assert "the hub closed the connection" in str(error)


async def test_a_reset_connection_says_reset_and_chains_the_socket_error(transport_name: str) -> None:
    async with connected(transport_name) as (connection, peer):
        raw = peer.writer.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        peer.writer.transport.abort()
        error = await lost(connection)
    assert error.reason is LossReason.RESET
    assert "reset" in str(error)
    # asyncio sees the socket's ECONNRESET; paho's blocking TLS socket sees it as an EOF without close_notify.
    assert isinstance(error.__cause__, ConnectionResetError | ssl.SSLEOFError)


async def test_a_silent_server_is_a_keepalive_timeout(transport_name: str) -> None:
    # keepalive=1 is the shortest MQTT allows; the server reads the PINGREQ and never answers.
    async with connected(transport_name, keepalive=1, connect_timeout=1.0) as (connection, _):
        error = await lost(connection)
    assert error.reason is LossReason.KEEPALIVE_TIMEOUT
    assert "keep-alive timeout" in str(error)


async def test_bytes_that_are_not_tls_are_a_tls_error_chaining_the_ssl_error(transport_name: str) -> None:
    async with connected(transport_name) as (connection, peer):
        # Under the TLS layer, straight onto TCP: a record the client's TLS cannot decrypt.
        tcp = peer.writer.transport._ssl_protocol._transport  # type: ignore[attr-defined]
        tcp.write(b"\x17\x03\x03\x00\x20" + bytes(32))
        error = await lost(connection)
    assert error.reason is LossReason.TLS_ERROR
    assert "TLS error" in str(error)
    cause = error.__cause__
    assert isinstance(cause, ssl.SSLError) or isinstance(cause.__cause__, ssl.SSLError)
