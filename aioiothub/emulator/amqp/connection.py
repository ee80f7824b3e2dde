"""One AMQP 1.0 connection: our SASL exchange, then python-qpid-proton's engine, on one byte stream.

Theory of operation
-------------------
The listener hands over a byte stream whose TLS (if any) is done. :class:`AmqpConnection` first
reads the protocol header. A SASL header (``AMQP 3 1 0 0``) gets the SASL exchange of
:mod:`aioiothub.emulator.amqp.frames`: the mechanisms the SDKs use are offered, the client's choice
is accepted (what authenticates a link is the ``$cbs`` token, checked later), and the client then
sends the AMQP header. A plain AMQP header (rhea sends no SASL) goes straight to the engine.

From the AMQP header on, every byte read is pushed into a server-mode
:class:`proton.Transport` bound to a :class:`proton.Connection`; the engine's events are handed to
:class:`~aioiothub.emulator.amqp.nodes.Nodes` at once, on the event loop thread, and then all the
engine's pending output is drained, padded by
:class:`~aioiothub.emulator.amqp.frames.PerformativePadder` and written in one send -- never part of
it, which is what kept consumers from stalling on a transfer split across writes. Two more tasks
share the connection: one wakes when the hub appends events and pumps them to the readers, one
calls the engine's ``tick`` when its idle-timeout deadline comes (heartbeats out, a silent peer
closed). Malformed input ends only this connection, with the reason logged at INFO.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio
import anyio.abc
from proton import Collector, Connection, Endpoint, Event, Link, Session, Transport

from aioiothub.emulator.amqp.frames import (
    AMQP_HEADER,
    SASL_HEADER,
    FrameError,
    PerformativePadder,
    encode_sasl_mechanisms,
    encode_sasl_outcome,
    parse_sasl_init,
    split_frame,
)
from aioiothub.emulator.amqp.nodes import Nodes, Owners
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.listeners import PeerInfo
from aioiothub.emulator.service_api.policies import SharedAccessPolicy

__all__ = ["AmqpConnection"]

logger = logging.getLogger("aioiothub.emulator")

_MECHANISMS: Final = ("MSSBCBS", "PLAIN", "ANONYMOUS", "EXTERNAL")
_HANDSHAKE_TIMEOUT: Final = 10.0
_MAX_SASL_BYTES: Final = 64 * 1024
_WRITE_TIMEOUT: Final = 30.0
_STREAM_ERRORS: Final = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError)


class _Closed(Exception):
    """The connection is over (the reason is the message)."""


class AmqpConnection:
    """Serve one AMQP connection until it ends (see the module docstring).

    Args:
        core: the hub the connection reads from.
        policies: the hub's shared access policies.
        stream: the connection's byte stream, after TLS.
        peer: where it comes from.
        hostname: the hub's host name.
        event_hub_name: the built-in endpoint's event hub name.
        owners: every connection's partition readers (owner levels span connections).
        amqps_port: the AMQPS listener's port (named in redirects).
    """

    def __init__(
        self,
        core: HubCore,
        policies: Sequence[SharedAccessPolicy],
        stream: anyio.abc.ByteStream,
        peer: PeerInfo,
        *,
        hostname: str,
        event_hub_name: str,
        owners: Owners,
        amqps_port: int = 5671,
    ) -> None:
        self._core = core
        self._stream = stream
        self._peer = peer
        self._nodes = Nodes(
            core,
            policies,
            hostname=hostname,
            event_hub_name=event_hub_name,
            owners=owners,
            wake=self._wake,
            amqps_port=amqps_port,
        )
        self._transport = Transport(Transport.SERVER)
        self._connection = Connection()
        self._collector = Collector()
        self._connection.collect(self._collector)
        self._transport.bind(self._connection)
        self._padder = PerformativePadder()
        self._write_lock = anyio.Lock()
        self._ticked = anyio.Event()

    def _wake(self) -> None:
        # Another connection changed this one's links: the tick task writes what that produced.
        self._ticked.set()

    async def run(self) -> None:
        """Serve until either side closes; returns normally whatever the client did."""
        async with self._stream:
            try:
                leftover = await self._handshake()
            except _Closed as exc:
                logger.info("AMQP connection from %s closed: %s", self._peer.remote_address, exc)
                return
            except (*_STREAM_ERRORS, FrameError) as exc:
                logger.info("AMQP connection from %s ended in its handshake: %s", self._peer.remote_address, exc)
                return
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._follow, self._core.events.wait, name="aioiothub emulator AMQP events")
                    tasks.start_soon(
                        self._follow, self._core.queues.feedback_outbox.wait, name="aioiothub emulator AMQP feedback"
                    )
                    tasks.start_soon(
                        self._follow, self._core.file_notifications.wait, name="aioiothub emulator AMQP notifications"
                    )
                    tasks.start_soon(self._tick, name="aioiothub emulator AMQP ticks")
                    if await self._feed(leftover):
                        await self._read()
                    tasks.cancel_scope.cancel()
            except* _STREAM_ERRORS:
                pass
            finally:
                self._nodes.closed()

    # --- the header and SASL ------------------------------------------------------------------

    async def _handshake(self) -> bytes:
        with anyio.move_on_after(_HANDSHAKE_TIMEOUT) as waiting:
            buffer = await self._read_at_least(bytearray(), 8)
            header = bytes(buffer[:8])
            del buffer[:8]
            if header == AMQP_HEADER:
                return AMQP_HEADER + bytes(buffer)
            if header != SASL_HEADER:
                await self._stream.send(SASL_HEADER)
                raise _Closed(f"unsupported protocol header {header!r}")
            await self._stream.send(SASL_HEADER + encode_sasl_mechanisms(_MECHANISMS))
            while (frame := self._sasl_frame(buffer)) is None:
                if len(buffer) > _MAX_SASL_BYTES:
                    raise _Closed("the SASL exchange is too long")
                buffer = await self._read_at_least(buffer, len(buffer) + 1)
            init = parse_sasl_init(frame)
            logger.debug("AMQP SASL %s from %s", init.mechanism, self._peer.remote_address)
            if init.mechanism == "PLAIN" and not self._nodes.sasl_plain(init.initial_response):
                await self._stream.send(encode_sasl_outcome(1))
                raise _Closed("SASL PLAIN with an invalid token")
            await self._stream.send(encode_sasl_outcome(0))
            buffer = await self._read_at_least(buffer, 8)
            if bytes(buffer[:8]) != AMQP_HEADER:
                raise _Closed("no AMQP header after SASL")
            return bytes(buffer)
        if waiting.cancelled_caught:
            raise _Closed(f"no AMQP handshake within {_HANDSHAKE_TIMEOUT:g} s")
        raise AssertionError("unreachable")

    def _sasl_frame(self, buffer: bytearray) -> bytes | None:
        try:
            frame = split_frame(buffer)
        except FrameError as exc:
            raise _Closed(str(exc)) from None
        if frame is None:
            return None
        frame_type, body = frame
        del buffer[: 8 + len(body) if frame_type == 1 else 0]
        if frame_type != 1:
            raise _Closed("expected a SASL frame")
        return body

    async def _read_at_least(self, buffer: bytearray, size: int) -> bytearray:
        while len(buffer) < size:
            buffer += await self._stream.receive()
        return buffer

    # --- the engine ---------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                data = await self._stream.receive()
            except anyio.EndOfStream:
                self._transport.close_tail()
                self._process()
                await self._flush()
                return
            if not await self._feed(data):
                return

    async def _feed(self, data: bytes) -> bool:
        """Push ``data`` into the engine and write its answer; ``False`` once the connection is over."""
        view = memoryview(data)
        while view:
            capacity = self._transport.capacity()
            if capacity <= 0:
                break
            self._transport.push(bytes(view[:capacity]))
            view = view[capacity:]
            self._process()
        if self._nodes.service.unfinished:
            await self._nodes.service.finish()
        self._ticked.set()
        return await self._flush()

    def _process(self) -> None:
        collector = self._collector
        while (event := collector.peek()) is not None:
            self._handle(event)
            collector.pop()

    def _handle(self, event: Event) -> None:
        kind, nodes = event.type, self._nodes
        connection, session, link = event.connection, event.session, event.link
        if kind == Event.CONNECTION_REMOTE_OPEN and connection is not None and _uninitialised(connection):
            connection.container = "aioiothub-emulator"
            connection.open()
        elif kind == Event.SESSION_REMOTE_OPEN and session is not None and _uninitialised(session):
            session.open()
        elif link is None:
            if kind == Event.SESSION_REMOTE_CLOSE and session is not None and _active(session):
                session.close()
            elif kind == Event.CONNECTION_REMOTE_CLOSE and connection is not None and _active(connection):
                connection.close()
        elif kind == Event.LINK_REMOTE_OPEN and _uninitialised(link):
            nodes.attach(link)
        elif kind == Event.LINK_FLOW and link.is_sender:
            nodes.pump()
        elif kind == Event.DELIVERY and link.is_receiver:
            delivery = event.delivery
            if delivery is not None and delivery.readable and not delivery.partial:
                nodes.received(link, delivery)
        elif kind == Event.DELIVERY and event.delivery is not None and event.delivery.updated:
            nodes.updated(link, event.delivery)
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH):
            nodes.detached(link)
            if _active(link):
                link.close()

    async def _flush(self) -> bool:
        """Write all the engine's pending output; ``False`` once it will write no more."""
        async with self._write_lock:
            output = bytearray()
            while (pending := self._transport.pending()) > 0:
                output += self._transport.peek(pending) or b""
                self._transport.pop(pending)
            data = self._padder.feed(bytes(output)) if output else b""
            if data:
                with anyio.fail_after(_WRITE_TIMEOUT):
                    await self._stream.send(data)
            if self._transport.condition is not None:
                logger.info("AMQP connection from %s: %s", self._peer.remote_address, self._transport.condition)
            return self._transport.pending() >= 0 and self._transport.capacity() >= 0

    async def _follow(self, wait: Callable[[], Awaitable[None]]) -> None:
        while True:
            await wait()
            # What is added while a flush waits on a slow reader's socket wakes no one (this task is
            # not waiting then): pump again after each flush that sent something, until one finds none.
            while self._nodes.pump():
                if not await self._flush():
                    return

    async def _tick(self) -> None:
        while True:
            deadline = self._transport.tick(time.monotonic())
            await self._flush()
            if deadline:
                with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
                    await self._ticked.wait()
            else:
                await self._ticked.wait()
            self._ticked = anyio.Event()


def _uninitialised(endpoint: Connection | Session | Link) -> bool:
    return bool(endpoint.state & Endpoint.LOCAL_UNINIT)


def _active(endpoint: Connection | Session | Link) -> bool:
    return bool(endpoint.state & Endpoint.LOCAL_ACTIVE)
