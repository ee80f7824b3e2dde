"""The Device Provisioning Service's rules for one MQTT connection, behind the server loop.

Theory of operation
-------------------
:class:`~aioiothub.emulator.mqtt.connection.MqttConnection` reads the CONNECT; when its username is
a DPS one (:meth:`ProvisioningService.claims
<aioiothub.emulator.hub.dps.ProvisioningService.claims>`) it hands it to :meth:`DpsHandler.open`,
which asks the service to admit the registration and appends the CONNACK. The loop then serves the
connection exactly as it serves a device's -- the same deadlines, the same handling of packets that
came with the CONNECT or before a malformed one -- and hands each chunk's packets to
:meth:`~DpsHandler.handle`.

DPS keeps no session, so the only state is the one subscription a DPS client may hold
(``$dps/registrations/res/#``). A register or poll request is answered on that subscription at
QoS 0 (a request from a client that has not subscribed is acknowledged and left unanswered, as a
broker would deliver nothing); ``retry-after`` follows ``$rid`` on the topic, the only order the
Python SDK reads. Anything a DPS client may not do -- a topic other than the DPS ones, QoS 2, a
malformed request topic -- ends only this connection; a body DPS cannot read gets a 400 answer and
the connection stays up.
"""

from __future__ import annotations

import logging
import math
import time

import anyio

from aioiothub.emulator.hub.dps import DpsAnswer, ProvisioningService
from aioiothub.emulator.hub.dps_enrollments import AttestedDevice
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.mqtt.connection import MqttConnection
from aioiothub.protocol.connect import CONNACK_ACCEPTED, MAX_KEEPALIVE
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
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION, dps_response_topic, parse_dps_request_topic

__all__ = ["DpsHandler"]

logger = logging.getLogger("aioiothub.emulator")


class DpsHandler:
    """A DPS client's connection: the provisioning service's rules applied to what the loop reads.

    Args:
        service: the provisioning service.
        connection: the connection's server loop.
    """

    __slots__ = ("_client_version", "_device", "_peer", "_service", "_subscribed", "keepalive", "token_deadline")

    def __init__(self, service: ProvisioningService, connection: MqttConnection) -> None:
        self._service = service
        self._peer = connection.peer
        self._device: AttestedDevice | None = None
        self._client_version: str | None = None
        self._subscribed = False
        self.keepalive = math.inf
        self.token_deadline = math.inf

    async def open(self, connect: Connect, out: bytearray) -> str | None:
        """Admit the registration (or not) and append the CONNACK."""
        admission = self._service.admit(connect, self._peer.client_certificate_der, now=time.time())
        if admission.return_code or admission.device is None:
            out += encode_connack(False, admission.return_code)
            return f"DPS refused CONNACK {admission.return_code}: {admission.reason}"
        self._device = admission.device
        self._client_version = admission.client_version
        if connect.keepalive:
            self.keepalive = 1.5 * min(connect.keepalive, MAX_KEEPALIVE)
        expiry = admission.device.token_expiry
        if expiry is not None:
            self.token_deadline = anyio.current_time() + (expiry - time.time())
        out += encode_connack(False, CONNACK_ACCEPTED)
        return None

    async def handle(self, packets: list[Packet], out: bytearray) -> tuple[bool, bool]:
        """Handle packets in order, appending the answers to ``out``.

        Returns:
            ``(disconnect, False)``: DPS's PUBACKs are never held back.
        """
        for packet in packets:
            if type(packet) is Publish:
                if packet.qos == 2:
                    raise RuleViolation(f"QoS 2 PUBLISH to {packet.topic!r} (DPS supports QoS 0 and 1)")
                request = parse_dps_request_topic(packet.topic)
                if packet.packet_id is not None:
                    out += encode_puback(packet.packet_id)
                if not self._subscribed:
                    logger.info("DPS: %r left unanswered: not subscribed to the responses", packet.topic)
                    continue
                answer = await self._answer(request.operation, request.operation_id, packet.payload)
                topic = dps_response_topic(answer.status, request.request_id, answer.retry_after)
                out += encode_publish(topic, answer.body, 0)
            elif type(packet) is Subscribe:
                granted = []
                for topic_filter, qos in packet.filters:
                    if topic_filter != DPS_RESPONSE_SUBSCRIPTION:
                        raise RuleViolation(f"SUBSCRIBE to {topic_filter!r} is not allowed on a DPS connection")
                    granted.append(min(qos, 1))
                self._subscribed = True
                out += encode_suback(packet.packet_id, granted)
            elif type(packet) is Unsubscribe:
                if DPS_RESPONSE_SUBSCRIPTION in packet.filters:
                    self._subscribed = False
                out += encode_unsuback(packet.packet_id)
            elif type(packet) is PingReq:
                out += encode_pingresp()
            elif type(packet) is PubAck:
                continue  # answers go out at QoS 0; nothing waits for an acknowledgement
            elif type(packet) is Disconnect:
                return True, False
            elif type(packet) is Connect:
                raise RuleViolation("a second CONNECT on the same connection")
            else:
                raise RuleViolation(f"unexpected {type(packet).__name__} packet on a DPS connection")
        return False, False

    def ended(self, why: str) -> str:
        """How the log states the end: prefixed with the registration (the label is the peer's)."""
        assert self._device is not None
        return f"DPS registration {self._device.registration_id!r}: {why}"

    def detach(self) -> None:
        """Nothing to do: the hub does not route to DPS connections."""

    def release(self) -> None:
        """Nothing to give back: DPS keeps no session."""

    def label(self) -> str:
        """Who is connected, for the log: the peer."""
        return f"{self._peer.transport} {self._peer.remote_address}"

    async def _answer(self, operation: str, operation_id: str | None, body: bytes) -> DpsAnswer:
        device = self._device
        assert device is not None
        if operation == "register":
            return await self._service.register(device, body, self._client_version)
        assert operation_id is not None
        return self._service.poll(device, operation_id)
