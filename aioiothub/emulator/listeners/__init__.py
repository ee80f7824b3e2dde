"""Network listeners for the emulator: MQTT over TLS (port 8883) and over WebSocket (port 443).

Each listener accepts connections, completes the TLS handshake (and for WebSocket the HTTP upgrade),
then hands the connection handler an :class:`anyio.abc.ByteStream` of raw MQTT bytes and a
:class:`PeerInfo`. The handler owns the protocol; the listener owns the task that runs it and closes
the stream when the handler returns. Whatever goes wrong on one connection (failed handshake, reset,
a handler error) is logged and ends that connection only.

Modules, one job each: :mod:`.handlers` (what a handler receives: :class:`PeerInfo`,
:class:`UpgradeRequest`, and the handler signatures), :mod:`.tls` (TLS on an asyncio protocol and its
byte stream; its docstring has the theory of operation), :mod:`.websocket` (the upgrade and
:class:`WebSocketByteStream`) and :mod:`.serving` (:func:`serve_tls`, :func:`serve_websocket` and :func:`serve_tcp`).
"""

from __future__ import annotations

from aioiothub.emulator.listeners.handlers import ConnectionHandler, HttpHandler, PeerInfo, UpgradeRequest
from aioiothub.emulator.listeners.serving import serve_tcp, serve_tls, serve_websocket

# Public like the names above; the TLS and WebSocket code read it from .tls (patch it there).
from aioiothub.emulator.listeners.tls import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from aioiothub.emulator.listeners.websocket import WebSocketByteStream

__all__ = [
    "ConnectionHandler",
    "HttpHandler",
    "PeerInfo",
    "UpgradeRequest",
    "WebSocketByteStream",
    "serve_tcp",
    "serve_tls",
    "serve_websocket",
]
