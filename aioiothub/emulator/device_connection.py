"""One device's MQTT connection to the emulated hub: reads packets, applies the hub's rules, writes answers.

Theory of operation
-------------------
:meth:`DeviceConnection.run` owns the connection from the first byte to the close. It waits for a
CONNECT -- at most :data:`CONNECT_TIMEOUT` seconds and :data:`MAX_BYTES_BEFORE_CONNECT` bytes, so a
slow or bloated opening cannot hold resources for long -- asks :meth:`Hub.admit
<aioiothub.emulator.Hub.admit>` for a decision, answers CONNACK and registers itself with the hub.
Then it loops: receive a chunk, let :class:`MqttServerCodec` turn it into packets, handle every
packet synchronously while collecting the answers (PUBACKs, SUBACKs, twin responses, queued cloud
messages) in one buffer, and write that buffer with a single ``send``. One write per received chunk
rather than per packet is what keeps a telemetry flood cheap.

Deadlines are cancel scopes, not timers or polling: one scope carries the keep-alive deadline
(1.5 x the client's keep-alive, moved forward on every chunk) and the SAS token's expiry, whichever
is sooner; an outer scope lets anything else (a newer connection of the same identity, a disabled
device, :meth:`~aioiothub.emulator.Hub.drop_connection`, the emulator shutting down) end the
connection with :meth:`DeviceConnection.close`. The hub takes the connection out of its table before
calling it, and :meth:`~DeviceConnection.close` refuses every later hub-side write at once, so nothing
the hub sends after that goes into a connection that is on its way out.

Anything the device does wrong -- a malformed packet, a topic it may not use, QoS 2, an oversize
message -- ends only this connection, with the reason logged at INFO on ``aioiothub.emulator``.
Writes that come from the hub side (desired-property patches, method requests, cloud messages) share
a lock with the connection's own writes, so packets never interleave on the stream.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import ssl
import time
from typing import Final, cast

import anyio
import anyio.abc

from aioiothub.emulator.connection_limits import CONNECT_TIMEOUT, MAX_BYTES_BEFORE_CONNECT, WRITE_TIMEOUT
from aioiothub.emulator.hub import CloudMessage, Identity, PersistentSubscriptions, RuleViolation
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.values import now_utc
from aioiothub.emulator.listeners import PeerInfo
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_ACCEPTED,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_UNACCEPTABLE_PROTOCOL,
    MAX_KEEPALIVE,
)
from aioiothub.protocol.limits import MAX_SUBSCRIPTIONS
from aioiothub.protocol.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    Connect,
    Disconnect,
    MalformedPacket,
    MqttServerCodec,
    Packet,
    PingReq,
    PubAck,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_connack,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
    encode_unsuback,
)
from aioiothub.protocol.topics import (
    METHOD_RESPONSE_PREFIX,
    TWIN_RESPONSE_SUBSCRIPTION,
    TWIN_TOPIC_PREFIX,
    allowed_subscriptions,
    c2d_subscription,
    input_subscription,
    parse_method_response_topic,
    parse_telemetry_topic,
    parse_twin_request_topic,
    telemetry_topic,
    twin_response_topic,
)

__all__ = ["CONNECT_TIMEOUT", "MAX_BYTES_BEFORE_CONNECT", "WRITE_TIMEOUT", "DeviceConnection"]

logger = logging.getLogger("aioiothub.emulator")

_STREAM_ERRORS: Final = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError)


class DeviceConnection:
    """One device or module connection: the hub's rules applied to an MQTT byte stream.

    Args:
        hub: the hub the connection belongs to.
        stream: the connection's byte stream (TLS or WebSocket already unwrapped).
        peer: who is connected.
    """

    __slots__ = (
        "_allowed",
        "_close_reason",
        "_closed",
        "_cloud_filter",
        "_codec",
        "_disconnected",
        "_granted",
        "_hub",
        "_identity",
        "_inflight",
        "_keepalive",
        "_next_packet_id",
        "_peer",
        "_scope",
        "_send_lock",
        "_stream",
        "_telemetry_prefix",
        "_token_deadline",
        "_will",
    )

    def __init__(self, hub: HubCore, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        self._hub = hub
        self._stream = stream
        self._peer = peer
        self._codec = MqttServerCodec(max_packet_size=DEFAULT_MAX_PACKET_SIZE)
        self._scope = anyio.CancelScope()
        self._send_lock = anyio.Lock(fast_acquire=True)  # no extra loop turn per flush
        self._close_reason: str | None = None
        self._closed = False
        self._disconnected = False
        self._identity: Identity | None = None
        self._granted = PersistentSubscriptions(persistent=False)
        self._allowed: frozenset[str] = frozenset()
        self._cloud_filter = ""
        self._telemetry_prefix = ""
        self._inflight: dict[int, CloudMessage] = {}
        self._next_packet_id = 0
        self._keepalive = math.inf
        self._token_deadline = math.inf
        self._will: Connect | None = None

    # --- what the hub uses (aioiothub.emulator.hub.Connection) -------------------------------

    @property
    def identity(self) -> Identity:
        """The identity this connection authenticated as."""
        assert self._identity is not None
        return self._identity

    def is_subscribed(self, topic_filter: str) -> bool:
        """Whether the connection holds exactly this subscription filter."""
        return topic_filter in self._granted.subscriptions

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Send a QoS 0 PUBLISH from the hub side; ``False`` when the connection is gone."""
        return await self._write(encode_publish(topic, payload, 0))

    async def deliver_queued(self) -> None:
        """Send every queued cloud message not yet delivered on this connection."""
        if not self._closed:
            data = self._cloud_packets()
            if data:
                await self._write(data)

    def close(self, reason: str) -> None:
        """End the connection without DISCONNECT (the will is published); ``reason`` is logged.

        The hub stops routing to it and hub-side writes are refused from now on; the socket closes
        once :meth:`run` has unwound.
        """
        if self._close_reason is None:
            self._close_reason = reason
        self._closed = True
        if self._identity is not None:
            self._hub.detach(self)
        self._scope.cancel()

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
        except _STREAM_ERRORS as exc:
            reason = f"connection lost ({type(exc).__name__})"
        except Exception:
            logger.exception("%s: unexpected error; closing the connection", self._label())
            reason = "internal error"
        finally:
            self._closed = True
            if self._close_reason is not None:
                reason = self._close_reason
            self._release()
            # A graceful close lets a refusing CONNACK reach the client before the socket goes.
            with contextlib.suppress(*_STREAM_ERRORS):
                await self._stream.aclose()
        logger.info("%s: connection closed: %s", self._label(), reason)

    async def _serve(self) -> str:
        connect, rest = await self._receive_connect()
        if connect.protocol_level != 4:
            await self._stream.send(encode_connack(False, CONNACK_UNACCEPTABLE_PROTOCOL))
            return f"refused CONNACK {CONNACK_UNACCEPTABLE_PROTOCOL}: IoT Hub speaks only MQTT 3.1.1"
        if self._hub.dps.claims(connect.username):
            # Imported here: the DPS connection reuses this module's constants.
            from aioiothub.emulator.dps_connection import DpsConnection

            return await DpsConnection(self._hub.dps, self._stream, self._peer, self._codec).serve(connect, rest)
        admission = self._hub.admit(connect, self._peer.client_certificate_der, now=time.time())
        identity = admission.identity
        if admission.return_code or identity is None:
            await self._stream.send(encode_connack(False, admission.return_code))
            return f"refused CONNACK {admission.return_code}: {admission.reason}"
        self._prepare(identity)
        if connect.will is not None and not self._valid_will(connect):
            await self._stream.send(encode_connack(False, CONNACK_NOT_AUTHORIZED))
            return f"refused CONNACK {CONNACK_NOT_AUTHORIZED}: will topic {connect.will.topic!r} is not allowed"
        if connect.keepalive:
            self._keepalive = 1.5 * min(connect.keepalive, MAX_KEEPALIVE)
        if admission.token_expiry is not None:
            self._token_deadline = anyio.current_time() + (admission.token_expiry - time.time())
        self._identity = identity
        self._will = connect if connect.will is not None else None
        self._granted, session_present = self._hub.attach(self, clean_session=connect.clean_session)
        out = bytearray(encode_connack(session_present, CONNACK_ACCEPTED))
        out += self._cloud_packets()
        disconnect, acknowledged = self._handle(rest, out)
        await self._flush(out, acknowledged=acknowledged)
        if disconnect:
            return "the client sent DISCONNECT"
        return await self._loop()

    async def _receive_connect(self) -> tuple[Connect, list[Packet]]:
        packets: list[Packet] = []
        # Reading no more than is left of the allowance keeps a bloated opening out of memory.
        allowance = MAX_BYTES_BEFORE_CONNECT
        with anyio.move_on_after(CONNECT_TIMEOUT):
            while not packets:
                if not allowance:
                    raise RuleViolation(f"more than {MAX_BYTES_BEFORE_CONNECT} bytes before a complete CONNECT")
                data = await self._stream.receive(allowance)
                allowance -= len(data)
                try:
                    packets = self._codec.feed(data)
                except MalformedPacket as exc:
                    if exc.return_code is not None and not exc.packets_before:
                        await self._stream.send(encode_connack(False, exc.return_code))
                    raise
        if not packets:
            raise RuleViolation(f"no CONNECT within {CONNECT_TIMEOUT:g} s")
        first = packets[0]
        if not isinstance(first, Connect):
            raise RuleViolation(f"first packet is {type(first).__name__}, not CONNECT")
        return first, packets[1:]

    def _prepare(self, identity: Identity) -> None:
        device_id, module_id = identity.device_id, identity.module_id
        self._allowed = allowed_subscriptions(device_id, module_id)
        if module_id is None:
            self._cloud_filter = c2d_subscription(device_id)
        else:
            self._cloud_filter = input_subscription(device_id, module_id)
        # Without properties the telemetry topic is exactly the prefix every telemetry topic shares.
        self._telemetry_prefix = telemetry_topic(device_id, module_id)

    def _valid_will(self, connect: Connect) -> bool:
        will = connect.will
        assert will is not None
        if will.qos == 2 or not will.topic.startswith(self._telemetry_prefix):
            return False
        try:
            parse_telemetry_topic(will.topic)
        except ProtocolError:
            return False
        return True

    async def _loop(self) -> str:
        receive = self._stream.receive
        feed = self._codec.feed
        keepalive = self._keepalive
        with anyio.CancelScope(deadline=min(anyio.current_time() + keepalive, self._token_deadline)) as deadline:
            while True:
                data = await receive()
                try:
                    packets = feed(data)
                except MalformedPacket as exc:
                    # Act on the valid packets that came first, as a real broker would have.
                    out = bytearray()
                    _, acknowledged = self._handle(cast("list[Packet]", list(exc.packets_before)), out)
                    if out:
                        await self._flush(out, acknowledged=acknowledged)
                    raise
                if keepalive != math.inf:
                    deadline.deadline = min(anyio.current_time() + keepalive, self._token_deadline)
                out = bytearray()
                disconnect, acknowledged = self._handle(packets, out)
                if out:
                    await self._flush(out, acknowledged=acknowledged)
                if disconnect:
                    return "the client sent DISCONNECT"
        if anyio.current_time() >= self._token_deadline:
            return "the SAS token expired"
        return f"no packet within 1.5 x keep-alive ({keepalive:g} s)"

    # --- packet handling (synchronous; answers go into ``out``) ------------------------------

    def _handle(self, packets: list[Packet], out: bytearray) -> tuple[bool, bool]:
        """Handle received packets in order, appending the answers to ``out``.

        Returns:
            ``(disconnect, acknowledged)``: whether a DISCONNECT ended the batch, and whether ``out``
            holds a PUBACK (which :meth:`Hub.delay_pubacks` may hold back).
        """
        hub = self._hub
        identity = self.identity
        prefix = self._telemetry_prefix
        enqueued: datetime.datetime | None = None
        stored = False
        acknowledged = False
        try:
            for packet in packets:
                if type(packet) is Publish:
                    topic = packet.topic
                    if packet.qos == 2:
                        raise RuleViolation(f"QoS 2 PUBLISH to {topic!r} (IoT Hub supports QoS 0 and 1)")
                    if topic.startswith(prefix):
                        if enqueued is None:
                            enqueued = now_utc()
                        hub.store_telemetry(
                            identity, topic, packet.payload, retain=packet.retain, enqueued_time=enqueued
                        )
                        stored = True
                        if packet.packet_id is not None:
                            out += encode_puback(packet.packet_id)
                            acknowledged = True
                        continue
                    if packet.packet_id is not None:
                        out += encode_puback(packet.packet_id)
                        acknowledged = True
                    if topic.startswith(TWIN_TOPIC_PREFIX):
                        self._twin_request(packet, out)
                    elif topic.startswith(METHOD_RESPONSE_PREFIX):
                        response = parse_method_response_topic(topic)
                        hub.complete_method(identity, response.request_id, response.status, packet.payload)
                    else:
                        raise RuleViolation(f"PUBLISH to {topic!r} is not allowed for {self._label()}")
                elif type(packet) is PubAck:
                    message = self._inflight.pop(packet.packet_id, None)
                    if message is not None:
                        hub.complete(identity, message)
                elif type(packet) is Subscribe:
                    self._subscribe(packet, out)
                elif type(packet) is Unsubscribe:
                    for topic_filter in packet.filters:
                        self._granted.subscriptions.pop(topic_filter, None)
                    out += encode_unsuback(packet.packet_id)
                    hub.subscriptions_changed()
                elif type(packet) is PingReq:
                    out += encode_pingresp()
                elif type(packet) is Disconnect:
                    self._disconnected = True
                    return True, acknowledged
                elif type(packet) is Connect:
                    raise RuleViolation("a second CONNECT on the same connection")
                else:
                    raise RuleViolation(f"unexpected {type(packet).__name__} packet")
        finally:
            if stored:
                hub.telemetry_stored()
        return False, acknowledged

    def _twin_request(self, packet: Publish, out: bytearray) -> None:
        request = parse_twin_request_topic(packet.topic)
        if TWIN_RESPONSE_SUBSCRIPTION not in self._granted.subscriptions:
            # IoT Hub answers twin requests only on a connection subscribed to the responses.
            logger.info("%s: twin request ignored: not subscribed to %s", self._label(), TWIN_RESPONSE_SUBSCRIPTION)
            return
        answer = self._hub.handle_twin_request(self.identity, request, packet.payload)
        if answer is not None:
            status, body, version = answer
            out += encode_publish(twin_response_topic(status, request.request_id, version), body, 0)

    def _subscribe(self, packet: Subscribe, out: bytearray) -> None:
        if self._hub.subscribe_lost():
            return  # fault injection: as if the SUBSCRIBE never arrived
        subscriptions = self._granted.subscriptions
        granted: list[int] = []
        for topic_filter, qos in packet.filters:
            if topic_filter not in self._allowed:
                raise RuleViolation(f"SUBSCRIBE to {topic_filter!r} is not allowed for {self._label()}")
            # IoT Hub does not do QoS 2: it grants QoS 1 instead.
            subscriptions[topic_filter] = granted_qos = min(qos, 1)
            granted.append(granted_qos)
        if len(subscriptions) > MAX_SUBSCRIPTIONS:
            raise RuleViolation(f"more than {MAX_SUBSCRIPTIONS} subscriptions")
        out += encode_suback(packet.packet_id, granted)
        self._hub.subscriptions_changed()
        if any(topic_filter == self._cloud_filter for topic_filter, _ in packet.filters):
            out += self._cloud_packets()

    def _cloud_packets(self) -> bytes:
        """PUBLISH packets for the queued cloud messages not yet delivered on this connection."""
        qos = self._granted.subscriptions.get(self._cloud_filter)
        if qos is None or self._closed:
            return b""
        hub = self._hub
        parts: list[bytes] = []
        for message in hub.undelivered(self):
            if qos:
                packet_id = self._allocate_packet_id()
                self._inflight[packet_id] = message
                parts.append(encode_publish(message.topic, message.body, 1, packet_id, dup=message.delivery_count > 0))
            else:
                # A QoS 0 subscription cannot acknowledge: the message is complete once sent.
                parts.append(encode_publish(message.topic, message.body, 0))
                hub.complete(self.identity, message)
            message.delivery_count += 1
            message.delivered_on = self
        return b"".join(parts)

    def _allocate_packet_id(self) -> int:
        # At most 50 messages are in flight, so a free id is always found quickly.
        while True:
            self._next_packet_id = self._next_packet_id % 0xFFFF + 1
            if self._next_packet_id not in self._inflight:
                return self._next_packet_id

    # --- writing and closing ---------------------------------------------------------------------

    async def _flush(self, out: bytearray, *, acknowledged: bool) -> None:
        delay = self._hub.puback_delay
        async with self._send_lock:
            if delay and acknowledged:
                await anyio.sleep(delay)
            await self._send(out)

    async def _write(self, data: bytes) -> bool:
        if self._closed:
            return False
        try:
            async with self._send_lock:
                return await self._send(data)
        except _STREAM_ERRORS as exc:
            self.close(f"write failed ({type(exc).__name__})")
            return False

    async def _send(self, data: bytes | bytearray) -> bool:
        with anyio.move_on_after(WRITE_TIMEOUT) as scope:
            await self._stream.send(bytes(data))
        if scope.cancelled_caught:
            self.close(f"the client read nothing for {WRITE_TIMEOUT:g} s")
            return False
        return True

    def _release(self) -> None:
        """Unregister from the hub, make in-flight messages deliverable again, publish the will."""
        identity = self._identity
        if identity is None:
            return
        hub = self._hub
        hub.detach(self)
        for message in self._inflight.values():
            if message.delivered_on is self:
                message.delivered_on = None
        self._inflight.clear()
        will = self._will.will if self._will is not None else None
        if will is not None and not self._disconnected:
            try:
                enqueued = now_utc()
                hub.store_telemetry(
                    identity, will.topic, will.payload, retain=will.retain, enqueued_time=enqueued, will=True
                )
            except (RuleViolation, ProtocolError) as exc:
                logger.info("%s: will message dropped: %s", self._label(), exc)
            else:
                hub.telemetry_stored()

    def _label(self) -> str:
        peer = f"{self._peer.transport} {self._peer.remote_address}"
        identity = self._identity
        if identity is None:
            return peer
        return f"{identity.label} ({peer})"
