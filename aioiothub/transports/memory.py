"""An in-memory byte pipe: the client's end as a channel of the native transport, the other an anyio stream.

:class:`aioiothub.testing.MemoryNetwork` connects a client to an in-process emulator through one of
these, with no socket and no TLS: the native transport speaks MQTT into :class:`MemoryChannel`
exactly as it does into its TLS channel, and the emulator serves :class:`MemoryServerEnd` as it
serves a TLS stream after the handshake.

Theory of operation
-------------------
Bytes the client sends are queued for the server end (unbounded: a test's traffic, not a network's);
bytes the server sends reach the client's ``receive`` callback on a later event-loop turn, as a
socket's would. Either side closing ends both: the server end then reads end-of-stream, and the
client hears ``on_lost(None)`` -- an end of stream -- once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["MemoryChannel", "MemoryServerEnd", "memory_pipe"]


class MemoryChannel:
    """The client's end: what :class:`~aioiothub.transports.native.NativeConnection` needs of a channel."""

    def __init__(self, receive: Callable[[bytes], None], on_lost: Callable[[BaseException | None], None]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        """Done at once: there is nothing to set up."""
        self.ready.set_result(None)
        self.closed: asyncio.Future[None] = loop.create_future()
        """Completes when the pipe is closed, by either end."""
        self._receive = receive
        self._on_lost = on_lost
        self._to_server, self._from_client = anyio.create_memory_object_stream[bytes](math.inf)

    @property
    def is_open(self) -> bool:
        """Whether bytes still flow."""
        return not self.closed.done()

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the server end (dropped once the pipe is closed, as a socket's would be)."""
        if self.is_open:
            self._to_server.send_nowait(data)

    def close(self) -> None:
        """Close the pipe; the server end reads end-of-stream after what was sent."""
        self._end()

    def abort(self) -> None:
        """The same as :meth:`close`: memory has no half-written data to throw away."""
        self._end()

    async def next_from_client(self, max_bytes: int) -> bytes:
        """What the client sent since the last call, about ``max_bytes`` at most (``anyio.EndOfStream`` once closed).

        Everything queued is taken at once, as a socket read would: the server answers a burst with
        one write rather than one per packet.
        """
        receive = self._from_client
        try:
            chunks = [await receive.receive()]
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise anyio.EndOfStream from None
        size = len(chunks[0])
        while size < max_bytes:
            try:
                chunk = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            chunks.append(chunk)
            size += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """The server end is done reading: free what it had not read."""
        self._from_client.close()

    def deliver(self, data: bytes) -> None:
        """Bytes from the server end, handed to the client on a later loop turn."""
        if self.is_open:
            self._loop.call_soon(self._received, data)

    def _received(self, data: bytes) -> None:
        if self.is_open:
            self._receive(data)

    def _end(self) -> None:
        if not self.is_open:
            return
        self.closed.set_result(None)
        self._to_server.close()  # the server end reads what was sent, then end-of-stream
        self._loop.call_soon(self._on_lost, None)


class MemoryServerEnd(anyio.abc.ByteStream):
    """The emulator's end of a :class:`MemoryChannel`."""

    def __init__(self, channel: MemoryChannel) -> None:
        self._channel = channel
        self._pending = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._pending:
            self._pending = await self._channel.next_from_client(max_bytes)
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        if not self._channel.is_open:
            raise anyio.BrokenResourceError
        self._channel.deliver(bytes(item))
        await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self._channel.close()

    async def aclose(self) -> None:
        self._channel.close()
        self._channel.release()


def memory_pipe(
    receive: Callable[[bytes], None], on_lost: Callable[[BaseException | None], None]
) -> tuple[MemoryChannel, MemoryServerEnd]:
    """A connected pair: the client's channel (calling ``receive`` and ``on_lost``) and the server's stream."""
    channel = MemoryChannel(receive, on_lost)
    return channel, MemoryServerEnd(channel)
