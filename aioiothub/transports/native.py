"""The native transport: MQTT 3.1.1 spoken by our own codec over one asyncio connection, no threads.

Theory of operation
-------------------
A :class:`NativeConnection` is one connection to the hub, behind the
:class:`~aioiothub.transports.base.Transport` seam. Under it sits a
:class:`~aioiothub.transports.secure_channel.SecureChannel` (TCP, an optional HTTP CONNECT tunnel,
TLS through ``ssl.MemoryBIO``, optional WebSocket framing); above it, the session.

Entering connects: ``loop.create_connection`` (host names are resolved by the loop's
``getaddrinfo``, off the event loop), the channel's handshakes, then CONNECT and CONNACK, all
within ``connect_timeout``. Cancelling at any point aborts the socket: nothing is left behind.

Received bytes go straight from the channel into :class:`~aioiothub.protocol.mqtt.MqttClientCodec`
and each packet is acted on at once, on the event loop thread:

* PUBACK resolves the publish future kept under its packet identifier (no scan of other messages);
* PUBLISH goes to the ``on_message`` handler; a QoS 1 one is acknowledged only when
  :meth:`NativeConnection.acknowledge` is called, once the application has taken the message;
* SUBACK resolves the waiting :meth:`~NativeConnection.subscribe`; PINGRESP clears the ping deadline.

Writes are batched per event-loop turn: the first packet of a turn leaves at once (a lone request
waits for nothing), and every other packet queued in that turn leaves with the others in one TLS
record and one ``send()`` at the start of the next turn. When a burst of PUBACKs wakes a hundred
publishing tasks, their hundred PUBLISHes cost two writes, not a hundred.

Keep-alive: a timer per connection sends PINGREQ when nothing was sent or received for
``keepalive`` seconds; a PINGRESP must then arrive within ``connect_timeout`` (at most the
keep-alive), or the connection is dropped as dead. Malformed bytes from the server end the
connection with a :class:`~aioiothub.ProtocolError` as the cause of the loss; they never escape
into the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Self

import anyio

from aioiothub.exceptions import ConnectError, ConnectionLostError, LossReason, ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_ACCEPTED,
    WEBSOCKET_PORT,
)
from aioiothub.protocol.mqtt import (
    ConnAck,
    MalformedPacket,
    MqttClientCodec,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    UnsubAck,
    Will,
    encode_connect,
    encode_disconnect,
    encode_pingreq,
    encode_publish,
    encode_subscribe,
)
from aioiothub.transports.base import (
    Channel,
    ChannelOpener,
    ConnectParameters,
    InboundPublish,
    MessageHandler,
    connack_refused,
    describe_loss,
    fail_waiters,
)
from aioiothub.transports.options import validate_transport_options
from aioiothub.transports.secure_channel import SecureChannel, Tunnel

__all__ = ["NativeConnection"]


_log = logging.getLogger("aioiothub.transport")

#: How long leaving waits for DISCONNECT and the TLS close to go out before dropping the socket.
_DISCONNECT_TIMEOUT: Final = 2.0
_MAX_PACKET_ID: Final = 0xFFFF
_KEEPALIVE: Final = LossReason.KEEPALIVE_TIMEOUT


def _puback(packet_id: int) -> bytes:
    return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))


class NativeConnection:
    """One MQTT 3.1.1 connection to IoT Hub, implemented on asyncio and :mod:`aioiothub.protocol.mqtt`.

    Args:
        parameters: where and how to connect.
        on_message: called on the event loop thread for each inbound PUBLISH. It must not raise;
            QoS 1 messages stay unacknowledged until :meth:`acknowledge` is called.
        open_channel: builds the channel the bytes go through instead of a TLS connection to
            ``parameters.host`` (the in-memory pipe of :class:`aioiothub.testing.MemoryNetwork`).

    Raises:
        ValueError: ``parameters`` asks for something this transport cannot do (a SOCKS proxy).
    """

    def __init__(
        self,
        parameters: ConnectParameters,
        on_message: MessageHandler,
        *,
        open_channel: ChannelOpener | None = None,
    ) -> None:
        # Clients check this when they are built; a transport built directly is checked here.
        validate_transport_options("native", proxy=parameters.proxy, websockets=parameters.websockets)
        self._open_other_channel = open_channel
        self._parameters = parameters
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        """Completes (with :class:`ConnectionLostError`) when the connection ends for any reason."""
        self._codec = MqttClientCodec()
        self._channel: Channel | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subscribing: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._connack: asyncio.Future[ConnAck] | None = None
        self._next_packet_id = 1
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        now = self._loop.time()
        self._last_received = now
        self._last_sent = now
        self._ping_deadline: float | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._entered = False
        self._used = False

    def __repr__(self) -> str:
        parameters = self._parameters
        state = "connected" if self.connected else "not connected"
        return f"<NativeConnection {parameters.client_id!r} to {parameters.host}:{parameters.port} {state}>"

    # --- lifetime -----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._used:
            raise RuntimeError("a transport is entered at most once")
        self._used = True
        parameters = self._parameters
        try:
            async with asyncio.timeout(parameters.connect_timeout):
                await self._open_channel()
                connack = await self._exchange_connect()
        except TimeoutError:
            self._fail_connect("connecting timed out")
            raise ConnectError(
                f"could not connect to {parameters.host}:{parameters.port} within {parameters.connect_timeout} s"
            ) from None
        except ConnectError as exc:
            self._fail_connect(str(exc))
            raise
        except OSError as exc:
            self._fail_connect(str(exc))
            raise ConnectError(f"could not connect to {parameters.host}:{parameters.port}: {exc}") from None
        except BaseException:
            self._fail_connect("connecting was interrupted")
            raise
        if connack.return_code != CONNACK_ACCEPTED:
            self._fail_connect("the hub refused the connection")
            raise connack_refused(connack.return_code)
        self._entered = True
        self._arm_keepalive()
        return self

    async def _open_channel(self) -> None:
        if self._open_other_channel is not None:
            channel = self._channel = self._open_other_channel(self._data_received, self._channel_lost)
            await channel.ready
            return
        parameters = self._parameters
        proxy = parameters.proxy
        tunnel = None
        if proxy is not None:
            tunnel = Tunnel(f"{parameters.host}:{parameters.port}", proxy.username, proxy.password)
        websocket_host = None
        if parameters.websockets:
            port = parameters.port
            websocket_host = parameters.host if port == WEBSOCKET_PORT else f"{parameters.host}:{port}"
        channel = SecureChannel(
            ssl_context=parameters.ssl_context,
            server_hostname=parameters.host,
            receive=self._data_received,
            on_lost=self._channel_lost,
            tunnel=tunnel,
            websocket_host=websocket_host,
        )
        self._channel = channel
        host, port = (proxy.address, proxy.port) if proxy is not None else (parameters.host, parameters.port)
        # create_connection resolves host names with getaddrinfo in the loop's executor, so a slow
        # resolver never blocks the loop; on cancellation it closes the socket it was opening.
        await self._loop.create_connection(lambda: channel, host, port)
        await channel.ready

    async def _exchange_connect(self) -> ConnAck:
        parameters = self._parameters
        will = parameters.will
        self._connack = self._loop.create_future()
        self._queue(
            encode_connect(
                parameters.client_id,
                parameters.username,
                parameters.password,
                parameters.keepalive,
                parameters.clean_session,
                Will(will.topic, will.payload, will.qos, will.retain) if will is not None else None,
            )
        )
        # Waiting on lost as well: a connection closed before CONNACK ends the wait at once.
        await asyncio.wait((self._connack, self.lost), return_when=asyncio.FIRST_COMPLETED)
        if not self._connack.done():
            exc = self.lost.exception()
            raise ConnectError(f"the connection to {parameters.host} ended before CONNACK: {exc}") from (
                exc.__cause__ if exc is not None else None
            )
        return self._connack.result()

    def _fail_connect(self, reason: str) -> None:
        self._mark_lost(reason)
        if self._channel is not None:
            self._channel.abort()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._entered:
            return
        self._entered = False
        channel = self._channel
        assert channel is not None
        if not self.lost.done():
            self._queue(encode_disconnect())
            self._flush()
            channel.close()
        self._mark_lost("the connection was closed", None, LossReason.CLOSED)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_DISCONNECT_TIMEOUT):
            await asyncio.wait((channel.closed,))
        if not channel.closed.done():
            channel.abort()  # a peer that stopped reading does not get to keep the socket open

    # --- the Transport API --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is up (entered, and not lost)."""
        return self._entered and not self.lost.done()

    @property
    def last_received(self) -> float:
        """``loop.time()`` when the last bytes arrived from the hub."""
        return self._last_received

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the returned future completes on PUBACK (at once for QoS 0).

        Raises:
            ConnectionLostError: the connection is already gone (the future fails with it when the
                connection drops before the PUBACK).
            ValueError: the topic or payload is invalid for MQTT, or ``qos`` is not 0 or 1 (IoT Hub
                closes the connection on QoS 2).
        """
        if qos != 0 and qos != 1:
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if not self._entered or self.lost.done():
            raise ConnectionLostError("not connected")
        future = self._loop.create_future()
        if qos == 0:
            self._queue(encode_publish(topic, payload, 0, None, retain))
            future.set_result(None)
            return future
        packet_id = self._allocate_packet_id()
        self._queue(encode_publish(topic, payload, qos, packet_id, retain))
        self._pending[packet_id] = future
        return future

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE and return the granted QoS of each filter (0x80 for a refusal).

        Raises:
            ConnectionLostError: the connection is gone, or no SUBACK came within the connect timeout.
        """
        if not self._entered or self.lost.done():
            raise ConnectionLostError("not connected")
        packet_id = self._allocate_packet_id()
        packet = encode_subscribe(packet_id, filters)
        future: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self._subscribing[packet_id] = future
        self._queue(packet)
        timeout = self._parameters.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                granted = await future
        except TimeoutError:
            raise ConnectionLostError(f"no SUBACK within {timeout} s") from None
        finally:
            self._subscribing.pop(packet_id, None)
        if len(granted) != len(filters):
            error = ProtocolError(f"SUBACK has {len(granted)} return codes for {len(filters)} filters")
            self._lose(str(error), error)
            raise ConnectionLostError(str(error)) from error
        return list(granted)

    def acknowledge(self, message: InboundPublish) -> None:
        """Send the PUBACK of a QoS 1 message (nothing for QoS 0, or once the connection is gone)."""
        # Messages that came with the CONNACK (a resumed session's queue) may be taken before the
        # connect has returned: an accepted CONNACK is enough.
        if message.qos == 1 and not self.lost.done() and self._connack is not None and self._connack.done():
            self._queue(_puback(message.packet_id))

    def ping(self) -> None:
        """Send a PINGREQ now; the connection is dropped when no PINGRESP follows in time."""
        if self.connected:
            self._send_ping()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without DISCONNECT (the session judged it dead: no answer in time)."""
        self._mark_lost(reason, None, _KEEPALIVE)
        if self._channel is not None:
            self._channel.abort()

    # --- sending --------------------------------------------------------------------------------------

    def _allocate_packet_id(self) -> int:
        packet_id = self._next_packet_id
        pending, subscribing = self._pending, self._subscribing
        if packet_id in pending or packet_id in subscribing:
            if len(pending) + len(subscribing) >= _MAX_PACKET_ID:
                raise ConnectionLostError("every MQTT packet identifier is waiting for its acknowledgement")
            while packet_id in pending or packet_id in subscribing:
                packet_id = packet_id % _MAX_PACKET_ID + 1
        self._next_packet_id = packet_id % _MAX_PACKET_ID + 1
        return packet_id

    def _queue(self, packet: bytes) -> None:
        if self._flush_scheduled:
            self._outbox.append(packet)
            return
        # The first packet of an event-loop turn leaves at once (a lone request waits for nothing);
        # the ones queued after it in the same turn leave together at the start of the next.
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)
        channel = self._channel
        if channel is not None:
            self._last_sent = self._loop.time()
            channel.send(packet)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox = self._outbox
        if not outbox:
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        channel = self._channel
        if channel is not None:
            self._last_sent = self._loop.time()
            channel.send(data)

    # --- keep-alive -----------------------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        keepalive = self._parameters.keepalive
        if keepalive > 0:
            self._keepalive_timer = self._loop.call_at(self._loop.time() + keepalive, self._keepalive_due)

    def _send_ping(self) -> None:
        if self._ping_deadline is None:
            wait = self._parameters.connect_timeout
            if self._parameters.keepalive > 0:
                wait = min(wait, self._parameters.keepalive)
            self._ping_deadline = self._loop.time() + wait
            self._reschedule_keepalive()
        self._queue(encode_pingreq())

    def _reschedule_keepalive(self) -> None:
        keepalive = self._parameters.keepalive
        if self._ping_deadline is not None:
            due = self._ping_deadline  # while a ping is out, only its answer (or its absence) matters
        elif keepalive > 0:
            due = min(self._last_sent, self._last_received) + keepalive
        else:
            due = float("inf")
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if due != float("inf"):
            self._keepalive_timer = self._loop.call_at(due, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive_timer = None
        if not self.connected:
            return
        now = self._loop.time()
        deadline = self._ping_deadline
        if deadline is not None and now >= deadline:
            waited = self._parameters.connect_timeout
            if self._parameters.keepalive > 0:
                waited = min(waited, self._parameters.keepalive)
            self._mark_lost(f"keep-alive timeout: no PINGRESP within {waited} s of PINGREQ", None, _KEEPALIVE)
            if self._channel is not None:
                self._channel.abort()
            return
        if deadline is None and now - min(self._last_sent, self._last_received) >= self._parameters.keepalive:
            self._send_ping()
            return
        self._reschedule_keepalive()

    # --- receiving ----------------------------------------------------------------------------------

    def _data_received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        try:
            packets = self._codec.feed(data)
        except MalformedPacket as exc:
            self._handle_packets(exc.packets_before)
            self._lose(f"the hub sent malformed data: {exc.reason}", exc)
            return
        self._handle_packets(packets)

    def _handle_packets(self, packets: Sequence[object]) -> None:
        pending = self._pending
        for packet in packets:
            kind = type(packet)
            if kind is PubAck:
                future = pending.pop(packet.packet_id, None)  # type: ignore[attr-defined]
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind is Publish:
                self._handle_publish(packet)  # type: ignore[arg-type]
            elif kind is PingResp:
                self._ping_deadline = None
            elif kind is SubAck:
                waiter = self._subscribing.get(packet.packet_id)  # type: ignore[attr-defined]
                if waiter is not None and not waiter.done():
                    waiter.set_result(packet.granted)  # type: ignore[attr-defined]
            elif kind is ConnAck:
                connack = self._connack
                if connack is None or connack.done() or self._entered:
                    error = ProtocolError("the hub sent a second CONNACK")
                    self._lose(str(error), error)
                    return
                connack.set_result(packet)  # type: ignore[arg-type]
            elif kind is UnsubAck:
                pass  # this transport never unsubscribes; a stray UNSUBACK is harmless
            if self.lost.done():
                return

    def _handle_publish(self, packet: Publish) -> None:
        if packet.qos == 2:
            error = ProtocolError(f"the hub sent a QoS 2 PUBLISH to {packet.topic!r}; it was never asked for one")
            self._lose(str(error), error)
            return
        connack = self._connack
        if connack is None or not connack.done():
            # A PUBLISH in the same read as the CONNACK (a resumed session's queued messages) is
            # fine: the CONNACK was handled first.
            error = ProtocolError("the hub sent a PUBLISH before CONNACK")
            self._lose(str(error), error)
            return
        message = InboundPublish(packet.topic, packet.payload, packet.qos, packet.packet_id or 0)
        try:
            self._on_message(message)
        except Exception:
            _log.exception("message handler failed for topic %r", packet.topic)

    # --- the end ------------------------------------------------------------------------------------

    def _channel_lost(self, error: BaseException | None) -> None:
        loss, reason = describe_loss(error)
        self._mark_lost(reason, error, loss)

    def _lose(self, reason: str, cause: BaseException) -> None:
        self._mark_lost(reason, cause, describe_loss(cause)[0])
        if self._channel is not None:
            self._channel.abort()

    def _mark_lost(self, reason: str, cause: BaseException | None = None, loss: LossReason | None = None) -> None:
        fail_waiters((self.lost,), reason, cause, loss=loss)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        fail_waiters((*pending.values(), *self._subscribing.values()), reason)
