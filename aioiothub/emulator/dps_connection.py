"""One device's MQTT connection to the emulated Device Provisioning Service (hub role).

Theory of operation
-------------------
A :class:`~aioiothub.emulator.device_connection.DeviceConnection` reads the CONNECT; when its
username is a DPS one (:meth:`ProvisioningService.claims
<aioiothub.emulator.hub.dps.ProvisioningService.claims>`) it hands the stream, the codec (with
whatever bytes followed the CONNECT) and the packets already decoded to :meth:`DpsConnection.serve`.

:meth:`~DpsConnection.serve` asks the service to admit the registration (CONNACK), then loops as a
device connection does: receive a chunk, decode its packets, handle them in order collecting the
answers in one buffer, write it. DPS keeps no session, so the only state is the one subscription a
DPS client may hold (``$dps/registrations/res/#``). A register or poll request is answered on that
subscription at QoS 0 (a request from a client that has not subscribed is acknowledged and left
unanswered, as a broker would deliver nothing); ``retry-after`` follows ``$rid`` on the topic, the
only order the Python SDK reads.

The connection ends at 1.5 x keep-alive without a packet, at the SAS token's expiry, on DISCONNECT,
and on anything a DPS client may not do -- a topic other than the DPS ones, QoS 2, a malformed
packet or request topic -- which ends only this connection (the reason goes to the log). A body DPS
cannot read gets a 400 answer and the connection stays up.
"""

from __future__ import annotations

import logging
import math
import time

import anyio
import anyio.abc

from aioiothub.emulator.connection_limits import WRITE_TIMEOUT
from aioiothub.emulator.hub.dps import DpsAnswer, ProvisioningService
from aioiothub.emulator.hub.dps_enrollments import AttestedDevice
from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.listeners import PeerInfo
from aioiothub.protocol.connect import CONNACK_ACCEPTED, MAX_KEEPALIVE
from aioiothub.protocol.mqtt import (
    Connect,
    Disconnect,
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
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION, dps_response_topic, parse_dps_request_topic

__all__ = ["DpsConnection"]

logger = logging.getLogger("aioiothub.emulator")


class DpsConnection:
    """A DPS client's connection, after its CONNECT was read.

    Args:
        service: the provisioning service.
        stream: the connection's byte stream.
        peer: who is connected.
        codec: the connection's MQTT decoder, holding any bytes that followed the CONNECT.
    """

    __slots__ = ("_client_version", "_codec", "_device", "_peer", "_service", "_stream", "_subscribed")

    def __init__(
        self, service: ProvisioningService, stream: anyio.abc.ByteStream, peer: PeerInfo, codec: MqttServerCodec
    ) -> None:
        self._service = service
        self._stream = stream
        self._peer = peer
        self._codec = codec
        self._device: AttestedDevice | None = None
        self._client_version: str | None = None
        self._subscribed = False

    async def serve(self, connect: Connect, rest: list[Packet]) -> str:
        """Serve the connection until it ends; return why it ended (for the log).

        Raises:
            RuleViolation, ProtocolError, MalformedPacket: the client broke a rule (the caller
                closes the connection and logs it).
        """
        admission = self._service.admit(connect, self._peer.client_certificate_der, now=time.time())
        if admission.return_code or admission.device is None:
            await self._stream.send(encode_connack(False, admission.return_code))
            return f"DPS refused CONNACK {admission.return_code}: {admission.reason}"
        self._device = admission.device
        self._client_version = admission.client_version
        registration_id = admission.device.registration_id
        keepalive = 1.5 * min(connect.keepalive, MAX_KEEPALIVE) if connect.keepalive else math.inf
        expiry = admission.device.token_expiry
        token_deadline = math.inf if expiry is None else anyio.current_time() + (expiry - time.time())
        out = bytearray(encode_connack(False, CONNACK_ACCEPTED))
        if await self._handle(rest, out):
            await self._send(out)
            return f"DPS registration {registration_id!r}: the client sent DISCONNECT"
        await self._send(out)
        with anyio.CancelScope(deadline=min(anyio.current_time() + keepalive, token_deadline)) as deadline:
            while True:
                packets = self._codec.feed(await self._stream.receive())
                deadline.deadline = min(anyio.current_time() + keepalive, token_deadline)
                out = bytearray()
                disconnect = await self._handle(packets, out)
                if out:
                    await self._send(out)
                if disconnect:
                    return f"DPS registration {registration_id!r}: the client sent DISCONNECT"
        if anyio.current_time() >= token_deadline:
            return f"DPS registration {registration_id!r}: the SAS token expired"
        return f"DPS registration {registration_id!r}: no packet within 1.5 x keep-alive ({keepalive:g} s)"

    async def _handle(self, packets: list[Packet], out: bytearray) -> bool:
        """Handle packets in order, appending the answers to ``out``; ``True`` after a DISCONNECT."""
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
                return True
            elif type(packet) is Connect:
                raise RuleViolation("a second CONNECT on the same connection")
            else:
                raise RuleViolation(f"unexpected {type(packet).__name__} packet on a DPS connection")
        return False

    async def _answer(self, operation: str, operation_id: str | None, body: bytes) -> DpsAnswer:
        device = self._device
        assert device is not None
        if operation == "register":
            return await self._service.register(device, body, self._client_version)
        assert operation_id is not None
        return self._service.poll(device, operation_id)

    async def _send(self, data: bytearray) -> None:
        with anyio.move_on_after(WRITE_TIMEOUT) as scope:
            await self._stream.send(bytes(data))
        if scope.cancelled_caught:
            raise RuleViolation(f"the client read nothing for {WRITE_TIMEOUT:g} s")
