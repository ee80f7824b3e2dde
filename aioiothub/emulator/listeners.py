"""Network listeners for the emulator: MQTT over TLS (port 8883) and over WebSocket (port 443).

Each listener accepts connections, completes the TLS handshake (and for WebSocket the HTTP upgrade),
then hands the connection handler an :class:`anyio.abc.ByteStream` of raw MQTT bytes and a
:class:`PeerInfo`. The handler owns the protocol; the listener owns the task that runs it and closes
the stream when the handler returns. Whatever goes wrong on one connection (failed handshake, reset,
a handler error) is logged and ends that connection only.

Theory of operation (TLS)
-------------------------
TLS runs inside an asyncio protocol on the plain TCP transport, with ``ssl.MemoryBIO`` buffers: bytes
are decrypted in the transport's callback as they arrive, and a task is started for a connection only
once its handshake has completed. Measured against anyio's ``TLSStream`` (one task switch and several
Python layers per record) and asyncio's own SSL transport (a 256 KiB read buffer per connection),
this spends the least CPU per packet and per handshake and keeps the memory per connection small, which
matters when a benchmark holds thousands of connections. The byte stream handed to the handler is a
thin adapter with flow control in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.tls import TLSAttribute
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from aioiothub.protocol.connect import WEBSOCKET_PATH

__all__ = [
    "ConnectionHandler",
    "HttpHandler",
    "PeerInfo",
    "UpgradeRequest",
    "WebSocketByteStream",
    "serve_tls",
    "serve_websocket",
]

logger = logging.getLogger(__name__)

#: Time allowed for the TLS handshake, and separately for the WebSocket upgrade request.
HANDSHAKE_TIMEOUT: Final = 10.0
# Benchmarks open thousands of connections at once; the kernel caps this at net.core.somaxconn.
_BACKLOG: Final = 8192
# How long a closing stream waits for the TLS close_notify exchange before aborting the socket.
_CLOSE_TIMEOUT: Final = 2.0
# Read-side flow control: stop reading from the socket while this much decrypted data is unread.
_READ_HIGH_WATER: Final = 256 * 1024
_READ_LOW_WATER: Final = 64 * 1024
_MQTT_SUBPROTOCOLS: Final = ("mqtt", "MQTT")


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the listener knows about a connected client.

    Attributes:
        remote_address: the client's address as ``host:port`` (``[host]:port`` for IPv6).
        transport: ``"tls"`` for MQTT over TLS, ``"websocket"`` for MQTT over WebSocket over TLS.
        client_certificate_der: the client's TLS certificate in DER form, or ``None`` if it sent none.
    """

    remote_address: str
    transport: Literal["tls", "websocket"]
    client_certificate_der: bytes | None


#: Runs one client connection; the listener closes the stream when it returns.
ConnectionHandler = Callable[[anyio.abc.ByteStream, PeerInfo], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """An HTTP request asking to switch protocols, read by an :data:`HttpHandler`.

    Attributes:
        target: the request target (path and query).
        headers: the request headers as sent.
        trailing_data: bytes received after the request head.
    """

    target: str
    headers: list[tuple[bytes, bytes]]
    trailing_data: bytes


#: Serves plain HTTP requests on a port-443 connection; returns the first upgrade request, if any.
HttpHandler = Callable[[anyio.abc.ByteStream, PeerInfo], Awaitable[UpgradeRequest | None]]


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


class _TLSConnection(asyncio.Protocol):
    """Server-side TLS over one TCP connection, decrypting into a plaintext buffer.

    ``on_established`` is called (from the transport callback) once the handshake completes; a
    handshake that fails or does not finish within :data:`HANDSHAKE_TIMEOUT` is logged and the
    connection dropped.
    """

    def __init__(self, ssl_context: ssl.SSLContext, on_established: Callable[[_TLSConnection], None]) -> None:
        self._on_established = on_established
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = ssl_context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.transport: asyncio.Transport | None = None
        self.remote_address = "unknown"
        self.established = False
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost_waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.remote_address = _format_address(transport.get_extra_info("peername"))
        loop = asyncio.get_running_loop()
        self._lost_waiter = loop.create_future()
        self._handshake_timer = loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.established and not self._handshake():
            return
        self._decrypt()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        if self.established:
            self._decrypt()
            # A TCP close without close_notify still ends the stream for MQTT purposes.
            self.eof = True
            self.wake_reader()
        else:
            logger.debug("TLS handshake with %s failed: the client closed the connection", self.remote_address)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if exc is not None and not self.eof:
            self.error = exc
            if not self.established:
                logger.debug("TLS handshake with %s failed: %r", self.remote_address, exc)
        self.wake_reader()
        self._wake_writers()
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writers()

    # --- TLS ----------------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        assert self.transport is not None
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            logger.debug("TLS handshake with %s failed: %r", self.remote_address, exc)
            self._flush()  # the alert tells the client why
            self.transport.close()
            return False
        self.established = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._flush()
        self._on_established(self)
        return True

    def _handshake_timed_out(self) -> None:
        if not self.established and self.transport is not None:
            logger.debug("TLS handshake with %s timed out after %s s", self.remote_address, HANDSHAKE_TIMEOUT)
            self.transport.abort()

    def _decrypt(self) -> None:
        assert self.transport is not None
        buffer = self.buffer
        read = self.ssl_object.read
        try:
            while True:
                chunk = read(65536)
                if not chunk:  # the peer's close_notify
                    self.eof = True
                    break
                buffer += chunk
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.eof = True
        except ssl.SSLError as exc:
            self.error = exc
            self.transport.abort()
            self.wake_reader()
            return
        # Reading can produce output too: alerts, and TLS 1.3 key updates.
        self._flush()
        if not self.reading_paused and len(buffer) > _READ_HIGH_WATER:
            self.reading_paused = True
            self.transport.pause_reading()
        self.wake_reader()

    def _flush(self) -> None:
        if self._outgoing.pending and self.transport is not None:
            self.transport.write(self._outgoing.read())

    def write(self, data: bytes) -> None:
        """Encrypt and send ``data``."""
        view = memoryview(data)
        while view:
            written = self.ssl_object.write(view)
            view = view[written:]
        self._flush()

    def close(self) -> None:
        """Send close_notify (when the session is up) and close the TCP connection once flushed."""
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if self.established and not self.lost:
            # unwrap() queues close_notify, then complains that the peer has not answered yet: it need not.
            with contextlib.suppress(ssl.SSLError):
                self.ssl_object.unwrap()
            self._flush()
        self.transport.close()

    def drained(self) -> None:
        """Resume reading once the application has consumed enough of the buffer."""
        if self.reading_paused and len(self.buffer) < _READ_LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    # --- waiting ------------------------------------------------------------------------------------

    def wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    async def wait_readable(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            self._read_waiter = None

    async def wait_writable(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drain_waiters:
                self._drain_waiters.remove(waiter)

    async def wait_lost(self) -> None:
        assert self._lost_waiter is not None
        await asyncio.shield(self._lost_waiter)


class _TLSByteStream(anyio.abc.ByteStream):
    """An anyio byte stream over an established :class:`_TLSConnection`."""

    def __init__(self, connection: _TLSConnection) -> None:
        assert connection.transport is not None
        self._connection = connection
        self._transport = connection.transport
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        connection = self._connection
        if connection.buffer:
            # Data is already waiting: honour cancellation without a round trip through the loop.
            await anyio.lowlevel.checkpoint_if_cancelled()
        while not connection.buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if connection.eof:
                raise anyio.EndOfStream
            if connection.error is not None:
                raise anyio.BrokenResourceError from connection.error
            if connection.lost:
                raise anyio.EndOfStream
            await connection.wait_readable()
        if self._closed:
            raise anyio.ClosedResourceError
        buffer = connection.buffer
        if len(buffer) <= max_bytes:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:max_bytes])
            del buffer[:max_bytes]
        connection.drained()
        return data

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise anyio.ClosedResourceError
        connection = self._connection
        if connection.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError
        try:
            connection.write(item)
        except ssl.SSLError as exc:
            raise anyio.BrokenResourceError from exc
        while connection.writing_paused and not connection.lost:
            await connection.wait_writable()

    async def send_eof(self) -> None:
        raise NotImplementedError("TLS streams do not support half-closing; close the stream instead")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.wake_reader()
        self._connection.close()
        try:
            with anyio.move_on_after(_CLOSE_TIMEOUT):
                await self._connection.wait_lost()
        finally:
            # A peer that stopped reading, or a forceful close, gets the socket torn down.
            if not self._connection.lost:
                self._transport.abort()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        transport = self._transport
        ssl_object = self._connection.ssl_object
        return {
            anyio.abc.SocketAttribute.remote_address: lambda: transport.get_extra_info("peername"),
            anyio.abc.SocketAttribute.local_address: lambda: transport.get_extra_info("sockname"),
            TLSAttribute.ssl_object: lambda: ssl_object,
            TLSAttribute.peer_certificate_binary: lambda: ssl_object.getpeercert(binary_form=True),
            TLSAttribute.cipher: ssl_object.cipher,
            TLSAttribute.tls_version: ssl_object.version,
            TLSAttribute.server_side: lambda: True,
        }


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


class _UpgradeRefused(Exception):
    """The WebSocket upgrade request was answered with an HTTP error."""


async def _accept_websocket(
    stream: anyio.abc.ByteStream, path: str, opening: UpgradeRequest | None = None
) -> WebSocketByteStream:
    """Answer the HTTP upgrade on ``stream`` (already read when ``opening`` is given).

    Raises:
        _UpgradeRefused: after refusing the upgrade.
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
            await stream.send(connection.send(exc.event_hint or RejectConnection(status_code=400)))
            raise _UpgradeRefused(f"bad upgrade request: {exc}") from None
        for event in connection.events():
            if not isinstance(event, Request):
                continue
            # Some SDKs add a query string (such as ?iothub-no-client-cert=true) to the path.
            target = event.target.partition("?")[0]
            if target != path:
                await stream.send(connection.send(RejectConnection(status_code=404)))
                raise _UpgradeRefused(f"upgrade request for unknown path {event.target!r}")
            subprotocol = next((name for name in event.subprotocols if name in _MQTT_SUBPROTOCOLS), None)
            if subprotocol is None:
                await stream.send(connection.send(RejectConnection(status_code=400)))
                raise _UpgradeRefused(f"upgrade request without the mqtt subprotocol: {event.subprotocols}")
            await stream.send(connection.send(AcceptConnection(subprotocol=subprotocol)))
            return WebSocketByteStream(stream, connection)


async def _bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind one socket per address of ``host``, all on the same port even when ``port`` is 0."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address[:2]) in seen:
                continue
            seen.add((family, address[:2]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Otherwise the IPv6 socket also claims the IPv4 port and the IPv4 bind fails.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _peer_info(stream: _TLSByteStream, kind: Literal["tls", "websocket"]) -> PeerInfo:
    return PeerInfo(
        remote_address=_format_address(stream.extra(anyio.abc.SocketAttribute.remote_address)),
        transport=kind,
        client_certificate_der=stream.extra(TLSAttribute.peer_certificate_binary),
    )


async def _run_handler(handler: ConnectionHandler, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
    try:
        await handler(stream, peer)
    except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError, OSError) as exc:
        logger.debug("connection from %s ended: %r", peer.remote_address, exc)
    except Exception:
        logger.exception("connection handler failed for %s", peer.remote_address)
    finally:
        await stream.aclose()


async def _serve(
    on_connection: Callable[[_TLSByteStream], Coroutine[Any, Any, None]],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    task_status: anyio.abc.TaskStatus[int],
) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}")
    loop = asyncio.get_running_loop()
    sockets = await _bind_sockets(host, port)
    servers: list[asyncio.Server] = []
    accepting = True
    async with anyio.create_task_group() as task_group:

        def established(connection: _TLSConnection) -> None:
            # Runs in a protocol callback; after shutdown began there is no task group to join.
            if not accepting:
                connection.close()
                return
            task_group.start_soon(
                on_connection, _TLSByteStream(connection), name=f"mqtt connection {connection.remote_address}"
            )

        def new_connection() -> _TLSConnection:
            return _TLSConnection(ssl_context, established)

        try:
            for sock in sockets:
                servers.append(await loop.create_server(new_connection, sock=sock, backlog=_BACKLOG))
            task_status.started(sockets[0].getsockname()[1])
            await anyio.sleep_forever()
        finally:
            accepting = False
            for server in servers:
                server.close()
            for sock in sockets:
                sock.close()
            task_group.cancel_scope.cancel()


async def serve_tls(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept MQTT-over-TLS connections until cancelled, running ``handler`` for each one.

    Args:
        handler: called with each connection's byte stream and :class:`PeerInfo`.
        host: the address or name to listen on; every address it resolves to is bound.
        port: the TCP port, or 0 for a free one (the same one for every address).
        ssl_context: the server context, e.g. from :func:`~aioiothub.emulator.certs.server_ssl_context`.
        task_status: receives the port actually listened on, once listening.

    Raises:
        OSError: the address cannot be bound.
    """

    async def on_connection(stream: _TLSByteStream) -> None:
        await _run_handler(handler, stream, _peer_info(stream, "tls"))

    await _serve(on_connection, host, port, ssl_context, task_status)


async def serve_websocket(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    path: str = WEBSOCKET_PATH,
    http_handler: HttpHandler | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept MQTT-over-WebSocket-over-TLS connections until cancelled, running ``handler`` for each.

    The upgrade request must be a ``GET`` of ``path`` (a query string is ignored), or it is answered
    404; it must offer the subprotocol ``mqtt`` or ``MQTT`` (the one offered is echoed), or it is
    answered 400.

    Args:
        handler: called with each connection's :class:`WebSocketByteStream` and :class:`PeerInfo`.
        host: the address or name to listen on; every address it resolves to is bound.
        port: the TCP port, or 0 for a free one.
        ssl_context: the server context.
        path: the request path that upgrades to MQTT.
        http_handler: serves requests that are not upgrades (the hub's REST API on the same port)
            and hands back the first upgrade request; without it every request must upgrade.
        task_status: receives the port actually listened on, once listening.

    Raises:
        OSError: the address cannot be bound.
    """

    async def on_connection(stream: _TLSByteStream) -> None:
        peer = _peer_info(stream, "websocket")
        opening: UpgradeRequest | None = None
        try:
            if http_handler is not None:
                opening = await http_handler(stream, peer)
                if opening is None:
                    await stream.aclose()
                    return
            with anyio.fail_after(HANDSHAKE_TIMEOUT):
                websocket = await _accept_websocket(stream, path, opening)
        except (
            _UpgradeRefused,
            TimeoutError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            OSError,
        ) as exc:
            logger.debug("WebSocket upgrade from %s failed: %r", peer.remote_address, exc)
            await stream.aclose()
            return
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        await _run_handler(handler, websocket, peer)

    await _serve(on_connection, host, port, ssl_context, task_status)
