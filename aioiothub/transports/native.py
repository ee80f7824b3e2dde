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

The MQTT client role -- packet ids, the publishes and subscribes waiting for their
acknowledgement, CONNACK and SUBACK, the QoS and acknowledgement rules, the keep-alive arithmetic
-- is :class:`~aioiothub.protocol.mqtt.ClientSession`, which turns requests into bytes and received
bytes into events; this module moves those bytes and keeps the asyncio side (futures, timers,
write batching). Received bytes go straight from the channel into the session and each event is
acted on at once, on the event loop thread:

* a PUBACK comes back as the publish future the session kept under its packet identifier (no
  scan of other messages), and is resolved;
* PUBLISH goes to the ``on_message`` handler; a QoS 1 one is acknowledged only when
  :meth:`NativeConnection.acknowledge` is called, once the application has taken the message;
* SUBACK resolves the waiting :meth:`~NativeConnection.subscribe`; a protocol violation ends the
  connection with a :class:`~aioiothub.ProtocolError` as its cause.

Writes are batched per event-loop turn: the first packet of a turn leaves at once (a lone request
waits for nothing), and every other packet queued in that turn leaves with the others in one TLS
record and one ``send()`` at the start of the next turn. When a burst of PUBACKs wakes a hundred
publishing tasks, their hundred PUBLISHes cost two writes, not a hundred.

Keep-alive: a timer per connection, set to when the session says the keep-alive next needs
looking at, sends PINGREQ when nothing was sent or received for ``keepalive`` seconds; a PINGRESP
must then arrive within ``connect_timeout`` (at most the keep-alive), or the connection is dropped
as dead. Malformed bytes from the server end the
connection with a :class:`~aioiothub.ProtocolError` as the cause of the loss; they never escape
into the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final, Self

import anyio

from aioiothub.exceptions import ConnectError, ConnectionLostError, LossReason
from aioiothub.protocol.connect import WEBSOCKET_PORT
from aioiothub.protocol.mqtt import (
    ConnectionAccepted,
    ConnectionRefused,
    LinkDead,
    PingDue,
    ProtocolViolation,
    Publish,
    SubscribeAcknowledged,
    Will,
    check_publish_qos,
)
from aioiothub.transports.base import (
    Channel,
    ChannelOpener,
    ConnectParameters,
    InboundPublish,
    MessageHandler,
    describe_loss,
    fail_waiters,
)
from aioiothub.transports.options import validate_transport_options
from aioiothub.transports.secure_channel import SecureChannel, Tunnel
from aioiothub.transports.session_connection import SessionConnection

__all__ = ["NativeConnection"]


_log = logging.getLogger("aioiothub.transport")

#: How long leaving waits for DISCONNECT and the TLS close to go out before dropping the socket.
_DISCONNECT_TIMEOUT: Final = 2.0
_KEEPALIVE: Final = LossReason.KEEPALIVE_TIMEOUT


class NativeConnection(SessionConnection):
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
        super().__init__(parameters, on_message)
        # Every future the session keeps for us is one of the loop's own: the receive loop tells an
        # acknowledged publish from an event by this type.
        self._future_type: type[asyncio.Future[Any]] = type(self.lost)
        self._channel: Channel | None = None
        self._connack: asyncio.Future[ConnectionAccepted | ConnectionRefused] | None = None
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._keepalive_timer: asyncio.TimerHandle | None = None
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
        if isinstance(connack, ConnectionRefused):
            self._fail_connect("the hub refused the connection")
            raise connack.error
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

    async def _exchange_connect(self) -> ConnectionAccepted | ConnectionRefused:
        parameters = self._parameters
        will = parameters.will
        self._connack = self._loop.create_future()
        self._queue(
            self._session.send_connect(
                parameters.client_id,
                parameters.username,
                parameters.password,
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

    async def _close(self) -> None:
        channel = self._channel
        assert channel is not None
        if not self.lost.done():
            self._queue(self._session.send_disconnect())
            self._flush()
            channel.close()
        self._mark_lost("the connection was closed", None, LossReason.CLOSED)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_DISCONNECT_TIMEOUT):
            await asyncio.wait((channel.closed,))
        if not channel.closed.done():
            channel.abort()  # a peer that stopped reading does not get to keep the socket open

    # --- the Transport API --------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the returned future completes on PUBACK (at once for QoS 0).

        Raises:
            ConnectionLostError: the connection is already gone (the future fails with it when the
                connection drops before the PUBACK).
            ValueError: the topic or payload is invalid for MQTT, or ``qos`` is not 0 or 1 (IoT Hub
                closes the connection on QoS 2).
        """
        if not self._entered:
            check_publish_qos(qos)
            raise ConnectionLostError("not connected")
        # The session checks the QoS and that the connection is up, and keeps the future of a
        # QoS 1 publish until its PUBACK.
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue(self._session.send_publish(topic, payload, qos, retain, future))
        if qos == 0:
            future.set_result(None)
        return future

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE and return the granted QoS of each filter (0x80 for a refusal).

        Raises:
            ConnectionLostError: the connection is gone, or no SUBACK came within the connect timeout.
        """
        if not self._entered:
            raise ConnectionLostError("not connected")
        future: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        # A SUBACK whose return codes do not match the filters ends the connection (the session
        # reports it as a protocol violation), which fails this future.
        packet_id, packet = self._session.send_subscribe(filters, future)
        self._queue(packet)
        timeout = self._parameters.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                granted = await future
        except TimeoutError:
            raise ConnectionLostError(f"no SUBACK within {timeout} s") from None
        finally:
            self._session.subscribe_abandoned(packet_id)
        return list(granted)

    def acknowledge(self, message: InboundPublish) -> None:
        """Send the PUBACK of a QoS 1 message (nothing for QoS 0, or once the connection is gone)."""
        # The session's rule: after an accepted CONNACK (messages that came with it may be taken
        # before the connect has returned) and before the connection ended.
        packet = self._session.send_puback(message.qos, message.packet_id)
        if packet is not None:
            self._queue(packet)

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
            self._session.last_sent = self._loop.time()
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
            self._session.last_sent = self._loop.time()
            channel.send(data)

    # --- keep-alive -----------------------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        due = self._session.first_keepalive_check(self._loop.time())
        if due is not None:
            self._keepalive_timer = self._loop.call_at(due, self._keepalive_due)

    def _send_ping(self) -> None:
        packet = self._session.send_pingreq(self._loop.time())
        self._reschedule_keepalive()
        self._queue(packet)

    def _reschedule_keepalive(self) -> None:
        due = self._session.next_keepalive_check()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if due is not None:
            self._keepalive_timer = self._loop.call_at(due, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive_timer = None
        if not self.connected:
            return
        action = self._session.check_keepalive(self._loop.time())
        if type(action) is LinkDead:
            self._mark_lost(action.reason, None, _KEEPALIVE)
            if self._channel is not None:
                self._channel.abort()
            return
        self._reschedule_keepalive()
        if type(action) is PingDue:
            self._queue(action.data)

    # --- receiving ----------------------------------------------------------------------------------

    def _data_received(self, data: bytes) -> None:
        events = self._session.receive_data(data, self._loop.time())
        future_type = self._future_type
        lost = self.lost
        remaining = iter(events)
        for event in remaining:
            kind = type(event)
            if kind is future_type:  # the PUBACK of a publish in flight
                if not event.done():  # type: ignore[union-attr]
                    event.set_result(None)  # type: ignore[union-attr]
                # Resolving a future runs none of its callbacks yet, so it cannot have ended the
                # connection: the check below is skipped on the per-message path.
                continue
            if kind is Publish:
                self._handle_publish(event)  # type: ignore[arg-type]
            elif kind is SubscribeAcknowledged:
                waiter: asyncio.Future[Any] = event.token  # type: ignore[union-attr,assignment]
                if not waiter.done():
                    waiter.set_result(event.granted)  # type: ignore[union-attr]
            elif kind is ProtocolViolation:
                self._lose(event.reason, event.error)  # type: ignore[union-attr]
                return
            elif kind is ConnectionAccepted or kind is ConnectionRefused:
                connack = self._connack
                if connack is not None and not connack.done():
                    connack.set_result(event)  # type: ignore[arg-type]
            if lost.done():
                # The session already handed over the futures of PUBACKs later in this read; they
                # fail with the connection, as every other publish still in flight does.
                fail_waiters((event for event in remaining if type(event) is future_type), str(lost.exception()))
                return

    def _handle_publish(self, packet: Publish) -> None:
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
        fail_waiters(self._session.connection_lost(), reason)
