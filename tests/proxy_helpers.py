"""An HTTP CONNECT proxy on loopback for the tests that reach the hub through one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.abc


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that records each request's head and can demand credentials."""

    def __init__(self, *, require: str | None = None) -> None:
        self.heads: list[str] = []
        self.require = require

    @property
    def targets(self) -> list[str]:
        """The ``host:port`` of each CONNECT request, in order."""
        return [head.split(" ", 2)[1] for head in self.heads]

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await client.receive()
            head = request.split(b"\r\n\r\n", 1)[0].decode()
            self.heads.append(head)
            if self.require is not None and f"Proxy-Authorization: {self.require}" not in head:
                await client.send(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            target = head.split(" ", 2)[1]
            async with await anyio.connect_tcp("127.0.0.1", int(target.rsplit(":", 1)[1])) as upstream:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with anyio.create_task_group() as pumps:
                    pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)

    @staticmethod
    async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()


async def serve_proxy(recorder: ConnectProxy) -> AsyncIterator[int]:
    """Serve ``recorder`` on a free loopback port and yield the port (an async generator for fixtures)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, recorder.handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tasks.cancel_scope.cancel()
