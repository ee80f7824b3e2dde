"""The TLS side of the listeners: server-side TLS inside an asyncio protocol, and the byte stream over it.

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
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Literal

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.tls import TLSAttribute

from aioiothub.emulator.listeners.handlers import PeerInfo

__all__ = ["HANDSHAKE_TIMEOUT", "accept_tls_connections", "peer_info"]

# One logger for every listener module, so that logging is configured for all of them under one name.
logger = logging.getLogger("aioiothub.emulator.listeners")

#: Time allowed for the TLS handshake, and separately for the WebSocket upgrade request.
HANDSHAKE_TIMEOUT: Final = 10.0
# How long a closing stream waits for the TLS close_notify exchange before aborting the socket.
_CLOSE_TIMEOUT: Final = 2.0
# Read-side flow control: stop reading from the socket while this much decrypted data is unread.
_READ_HIGH_WATER: Final = 256 * 1024
_READ_LOW_WATER: Final = 64 * 1024


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

    def abort_handshake(self) -> None:
        """Drop the connection if its handshake has not completed (the listener is shutting down)."""
        if not self.established and self.transport is not None and not self.lost:
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


def peer_info(stream: anyio.abc.ByteStream, kind: Literal["tls", "websocket"]) -> PeerInfo:
    """What a handler is told about the client of a TLS stream this module opened."""
    return PeerInfo(
        remote_address=_format_address(stream.extra(anyio.abc.SocketAttribute.remote_address)),
        transport=kind,
        client_certificate_der=stream.extra(TLSAttribute.peer_certificate_binary),
    )


async def accept_tls_connections(
    on_connection: Callable[[anyio.abc.ByteStream], Coroutine[Any, Any, None]],
    sockets: list[socket.socket],
    ssl_context: ssl.SSLContext,
    *,
    backlog: int,
    task_status: anyio.abc.TaskStatus[int],
) -> None:
    """Accept TLS connections on bound ``sockets`` until cancelled; ``on_connection`` runs for each
    one, in a task of its own, once its handshake has completed.

    ``task_status`` receives the first socket's port once listening. On cancellation the sockets are
    closed and every connection still in its handshake is aborted.
    """
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    # Every connection, so that the ones still in their handshake at shutdown are torn down too (the
    # others are closed by their handler tasks); the transports keep them alive until then.
    connections: weakref.WeakSet[_TLSConnection] = weakref.WeakSet()
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
            connection = _TLSConnection(ssl_context, established)
            connections.add(connection)
            return connection

        try:
            for sock in sockets:
                servers.append(await loop.create_server(new_connection, sock=sock, backlog=backlog))
            task_status.started(sockets[0].getsockname()[1])
            await anyio.sleep_forever()
        finally:
            accepting = False
            for server in servers:
                server.close()
            for sock in sockets:
                sock.close()
            for connection in list(connections):
                connection.abort_handshake()
            task_group.cancel_scope.cancel()
