"""One MQTT connection to the emulator, from the first byte to the close: the server loop.

Theory of operation
-------------------
:meth:`MqttConnection.run` owns the connection. It waits for a CONNECT -- at most
:data:`CONNECT_TIMEOUT` seconds and :data:`MAX_BYTES_BEFORE_CONNECT` bytes, so a slow or bloated
opening cannot hold resources for long -- and lets the CONNECT's username pick the handler: the
Device Provisioning Service's (:class:`~aioiothub.emulator.mqtt.dps.DpsHandler`) for a DPS username,
IoT Hub's (:class:`~aioiothub.emulator.mqtt.device.DeviceHandler`) for every other one. The handler
decides on the CONNECT and appends its CONNACK; a refusal is written and the connection ends.

Then the loop, the same for both: receive a chunk, let :class:`MqttServerCodec` turn it into
packets, have the handler handle every packet of the chunk while it collects the answers (PUBACKs,
SUBACKs, twin or DPS responses, queued cloud messages) in one buffer, and write that buffer with a
single ``send``. One write per received chunk rather than per packet is what keeps a telemetry flood
cheap. Valid packets that came before a malformed one -- in the CONNECT's own chunk or any later one
-- are handled first, as a real broker would have, and only then does the connection end.

Deadlines are cancel scopes, not timers or polling: one scope carries the keep-alive deadline
(1.5 x the client's keep-alive, moved forward on every chunk) and the SAS token's expiry, whichever
is sooner; an outer scope lets anything else (a newer connection of the same identity, a disabled
device, :meth:`~aioiothub.emulator.Hub.drop_connection`, the emulator shutting down) end the
connection with :meth:`MqttConnection.close`, which also refuses every later hub-side write at once,
so nothing the hub sends after that goes into a connection on its way out.

Anything the client does wrong -- a malformed packet, a topic it may not use, QoS 2, an oversize
message -- ends only this connection, with the reason logged at INFO on ``aioiothub.emulator``.
Writes from the hub side (desired-property patches, method requests, cloud messages) share a lock
with the connection's own writes, so packets never interleave on the stream.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Callable
from typing import Final, Protocol, cast

import anyio
import anyio.abc

from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.listeners import PeerInfo
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import CONNACK_UNACCEPTABLE_PROTOCOL
from aioiothub.protocol.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    Connect,
    MalformedPacket,
    MqttServerCodec,
    Packet,
    encode_connack,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_BYTES_BEFORE_CONNECT",
    "STREAM_ERRORS",
    "WRITE_TIMEOUT",
    "HandlerFactory",
    "MqttConnection",
    "PacketHandler",
]

logger = logging.getLogger("aioiothub.emulator")

CONNECT_TIMEOUT: Final = 10.0
"""Seconds a new connection may take to send its CONNECT."""

MAX_BYTES_BEFORE_CONNECT: Final = 64 * 1024
"""Bytes a new connection may send before its CONNECT is complete (one with the longest SAS token is
far smaller); beyond that only this connection is closed."""

WRITE_TIMEOUT: Final = 30.0
"""Seconds a write may wait for a client that does not read before the connection is closed."""

STREAM_ERRORS: Final = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError)
"""What a byte stream raises when the peer is gone or the transport broke."""


class PacketHandler(Protocol):
    """The rules one kind of MQTT client is served by (IoT Hub's or DPS's), behind the loop."""

    #: Seconds without a packet before the connection ends (``math.inf``: no keep-alive).
    keepalive: float
    #: When the SAS token expires, on the ``anyio.current_time()`` clock (``math.inf``: never).
    token_deadline: float

    async def open(self, connect: Connect, out: bytearray) -> str | None:
        """Decide on the CONNECT and append the CONNACK (and anything sent with it) to ``out``.

        Returns:
            ``None`` when accepted, else why it was refused (``out`` is written, then the end).
        """
        ...

    async def handle(self, packets: list[Packet], out: bytearray) -> tuple[bool, bool]:
        """Handle received packets in order, appending the answers to ``out``.

        Returns:
            ``(disconnect, acknowledged)``: whether a DISCONNECT ended the batch, and whether ``out``
            holds a PUBACK that :meth:`Hub.delay_pubacks <aioiothub.emulator.Hub.delay_pubacks>` holds back.
        """
        ...

    def ended(self, why: str) -> str:
        """How the log states that the connection ended for ``why``."""
        ...

    def detach(self) -> None:
        """The connection is closing: the hub must stop routing to it (a no-op if it never did)."""
        ...

    def release(self) -> None:
        """The connection has ended: give back what it held."""
        ...

    def label(self) -> str:
        """Who is connected, for the log."""
        ...


#: Picks the handler for a connection from its CONNECT (see :func:`~aioiothub.emulator.mqtt.serve_mqtt`).
HandlerFactory = Callable[["MqttConnection", Connect], PacketHandler]


class MqttConnection:
    """One MQTT connection to the emulator, device or DPS (see the module docstring).

    Args:
        hub: the core of the hub the connection belongs to.
        stream: the connection's byte stream of raw MQTT (TLS or WebSocket already unwrapped).
        peer: who is connected.
        handler_for: picks the handler once the CONNECT is read.
    """

    __slots__ = (
        "_close_reason",
        "_codec",
        "_handler",
        "_handler_for",
        "_hub",
        "_scope",
        "_send_lock",
        "closed",
        "peer",
        "stream",
    )

    def __init__(self, hub: HubCore, stream: anyio.abc.ByteStream, peer: PeerInfo, handler_for: HandlerFactory) -> None:
        self._hub = hub
        self._handler_for = handler_for
        self.stream = stream
        self.peer = peer
        #: Whether the connection is ending: hub-side writes are refused from then on.
        self.closed = False
        self._codec = MqttServerCodec(max_packet_size=DEFAULT_MAX_PACKET_SIZE)
        self._scope = anyio.CancelScope()
        self._send_lock = anyio.Lock(fast_acquire=True)  # no extra loop turn per flush
        self._close_reason: str | None = None
        self._handler: PacketHandler | None = None

    def close(self, reason: str) -> None:
        """End the connection without DISCONNECT (a device's will is published); ``reason`` is logged.

        The hub stops routing to it and hub-side writes are refused from now on; the stream closes
        once :meth:`run` has unwound.
        """
        if self._close_reason is None:
            self._close_reason = reason
        self.closed = True
        if self._handler is not None:
            self._handler.detach()
        self._scope.cancel()

    async def write(self, data: bytes) -> bool:
        """Send packets from the hub side; ``False`` when the connection is gone."""
        if self.closed:
            return False
        try:
            async with self._send_lock:
                return await self._send(data)
        except STREAM_ERRORS as exc:
            self.close(f"write failed ({type(exc).__name__})")
            return False

    # --- the connection's life -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; returns normally whatever the client did."""
        reason = "the connection ended"
        try:
            with self._scope:
                reason = await self._serve()
        except MalformedPacket as exc:
            reason = f"malformed packet: {exc.reason}"
        except ProtocolError as exc:
            reason = f"protocol violation: {exc}"
        except RuleViolation as exc:
            reason = exc.reason
        except anyio.EndOfStream:
            reason = "the client closed the connection without DISCONNECT"
        except STREAM_ERRORS as exc:
            reason = f"connection lost ({type(exc).__name__})"
        except Exception:
            logger.exception("%s: unexpected error; closing the connection", self._label())
            reason = "internal error"
        finally:
            self.closed = True
            if self._close_reason is not None:
                reason = self._close_reason
            if self._handler is not None:
                self._handler.release()
            # A graceful close lets a refusing CONNACK reach the client before the socket goes.
            with contextlib.suppress(*STREAM_ERRORS):
                await self.stream.aclose()
        logger.info("%s: connection closed: %s", self._label(), reason)

    async def _serve(self) -> str:
        connect, rest = await self._receive_connect()
        if connect.protocol_level != 4:
            await self.stream.send(encode_connack(False, CONNACK_UNACCEPTABLE_PROTOCOL))
            return f"refused CONNACK {CONNACK_UNACCEPTABLE_PROTOCOL}: IoT Hub speaks only MQTT 3.1.1"
        self._handler = handler = self._handler_for(self, connect)
        out = bytearray()
        refusal = await handler.open(connect, out)
        if refusal is not None:
            await self.stream.send(bytes(out))
            return refusal
        disconnect, acknowledged = await handler.handle(rest, out)
        await self._flush(out, acknowledged=acknowledged)
        if disconnect:
            return handler.ended("the client sent DISCONNECT")
        return await self._loop(handler)

    async def _receive_connect(self) -> tuple[Connect, list[Packet]]:
        packets: list[Packet] = []
        # Reading no more than is left of the allowance keeps a bloated opening out of memory.
        allowance = MAX_BYTES_BEFORE_CONNECT
        with anyio.move_on_after(CONNECT_TIMEOUT):
            while not packets:
                if not allowance:
                    raise RuleViolation(f"more than {MAX_BYTES_BEFORE_CONNECT} bytes before a complete CONNECT")
                data = await self.stream.receive(allowance)
                allowance -= len(data)
                try:
                    packets = self._codec.feed(data)
                except MalformedPacket as exc:
                    if exc.return_code is not None and not exc.packets_before:
                        await self.stream.send(encode_connack(False, exc.return_code))
                    raise
        if not packets:
            raise RuleViolation(f"no CONNECT within {CONNECT_TIMEOUT:g} s")
        first = packets[0]
        if not isinstance(first, Connect):
            raise RuleViolation(f"first packet is {type(first).__name__}, not CONNECT")
        return first, packets[1:]

    async def _loop(self, handler: PacketHandler) -> str:
        receive = self.stream.receive
        feed = self._codec.feed
        handle = handler.handle
        keepalive = handler.keepalive
        token_deadline = handler.token_deadline
        with anyio.CancelScope(deadline=min(anyio.current_time() + keepalive, token_deadline)) as deadline:
            while True:
                data = await receive()
                try:
                    packets = feed(data)
                except MalformedPacket as exc:
                    # Act on the valid packets that came first, as a real broker would have.
                    out = bytearray()
                    _, acknowledged = await handle(cast("list[Packet]", list(exc.packets_before)), out)
                    if out:
                        await self._flush(out, acknowledged=acknowledged)
                    raise
                if keepalive != math.inf:
                    deadline.deadline = min(anyio.current_time() + keepalive, token_deadline)
                out = bytearray()
                disconnect, acknowledged = await handle(packets, out)
                if out:
                    await self._flush(out, acknowledged=acknowledged)
                if disconnect:
                    return handler.ended("the client sent DISCONNECT")
        if anyio.current_time() >= token_deadline:
            return handler.ended("the SAS token expired")
        return handler.ended(f"no packet within 1.5 x keep-alive ({keepalive:g} s)")

    # --- writing -------------------------------------------------------------------------------

    async def _flush(self, out: bytearray, *, acknowledged: bool) -> None:
        delay = self._hub.puback_delay
        async with self._send_lock:
            if delay and acknowledged:
                await anyio.sleep(delay)
            await self._send(out)

    async def _send(self, data: bytes | bytearray) -> bool:
        with anyio.move_on_after(WRITE_TIMEOUT) as scope:
            await self.stream.send(bytes(data))
        if scope.cancelled_caught:
            self.close(f"the client read nothing for {WRITE_TIMEOUT:g} s")
            return False
        return True

    def _label(self) -> str:
        if self._handler is not None:
            return self._handler.label()
        return f"{self.peer.transport} {self.peer.remote_address}"
