"""One TCP connection carrying a byte stream over TLS, optionally through an HTTP proxy and WebSocket.

Theory of operation
-------------------
:class:`SecureChannel` is an :class:`asyncio.Protocol` on a plain TCP transport. The layers it may
stack are set up one after the other, each starting when the one below is complete:

1. **HTTP CONNECT** (when a proxy is given): an ``h11`` client sends ``CONNECT host:port`` and reads
   the proxy's answer; a 2xx switches the socket to a tunnel, and any bytes after the answer belong
   to the next layer.
2. **TLS**, always: an :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` buffers. Received
   bytes go into one buffer and are decrypted right in :meth:`data_received`; encrypted output is
   taken from the other and written to the socket. asyncio's own TLS transport keeps a 256 KiB read
   buffer per connection; this keeps only what OpenSSL itself needs, which is what lets one process
   hold tens of thousands of connections.
3. **WebSocket** (MQTT over port 443): a ``wsproto`` client sends the upgrade request for
   :data:`~aioiothub.protocol.connect.WEBSOCKET_PATH` with subprotocol ``mqtt``; after the 101
   answer each :meth:`send` is one binary message, and binary messages received are concatenated.

:attr:`ready` completes once every layer is up, or fails with :class:`~aioiothub.ConnectError`
saying which layer refused. From then on the plaintext stream goes to the ``receive`` callback and
:meth:`send` takes plaintext; the end of the connection, for whatever reason, is reported once to
``on_lost`` (``None`` for an orderly end, else the error).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Final, cast

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from aioiothub.exceptions import ConnectError, ProtocolError
from aioiothub.protocol.connect import WEBSOCKET_PATH

__all__ = ["SecureChannel", "Tunnel"]

_log = logging.getLogger("aioiothub.transport")

#: OpenSSL hands back at most one TLS record (16 KiB of plaintext) per read.
_READ_SIZE: Final = 32 * 1024
#: The longest proxy answer accepted before the tunnel is up.
_MAX_PROXY_ANSWER: Final = 16 * 1024
_MQTT_SUBPROTOCOL: Final = "mqtt"

_PROXY, _TLS, _WEBSOCKET, _OPEN, _CLOSED = range(5)


class Tunnel:
    """Where an HTTP proxy should open a tunnel to, and the credentials it wants.

    Args:
        target: ``host:port`` of the hub as the proxy should reach it.
        username: the proxy user name, or ``None``.
        password: the proxy password, or ``None``.
    """

    __slots__ = ("authorization", "target")

    def __init__(self, target: str, username: str | None = None, password: str | None = None) -> None:
        self.target = target
        self.authorization: str | None = None
        if username is not None:
            credentials = f"{username}:{password or ''}".encode()
            self.authorization = "Basic " + base64.b64encode(credentials).decode("ascii")

    def __repr__(self) -> str:
        return f"Tunnel(target={self.target!r})"


class SecureChannel(asyncio.Protocol):
    """TLS (and optionally an HTTP CONNECT tunnel and WebSocket framing) over one TCP connection.

    Args:
        ssl_context: the client TLS context (CA, client certificate, minimum version).
        server_hostname: the name the server certificate must carry (the hub, never the proxy).
        receive: called with each piece of plaintext received once :attr:`ready` is done. It must
            not raise.
        on_lost: called once when the connection ends after :attr:`ready` completed: ``None`` for
            an orderly end (TLS close or TCP EOF), otherwise the error.
        tunnel: open an HTTP CONNECT tunnel first.
        websocket_host: carry the stream in WebSocket binary messages, with this ``Host`` header;
            ``None`` for plain MQTT over TLS.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        receive: Callable[[bytes], None],
        on_lost: Callable[[BaseException | None], None],
        tunnel: Tunnel | None = None,
        websocket_host: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        """Completes once every layer is up; fails with :class:`ConnectError` otherwise."""
        self.closed: asyncio.Future[None] = self._loop.create_future()
        """Completes when the TCP connection is gone."""
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname
        self._receive = receive
        self._on_lost = on_lost
        self._tunnel = tunnel
        self._websocket_host = websocket_host
        self._transport: asyncio.Transport | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._ssl: ssl.SSLObject | None = None
        self._http: h11.Connection | None = None
        self._websocket: WSConnection | None = None
        self._state = _PROXY if tunnel is not None else _TLS
        self._lost_reported = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily an asyncio.Transport subclass (uvloop's is not).
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        if self._tunnel is not None:
            self._http = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_PROXY_ANSWER)
            headers = [("Host", self._tunnel.target)]
            if self._tunnel.authorization is not None:
                headers.append(("Proxy-Authorization", self._tunnel.authorization))
            request = h11.Request(method="CONNECT", target=self._tunnel.target, headers=headers)
            transport.write(self._http.send(request) + (self._http.send(h11.EndOfMessage()) or b""))
        else:
            self._start_tls(b"")

    def data_received(self, data: bytes) -> None:
        if self._state == _OPEN and self._websocket is None:
            self._receive_tls(data)  # the hot path: MQTT over TLS
        elif self._state == _PROXY:
            self._receive_proxy_answer(data)
        elif self._state != _CLOSED:
            self._receive_tls(data)

    def eof_received(self) -> bool | None:
        if self._incoming is not None and self._state >= _TLS:
            self._incoming.write_eof()
            if self._state != _CLOSED:
                self._receive_tls(b"")
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            reason = f": {exc}" if exc is not None else " before the connection was set up"
            self._fail_setup(ConnectError(f"the connection to {self._server_hostname} was closed{reason}"))
        self._report_lost(exc)

    # --- sending and closing ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` (framed as one WebSocket message when there is a WebSocket) and write it."""
        if self._state != _OPEN:
            return
        websocket = self._websocket
        if websocket is not None:
            data = websocket.send(BytesMessage(data=data))
        self._write_tls(data)

    def close(self) -> None:
        """Close in order: a WebSocket close frame, the TLS close_notify, then the TCP connection."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._state == _OPEN:
            self._state = _CLOSED
            if self._websocket is not None:
                with contextlib.suppress(LocalProtocolError):
                    self._write_tls(self._websocket.send(CloseConnection(code=1000)), force=True)
            assert self._ssl is not None
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()  # queues close_notify; the peer's answer is not awaited
            self._flush_tls()
        self._state = _CLOSED
        transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self._state = _CLOSED
        if self._transport is not None:
            self._transport.abort()

    # --- layer 1: the proxy tunnel ------------------------------------------------------------------

    def _receive_proxy_answer(self, data: bytes) -> None:
        http = self._http
        tunnel = self._tunnel
        assert http is not None
        assert tunnel is not None
        try:
            http.receive_data(data)
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response) and not 200 <= event.status_code < 300:
                    reason = event.reason.decode("latin-1", "replace")
                    refusal = f"the proxy refused CONNECT {tunnel.target}: {event.status_code} {reason}"
                    self._fail_setup(ConnectError(refusal))
                    return
                if event is h11.PAUSED:
                    break
        except h11.RemoteProtocolError as exc:
            self._fail_setup(ConnectError(f"the proxy answered CONNECT with malformed HTTP: {exc}"))
            return
        if http.their_state is not h11.SWITCHED_PROTOCOL:
            self._fail_setup(ConnectError(f"the proxy did not open a tunnel to {tunnel.target}"))
            return
        trailing, _ = http.trailing_data
        self._http = None
        self._start_tls(bytes(trailing))

    # --- layer 2: TLS -------------------------------------------------------------------------------

    def _start_tls(self, early: bytes) -> None:
        self._state = _TLS
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        try:
            self._ssl = self._ssl_context.wrap_bio(
                self._incoming, self._outgoing, server_side=False, server_hostname=self._server_hostname
            )
        except (ssl.SSLError, ValueError) as exc:
            self._fail_setup(ConnectError(f"could not start TLS with {self._server_hostname}: {exc}"))
            return
        self._receive_tls(early)

    def _handshake(self) -> bool:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._flush_tls()  # the alert tells the server why
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
            self._fail_setup(ConnectError(f"TLS handshake with {self._server_hostname} failed: {reason}"))
            return False
        self._flush_tls()
        if self._websocket_host is None:
            self._open()
        else:
            self._state = _WEBSOCKET
            self._websocket = WSConnection(ConnectionType.CLIENT)
            request = Request(host=self._websocket_host, target=WEBSOCKET_PATH, subprotocols=[_MQTT_SUBPROTOCOL])
            self._write_tls(self._websocket.send(request), force=True)
        return True

    def _receive_tls(self, data: bytes) -> None:
        incoming = self._incoming
        ssl_object = self._ssl
        assert incoming is not None
        assert ssl_object is not None
        if data:
            incoming.write(data)
        if self._state == _TLS and not self._handshake():
            return
        chunks: list[bytes] = []
        ended = False
        read = ssl_object.read
        try:
            while True:
                chunk = read(_READ_SIZE)
                if not chunk:
                    ended = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            ended = True
        except ssl.SSLError as exc:
            error = ProtocolError(f"TLS error from {self._server_hostname}: {exc}")
            error.__cause__ = exc  # what the loss is classified by (a TLS error, not bad MQTT)
            self._fail(error)
            return
        if self._outgoing is not None and self._outgoing.pending:
            self._flush_tls()  # reading can produce output: alerts, TLS 1.3 key updates
        if chunks:
            plaintext = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._websocket is not None:
                self._receive_websocket(plaintext)
            elif self._state == _OPEN:
                self._receive(plaintext)
        if ended and self._state != _CLOSED:
            self.close()

    def _write_tls(self, data: bytes, *, force: bool = False) -> None:
        ssl_object = self._ssl
        if ssl_object is None or (self._state == _CLOSED and not force):
            return
        try:
            view = memoryview(data)
            while view:
                written = ssl_object.write(view)
                view = view[written:]
        except ssl.SSLError as exc:
            error = ProtocolError(f"TLS error while sending to {self._server_hostname}: {exc}")
            error.__cause__ = exc
            self._fail(error)
            return
        self._flush_tls()

    def _flush_tls(self) -> None:
        outgoing = self._outgoing
        transport = self._transport
        if outgoing is not None and outgoing.pending and transport is not None and not transport.is_closing():
            transport.write(outgoing.read())

    # --- layer 3: WebSocket -------------------------------------------------------------------------

    def _receive_websocket(self, data: bytes) -> None:
        websocket = self._websocket
        assert websocket is not None
        try:
            websocket.receive_data(data)
            for event in websocket.events():
                if isinstance(event, BytesMessage):
                    if self._state == _OPEN:
                        self._receive(bytes(event.data))
                elif isinstance(event, AcceptConnection):
                    self._open()
                elif isinstance(event, RejectConnection | RejectData):
                    status = getattr(event, "status_code", "")
                    self._fail_setup(ConnectError(f"the WebSocket upgrade to {WEBSOCKET_PATH} was refused {status}"))
                    return
                elif isinstance(event, Ping):
                    self._write_tls(websocket.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(LocalProtocolError):
                        self._write_tls(websocket.send(event.response()), force=True)
                    self.close()
                    return
                elif isinstance(event, TextMessage):
                    self._fail(ProtocolError("the server sent a WebSocket text message; MQTT uses binary messages"))
                    return
        except RemoteProtocolError as exc:
            self._fail(ProtocolError(f"malformed WebSocket data from {self._server_hostname}: {exc}"))

    # --- outcomes -----------------------------------------------------------------------------------

    def _open(self) -> None:
        self._state = _OPEN
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail_setup(self, error: ConnectError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # the connecting task may have been cancelled meanwhile
        self.abort()

    def _fail(self, error: BaseException) -> None:
        if not self.ready.done():
            self._fail_setup(ConnectError(str(error)))
            return
        self._report_lost(error)
        self.abort()

    def _report_lost(self, error: BaseException | None) -> None:
        ready = self.ready
        if self._lost_reported or not ready.done() or ready.cancelled() or ready.exception() is not None:
            return  # a connection that never came up is reported through ready alone
        self._lost_reported = True
        try:
            self._on_lost(error)
        except Exception:
            _log.exception("connection-lost handler failed")
