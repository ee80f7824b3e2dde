"""The WebSocket side of the listeners: the server's answer to the upgrade request, and the byte stream after it.

``accept_websocket`` reads (or is handed) the HTTP upgrade request, checks its path and MQTT
subprotocol and answers it with ``wsproto``; :class:`WebSocketByteStream` then carries the MQTT
bytes in binary WebSocket messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from aioiothub.emulator.listeners.handlers import UpgradeRequest

__all__ = ["UpgradeRefused", "WebSocketByteStream", "accept_websocket"]

_MQTT_SUBPROTOCOLS: Final = ("mqtt", "MQTT")
# How long a closing WebSocket waits to send its close frame before closing the TLS stream under it
# (which has a grace period of its own for close_notify).
_CLOSE_TIMEOUT: Final = 2.0


class WebSocketByteStream(anyio.abc.ByteStream):
    """A byte stream carried in binary WebSocket messages, for either end of an open connection.

    Received binary messages are concatenated (message boundaries carry no meaning for MQTT); each
    :meth:`send` writes one binary message. Pings are answered, a close from the peer is answered and
    ends the stream, and :meth:`aclose` starts the close handshake. A text message is a protocol
    error for MQTT: the connection is closed with code 1003.

    Args:
        transport: the stream under the WebSocket (usually TLS).
        connection: a ``wsproto`` connection whose opening handshake has completed.
    """

    def __init__(self, transport: anyio.abc.ByteStream, connection: WSConnection) -> None:
        if connection.state is not ConnectionState.OPEN:
            raise ValueError(f"connection must be open, not {connection.state.name}")
        self._transport = transport
        self._connection = connection
        self._buffer = bytearray()
        self._peer_closed = False
        self._closed = False
        self._send_lock = anyio.Lock(fast_acquire=True)

    @property
    def transport_stream(self) -> anyio.abc.ByteStream:
        """The stream the WebSocket frames travel on."""
        return self._transport

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self._transport.send(data)

    async def _process_events(self) -> None:
        connection = self._connection
        for event in connection.events():
            if isinstance(event, BytesMessage):
                self._buffer += event.data
            elif isinstance(event, Ping):
                await self._send_raw(connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._peer_closed = True
                if connection.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    await self._send_raw(connection.send(CloseConnection(code=event.code)))
            elif isinstance(event, TextMessage):
                self._peer_closed = True
                await self._send_raw(connection.send(CloseConnection(code=1003, reason="binary only")))
                raise anyio.BrokenResourceError("text WebSocket message on an MQTT connection")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._peer_closed:
                raise anyio.EndOfStream
            try:
                data = await self._transport.receive()
            except anyio.EndOfStream:
                # The socket ended without a close frame (code 1006): an abrupt end, not a clean one.
                self._peer_closed = True
                raise anyio.BrokenResourceError("connection ended without a WebSocket close") from None
            self._connection.receive_data(data)
            await self._process_events()
        if self._closed:
            raise anyio.ClosedResourceError
        if len(self._buffer) <= max_bytes:
            chunk = bytes(self._buffer)
            self._buffer.clear()
        else:
            chunk = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
        return chunk

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._connection.state is not ConnectionState.OPEN:
            raise anyio.BrokenResourceError("the WebSocket is closing")
        await self._send_raw(self._connection.send(BytesMessage(data=item)))

    async def send_eof(self) -> None:
        raise NotImplementedError("WebSocket streams do not support half-closing; close the stream instead")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._connection.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                with anyio.move_on_after(_CLOSE_TIMEOUT):
                    await self._send_raw(self._connection.send(CloseConnection(code=1000)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the peer is gone already; closing the transport is all that is left
        finally:
            await self._transport.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._transport.extra_attributes


class UpgradeRefused(Exception):
    """The WebSocket upgrade request was answered with an HTTP error."""


def _rejection(connection: WSConnection, event: Event) -> bytes:
    """The bytes of a refused upgrade, with the status line's standard reason phrase.

    wsproto writes ``HTTP/1.1 404 `` with no phrase, which some clients report as an invalid status.
    """
    data = connection.send(event)
    status_line, separator, rest = data.partition(b"\r\n")
    version, _, code = status_line.partition(b" ")
    code = code.strip()
    if not separator or not code.isdigit():
        return data
    try:
        phrase = HTTPStatus(int(code)).phrase.encode("ascii")
    except ValueError:
        return data
    return version + b" " + code + b" " + phrase + separator + rest


async def accept_websocket(
    stream: anyio.abc.ByteStream, path: str, opening: UpgradeRequest | None = None
) -> WebSocketByteStream:
    """Answer the HTTP upgrade on ``stream`` (already read when ``opening`` is given).

    Raises:
        UpgradeRefused: after refusing the upgrade.
    """
    connection = WSConnection(ConnectionType.SERVER)
    while True:
        try:
            if opening is not None:
                connection.initiate_upgrade_connection(opening.headers, opening.target)
                data, opening = opening.trailing_data, None
            else:
                data = await stream.receive()
            connection.receive_data(data)
        except RemoteProtocolError as exc:
            await stream.send(_rejection(connection, exc.event_hint or RejectConnection(status_code=400)))
            raise UpgradeRefused(f"bad upgrade request: {exc}") from None
        for event in connection.events():
            if not isinstance(event, Request):
                continue
            # Some SDKs add a query string (such as ?iothub-no-client-cert=true) to the path.
            target = event.target.partition("?")[0]
            if target != path:
                await stream.send(_rejection(connection, RejectConnection(status_code=404)))
                raise UpgradeRefused(f"upgrade request for unknown path {event.target!r}")
            subprotocol = next((name for name in event.subprotocols if name in _MQTT_SUBPROTOCOLS), None)
            if subprotocol is None:
                await stream.send(_rejection(connection, RejectConnection(status_code=400)))
                raise UpgradeRefused(f"upgrade request without the mqtt subprotocol: {event.subprotocols}")
            await stream.send(connection.send(AcceptConnection(subprotocol=subprotocol)))
            return WebSocketByteStream(stream, connection)
