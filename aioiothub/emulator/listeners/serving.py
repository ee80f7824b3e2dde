"""The serve functions: bind the port, accept connections and run a handler for each, until cancelled.

:func:`serve_tls` runs the handler once a connection's TLS handshake completes; :func:`serve_websocket`
also lets an optional :data:`~.handlers.HttpHandler` serve plain HTTP requests and then answers the
WebSocket upgrade before running the handler. Whatever goes wrong on one connection is logged and
ends that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Final

import anyio
import anyio.abc

from aioiothub.emulator.listeners.handlers import ConnectionHandler, HttpHandler, PeerInfo, UpgradeRequest
from aioiothub.emulator.listeners.tls import HANDSHAKE_TIMEOUT, accept_tls_connections, peer_info
from aioiothub.emulator.listeners.websocket import UpgradeRefused, accept_websocket
from aioiothub.protocol.connect import WEBSOCKET_PATH

__all__ = ["serve_tcp", "serve_tls", "serve_websocket"]

# One logger for every listener module, so that logging is configured for all of them under one name.
logger = logging.getLogger("aioiothub.emulator.listeners")

# Benchmarks open thousands of connections at once; the kernel caps this at net.core.somaxconn.
_BACKLOG: Final = 8192


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
    on_connection: Callable[[anyio.abc.ByteStream], Coroutine[Any, Any, None]],
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
    sockets = await _bind_sockets(host, port)
    await accept_tls_connections(on_connection, sockets, ssl_context, backlog=_BACKLOG, task_status=task_status)


async def serve_tls(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TLS connections (MQTT or AMQP) until cancelled, running ``handler`` for each one.

    Args:
        handler: called with each connection's byte stream and :class:`PeerInfo`.
        host: the address or name to listen on; every address it resolves to is bound.
        port: the TCP port, or 0 for a free one (the same one for every address).
        ssl_context: the server context, e.g. from :func:`~aioiothub.emulator.certs.server_ssl_context`.
        task_status: receives the port actually listened on, once listening.

    Raises:
        OSError: the address cannot be bound.
    """

    async def on_connection(stream: anyio.abc.ByteStream) -> None:
        await _run_handler(handler, stream, peer_info(stream, "tls"))

    await _serve(on_connection, host, port, ssl_context, task_status)


async def serve_tcp(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept plain TCP connections until cancelled, running ``handler`` for each (AMQP without TLS).

    Raises:
        OSError: the address cannot be bound.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, backlog=_BACKLOG)

    async def on_connection(stream: anyio.abc.SocketStream) -> None:
        remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        address = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        await _run_handler(handler, stream, PeerInfo(address, "tcp", None))

    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(on_connection)


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

    async def on_connection(stream: anyio.abc.ByteStream) -> None:
        peer = peer_info(stream, "websocket")
        opening: UpgradeRequest | None = None
        try:
            if http_handler is not None:
                opening = await http_handler(stream, peer)
                if opening is None:
                    await stream.aclose()
                    return
            with anyio.fail_after(HANDSHAKE_TIMEOUT):
                websocket = await accept_websocket(stream, path, opening)
        except (
            UpgradeRefused,
            TimeoutError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            OSError,
        ) as exc:
            logger.debug("WebSocket upgrade from %s failed: %r", peer.remote_address, exc)
            await stream.aclose()
            return
        except Exception:
            # A bug in the HTTP side must end this connection, not the listener and its others.
            logger.exception("connection from %s failed before the WebSocket opened", peer.remote_address)
            await anyio.aclose_forcefully(stream)
            return
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        await _run_handler(handler, websocket, peer)

    await _serve(on_connection, host, port, ssl_context, task_status)
