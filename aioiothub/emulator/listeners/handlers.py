"""What a listener hands to the code that serves a connection, and the signatures that code has.

A :data:`ConnectionHandler` gets the connection's byte stream of raw MQTT and a :class:`PeerInfo`;
on the WebSocket port an :data:`HttpHandler` first serves plain HTTP requests and hands back the
:class:`UpgradeRequest` that opens the WebSocket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio.abc

__all__ = ["ConnectionHandler", "HttpHandler", "PeerInfo", "UpgradeRequest"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the listener knows about a connected client.

    Attributes:
        remote_address: the client's address as ``host:port`` (``[host]:port`` for IPv6).
        transport: ``"tls"`` for MQTT over TLS, ``"websocket"`` for MQTT over WebSocket over TLS, ``"tcp"``
            for a plain TCP connection (AMQP without TLS),
            ``"memory"`` for a connection handed over in memory (:meth:`Emulator.accept_stream`).
        client_certificate_der: the client's TLS certificate in DER form, or ``None`` if it sent none.
    """

    remote_address: str
    transport: Literal["tls", "websocket", "memory", "tcp"]
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
