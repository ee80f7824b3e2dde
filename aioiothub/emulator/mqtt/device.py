"""IoT Hub's rules for one device or module MQTT connection (hub role), behind the server loop.

Theory of operation
-------------------
:class:`~aioiothub.emulator.mqtt.connection.MqttConnection` reads the CONNECT and, for a username
that is not a DPS one, hands it to :meth:`DeviceHandler.open`, which asks :meth:`HubCore.admit
<aioiothub.emulator.hub.core.HubCore.admit>` for a decision, checks the will, and on acceptance registers itself
with the hub (it is the hub's :class:`~aioiothub.emulator.hub.Connection`) and appends the CONNACK and
any queued cloud messages. From then on the loop hands it each received chunk's packets:
:meth:`~DeviceHandler.handle` handles them synchronously, in order, appending the answers (PUBACKs,
SUBACKs, twin responses, cloud messages) to the loop's buffer -- no await and no object per packet
beyond the answers themselves, which is what carries a telemetry flood.

The hub reaches the device through :meth:`~DeviceHandler.publish`,
:meth:`~DeviceHandler.deliver_queued` and :meth:`~DeviceHandler.close`; the loop's write lock keeps
those packets from interleaving with the connection's own. When the connection ends,
:meth:`~DeviceHandler.release` unregisters it, makes its in-flight messages deliverable again and
publishes the will unless the device sent DISCONNECT.
"""

from __future__ import annotations

import datetime
import logging
import math
import time

import anyio

from aioiothub.emulator.hub import CloudMessage, Identity, PersistentSubscriptions, RuleViolation
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.values import now_utc
from aioiothub.emulator.mqtt.connection import MqttConnection
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_ACCEPTED,
    CONNACK_NOT_AUTHORIZED,
    MAX_KEEPALIVE,
)
from aioiothub.protocol.limits import MAX_SUBSCRIPTIONS
from aioiothub.protocol.mqtt import (
    Connect,
    Disconnect,
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

__all__ = ["DeviceHandler"]

logger = logging.getLogger("aioiothub.emulator")


class DeviceHandler:
    """One device or module connection: the hub's rules applied to what the loop reads.

    Args:
        hub: the core of the hub the connection belongs to.
        connection: the connection's server loop (its stream, writes and close).
    """

    __slots__ = (
        "_allowed",
        "_cloud_filter",
        "_connection",
        "_disconnected",
        "_granted",
        "_hub",
        "_identity",
        "_inflight",
        "_next_packet_id",
        "_peer",
        "_telemetry_prefix",
        "_will",
        "keepalive",
        "token_deadline",
    )

    def __init__(self, hub: HubCore, connection: MqttConnection) -> None:
        self._hub = hub
        self._connection = connection
        self._peer = connection.peer
        self._disconnected = False
        self._identity: Identity | None = None
        self._granted = PersistentSubscriptions(persistent=False)
        self._allowed: frozenset[str] = frozenset()
        self._cloud_filter = ""
        self._telemetry_prefix = ""
        self._inflight: dict[int, CloudMessage] = {}
        self._next_packet_id = 0
        self.keepalive = math.inf
        self.token_deadline = math.inf
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
        return await self._connection.write(encode_publish(topic, payload, 0))

    async def deliver_queued(self) -> None:
        """Send every queued cloud message not yet delivered on this connection."""
        if not self._connection.closed:
            data = self._cloud_packets()
            if data:
                await self._connection.write(data)

    def close(self, reason: str) -> None:
        """End the connection without DISCONNECT (the will is published); ``reason`` is logged.

        The hub stops routing to it and hub-side writes are refused from now on; the socket closes
        once the loop has unwound.
        """
        self._connection.close(reason)

    # --- what the loop uses (aioiothub.emulator.mqtt.connection.PacketHandler) ----------------

    async def open(self, connect: Connect, out: bytearray) -> str | None:
        """Decide on the CONNECT; on acceptance register with the hub (see the module docstring)."""
        admission = self._hub.admit(connect, self._peer.client_certificate_der, now=time.time())
        identity = admission.identity
        if admission.return_code or identity is None:
            out += encode_connack(False, admission.return_code)
            return f"refused CONNACK {admission.return_code}: {admission.reason}"
        self._prepare(identity)
        if connect.will is not None and not self._valid_will(connect):
            out += encode_connack(False, CONNACK_NOT_AUTHORIZED)
            return f"refused CONNACK {CONNACK_NOT_AUTHORIZED}: will topic {connect.will.topic!r} is not allowed"
        if connect.keepalive:
            self.keepalive = 1.5 * min(connect.keepalive, MAX_KEEPALIVE)
        if admission.token_expiry is not None:
            self.token_deadline = anyio.current_time() + (admission.token_expiry - time.time())
        self._identity = identity
        self._will = connect if connect.will is not None else None
        self._granted, session_present = self._hub.attach(self, clean_session=connect.clean_session)
        out += encode_connack(session_present, CONNACK_ACCEPTED)
        out += self._cloud_packets()
        return None

    async def handle(self, packets: list[Packet], out: bytearray) -> tuple[bool, bool]:
        """Handle received packets in order, appending the answers to ``out`` (see :meth:`_handle`)."""
        return self._handle(packets, out)

    def ended(self, why: str) -> str:
        """How the log states the end: the reason as it is (the label names the identity)."""
        return why

    def detach(self) -> None:
        """The connection is closing: the hub stops routing to it."""
        if self._identity is not None:
            self._hub.detach(self)

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
                        raise RuleViolation(f"PUBLISH to {topic!r} is not allowed for {self.label()}")
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
            logger.info("%s: twin request ignored: not subscribed to %s", self.label(), TWIN_RESPONSE_SUBSCRIPTION)
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
                raise RuleViolation(f"SUBSCRIBE to {topic_filter!r} is not allowed for {self.label()}")
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
        if qos is None or self._connection.closed:
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

    def release(self) -> None:
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
                logger.info("%s: will message dropped: %s", self.label(), exc)
            else:
                hub.telemetry_stored()

    def label(self) -> str:
        """Who is connected, for the log: the identity once admitted, and the peer."""
        peer = f"{self._peer.transport} {self._peer.remote_address}"
        identity = self._identity
        if identity is None:
            return peer
        return f"{identity.label} ({peer})"
