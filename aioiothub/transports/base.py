"""The transport seam: what the session needs from one MQTT 3.1.1 connection, and nothing more.

A :class:`Transport` is one network connection to the hub (or to DPS). The session above it decides
when to connect, what to subscribe and what to send; the transport only moves packets. Two
implementations sit behind this seam: :mod:`aioiothub.transports.aiomqtt` (aiomqtt over paho-mqtt,
the default) and the native one built on :mod:`aioiothub.protocol.mqtt`.

Every error a transport raises is one of :mod:`aioiothub.exceptions`: :class:`ConnectError` or
:class:`AuthenticationError` from entering it (a refused CONNACK is mapped by
:func:`aioiothub.protocol.mqtt.connack_refused`, the client-role rules both transports share live in
:class:`aioiothub.protocol.mqtt.ClientSession`), :class:`ConnectionLostError` from anything done on a
connection that is gone. Nothing from the library underneath escapes.

Publish acknowledgements and the "connection lost" signal are :class:`asyncio.Future` objects
rather than anyio primitives: they are created once per message on the hottest path, and a bare
future is the cheapest awaitable asyncio has (the whole library runs on the asyncio backend).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from aioiothub.exceptions import ConnectionLostError, LossReason, ProtocolError
from aioiothub.options import ProxyOptions

__all__ = [
    "Channel",
    "ChannelOpener",
    "ConnectParameters",
    "InboundPublish",
    "MessageHandler",
    "Transport",
    "TransportFactory",
    "WillMessage",
    "describe_loss",
    "fail_waiters",
]


@dataclass(frozen=True, slots=True)
class WillMessage:
    """The message the hub publishes for a device whose connection drops without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class ConnectParameters:
    """Everything needed to open one MQTT connection.

    Attributes:
        host: where to connect (the gateway host when there is one).
        port: TCP port (8883 for MQTT over TLS, 443 for WebSocket).
        client_id: the MQTT client identifier.
        username: the MQTT username.
        password: the MQTT password (a SAS token), or ``None`` for X.509.
        ssl_context: the TLS context, already holding any client certificate.
        keepalive: the MQTT keep-alive in seconds.
        clean_session: the CONNECT CleanSession flag.
        websockets: MQTT over WebSocket (path ``/$iothub/websocket``) instead of plain TLS.
        max_in_flight: how many QoS 1 publishes may wait for their PUBACK at once.
        connect_timeout: seconds for TCP, TLS, CONNECT/CONNACK and each SUBSCRIBE/SUBACK.
        proxy: an HTTP or SOCKS proxy to go through.
        will: the last-will message, if any.
    """

    host: str
    port: int
    client_id: str
    username: str
    password: str | None
    ssl_context: ssl.SSLContext
    keepalive: int
    clean_session: bool
    websockets: bool
    max_in_flight: int
    connect_timeout: float
    proxy: ProxyOptions | None = None
    will: WillMessage | None = None

    def __repr__(self) -> str:
        password = None if self.password is None else "<redacted>"
        return (
            f"ConnectParameters(host={self.host!r}, port={self.port!r}, client_id={self.client_id!r}, "
            f"username={self.username!r}, password={password!r}, websockets={self.websockets!r})"
        )


@dataclass(frozen=True, slots=True)
class InboundPublish:
    """One PUBLISH the hub sent; QoS 1 ones wait for :meth:`Transport.acknowledge`."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int


MessageHandler = Callable[[InboundPublish], None]
"""Called on the event loop for each inbound PUBLISH, in order; it must not raise."""


class Transport(Protocol):
    """One MQTT 3.1.1 connection.

    Entering it connects and waits for CONNACK (raising :class:`~aioiothub.ConnectError`, or
    :class:`~aioiothub.AuthenticationError` for CONNACK 4 and 5); leaving it sends DISCONNECT when
    the connection is still up and closes the socket, bounded in time and shielded from
    cancellation. A transport is entered at most once.
    """

    lost: asyncio.Future[None]
    """Completes with :class:`~aioiothub.ConnectionLostError` when the connection ends for any reason."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether the connection is up (entered, and not lost)."""
        ...

    @property
    def last_received(self) -> float:
        """The event loop's clock (``loop.time()``) when the last packet arrived from the peer."""
        ...

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the future completes on PUBACK (at once for QoS 0).

        The future fails with :class:`~aioiothub.ConnectionLostError` when the connection drops
        first. Raises :class:`~aioiothub.ConnectionLostError` at once when it is already gone.
        """
        ...

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE and return the granted QoS of each filter.

        Raises :class:`~aioiothub.ConnectionLostError` when the connection is gone or no SUBACK
        comes within the connect timeout.
        """
        ...

    def acknowledge(self, message: InboundPublish) -> None:
        """Send the PUBACK of a QoS 1 message (nothing for QoS 0, or once the connection is gone)."""
        ...

    def ping(self) -> None:
        """Send a PINGREQ now (a liveness probe); does nothing once the connection is gone."""
        ...

    def abort(self, reason: str) -> None:
        """Drop the connection at once without DISCONNECT (the peer is deemed dead)."""
        ...


class TransportFactory(Protocol):
    """Builds a transport for one connection attempt; the session calls it for every (re)connect."""

    def __call__(self, parameters: ConnectParameters, on_message: MessageHandler) -> Transport: ...


class Channel(Protocol):
    """What the connection needs of the byte channel under it (the TLS channel, or a memory pipe)."""

    ready: asyncio.Future[None]
    closed: asyncio.Future[None]

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


#: Builds a channel from the connection's ``receive`` and ``on_lost`` callbacks.
ChannelOpener = Callable[[Callable[[bytes], None], Callable[[BaseException | None], None]], Channel]


def describe_loss(error: BaseException | None) -> tuple[LossReason, str]:
    """Why a connection ended, from what the socket or TLS layer reported (``None``: end of stream).

    Returns the :class:`LossReason` and the text a :class:`ConnectionLostError` carries.
    """
    if error is None or isinstance(error, ssl.SSLZeroReturnError):
        return LossReason.EOF, "the hub closed the connection (end of stream)"
    if isinstance(error, ssl.SSLEOFError):
        # No close_notify: the TCP connection was reset or cut off under TLS (a blocking TLS
        # socket reports a reset this way).
        return LossReason.RESET, f"the connection was reset or cut off without a TLS close: {error}"
    tls = error if isinstance(error, ssl.SSLError) else error.__cause__
    if isinstance(tls, ssl.SSLError):
        return LossReason.TLS_ERROR, f"the connection failed with a TLS error: {error}"
    if isinstance(error, ProtocolError):
        return LossReason.PROTOCOL_ERROR, f"the hub sent something that is not MQTT: {error}"
    if isinstance(error, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return LossReason.RESET, f"the connection was reset: {error}"
    return LossReason.RESET, f"the connection failed: {type(error).__name__}: {error}"


def fail_waiters(
    waiters: Iterable[asyncio.Future[Any]],
    reason: str,
    cause: BaseException | None = None,
    *,
    loss: LossReason | None = None,
) -> None:
    """Fail each waiter not yet done with a :class:`ConnectionLostError` of its own (``reason``).

    ``loss`` is the error's :attr:`~aioiothub.ConnectionLostError.reason` and ``cause`` its ``__cause__``.

    Each exception is read back at once: nobody may be awaiting a given waiter (the connection's
    "lost" future above all), and asyncio logs an exception that was never retrieved.
    """
    for waiter in waiters:
        if not waiter.done():
            error = ConnectionLostError(reason, reason=loss)
            error.__cause__ = cause
            waiter.set_exception(error)
            waiter.exception()
