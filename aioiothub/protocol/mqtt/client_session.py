"""The client role of one MQTT 3.1.1 connection, sans-IO: packet ids, what is in flight, keep-alive.

Theory of operation
-------------------
A :class:`ClientSession` is the state of one connection as the client sees it. It does no I/O,
reads no clock and knows nothing of asyncio: the caller (a transport) hands it what arrived and
the time, and writes what it returns. Both transports use it:

* the native transport speaks to it in bytes: :meth:`~ClientSession.send_connect`,
  :meth:`~ClientSession.send_publish`, :meth:`~ClientSession.send_subscribe`,
  :meth:`~ClientSession.send_puback` return the bytes to write, and
  :meth:`~ClientSession.receive_data` takes the bytes read and returns events;
* the aiomqtt transport, where paho frames the packets and picks their ids, speaks to it in
  events: :meth:`~ClientSession.connect_sent`, :meth:`~ClientSession.connack_received`,
  :meth:`~ClientSession.publish_sent`, :meth:`~ClientSession.puback_received`,
  :meth:`~ClientSession.message_received`, :meth:`~ClientSession.may_acknowledge`.

States: *idle* (nothing sent) -> *connecting* (CONNECT sent) -> *connected* (CONNACK 0) or
*refused* (any other CONNACK) -> *closed* (:meth:`~ClientSession.connection_lost`, whatever ended
it). Publishing and subscribing need *connected*; a PUBLISH from the server before the CONNACK, a
second CONNACK, a QoS 2 PUBLISH and a SUBACK whose return codes do not match its filters are
:class:`~.client_events.ProtocolViolation` events, after which the session reports nothing more
from that read: the caller ends the connection.

In flight: each QoS 1 PUBLISH waits under its packet id for its PUBACK, each SUBSCRIBE for its
SUBACK, each with the caller's *token* (whatever the caller wants back: the native transport's
futures). A PUBACK returns the token itself rather than an event wrapping it, so that the
per-message path (publish -> bytes, PUBACK -> token) allocates nothing beyond the codec's packet;
a PUBACK for an id not in flight (a duplicate, or one already abandoned) is ignored. Packet ids
run 1 to 65535 and wrap around, skipping any id still in flight; when all 65535 are in flight,
sending raises :class:`~aioiothub.ConnectionLostError`. :meth:`~ClientSession.connection_lost`
hands back every token still waiting, for the caller to fail.

Manual acknowledgement: the application acknowledges an inbound QoS 1 message when it has taken
it, in whatever order it takes them (IoT Hub completes each message by its packet id). A PUBACK
may go out once the CONNACK accepted the connection -- messages that arrive together with the
CONNACK (a resumed session's queue) may be taken before the connect has returned -- and never
after the connection ended (the hub redelivers the message on the next one). QoS 0 messages get
no PUBACK.

Keep-alive: when nothing was sent or received for ``keepalive`` seconds, a PINGREQ is due; once
one is out, its PINGRESP must come within ``ping_timeout`` (at most the keep-alive) or the link
counts as dead. The caller stamps :attr:`~ClientSession.last_sent` when bytes actually leave
(writes may be batched), asks :meth:`~ClientSession.next_keepalive_check` when to wake, and
:meth:`~ClientSession.check_keepalive` what to do then.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final, Generic, TypeAlias, TypeVar

from aioiothub.exceptions import ConnectionLostError, ProtocolError
from aioiothub.protocol.mqtt.client_events import (
    ConnectionAccepted,
    ConnectionRefused,
    LinkDead,
    PingDue,
    ProtocolViolation,
    SubscribeAcknowledged,
    check_publish_qos,
    connack_refused,
)
from aioiothub.protocol.mqtt.encoders import (
    encode_connect,
    encode_disconnect,
    encode_pingreq,
    encode_publish,
    encode_subscribe,
)
from aioiothub.protocol.mqtt.packets import (
    ClientBoundPacket,
    ConnAck,
    MalformedPacket,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Will,
)
from aioiothub.protocol.mqtt.parsers import MqttClientCodec

__all__ = ["MAX_PACKET_ID", "ClientSession", "SessionEvent", "SessionState"]

T = TypeVar("T")

MAX_PACKET_ID: Final = 0xFFFF
"""The largest MQTT packet identifier; identifiers run from 1 and wrap around after it."""

SessionEvent: TypeAlias = Publish | ConnectionAccepted | ConnectionRefused | SubscribeAcknowledged | ProtocolViolation
"""What :meth:`ClientSession.receive_data` reports besides the tokens of acknowledged publishes."""


class SessionState(enum.Enum):
    """Where one connection stands (see the module docstring)."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    REFUSED = "refused"
    CLOSED = "closed"


_IDLE: Final = SessionState.IDLE
_CONNECTING: Final = SessionState.CONNECTING
_CONNECTED: Final = SessionState.CONNECTED
_REFUSED: Final = SessionState.REFUSED
_CLOSED: Final = SessionState.CLOSED

# A PINGREQ is always the same two bytes; one event object serves every ping.
_PING_DUE: Final = PingDue(encode_pingreq())


class ClientSession(Generic[T]):
    """The client side of one MQTT 3.1.1 connection to IoT Hub (see the module docstring).

    Args:
        keepalive: the CONNECT keep-alive in seconds (0: no keep-alive pings).
        ping_timeout: how long a PINGRESP may take, in seconds; capped at ``keepalive``.
        now: the caller's clock at creation: the link counts as quiet from then on.

    Attributes:
        last_sent: the caller's clock when bytes last left; the caller sets it.
        last_received: the caller's clock when bytes last arrived (:meth:`receive_data` sets it;
            a caller feeding events sets it itself).
    """

    __slots__ = (
        "_codec",
        "_in_flight",
        "_keepalive",
        "_next_packet_id",
        "_ping_deadline",
        "_ping_timeout",
        "_state",
        "_subscribing",
        "last_received",
        "last_sent",
    )

    def __init__(self, *, keepalive: int, ping_timeout: float, now: float) -> None:
        self._codec = MqttClientCodec()
        self._state = _IDLE
        self._in_flight: dict[int, T] = {}
        self._subscribing: dict[int, tuple[int, T]] = {}
        self._next_packet_id = 1
        self._keepalive = keepalive
        self._ping_timeout = min(ping_timeout, keepalive) if keepalive > 0 else ping_timeout
        self._ping_deadline: float | None = None
        self.last_sent = now
        self.last_received = now

    def __repr__(self) -> str:
        return f"<ClientSession {self._state.value}, {len(self._in_flight)} publishes in flight>"

    @property
    def state(self) -> SessionState:
        """Where the connection stands."""
        return self._state

    @property
    def in_flight(self) -> int:
        """How many QoS 1 publishes wait for their PUBACK."""
        return len(self._in_flight)

    # --- connecting -----------------------------------------------------------------------------------

    def send_connect(
        self, client_id: str, username: str, password: str | None, clean_session: bool, will: Will | None
    ) -> bytes:
        """The CONNECT packet to write first."""
        data = encode_connect(client_id, username, password, self._keepalive, clean_session, will)
        self.connect_sent()
        return data

    def connect_sent(self) -> None:
        """CONNECT went out (sent by the caller's own MQTT stack): a CONNACK is awaited."""
        if self._state is not _IDLE:
            raise RuntimeError("CONNECT is sent once per connection")
        self._state = _CONNECTING

    def connack_received(
        self, return_code: int | None, session_present: bool = False
    ) -> ConnectionAccepted | ConnectionRefused:
        """The CONNACK arrived with ``return_code`` (``None``: a refusal whose code is unknown).

        Returns :class:`ConnectionAccepted` for 0, else :class:`ConnectionRefused` carrying the
        library's exception (:class:`~aioiothub.AuthenticationError` for 4 and 5,
        :class:`~aioiothub.DeviceDisabledError` for 3, :class:`~aioiothub.ConnectError` otherwise).
        """
        if return_code == 0:
            self._state = _CONNECTED
            return ConnectionAccepted(session_present)
        self._state = _REFUSED
        return ConnectionRefused(return_code, connack_refused(return_code))

    # --- publishing -----------------------------------------------------------------------------------

    def send_publish(self, topic: str, payload: bytes, qos: int, retain: bool, token: T) -> bytes:
        """The PUBLISH packet for a message; a QoS 1 one waits for its PUBACK with ``token``.

        Raises:
            ValueError: ``qos`` is not 0 or 1, or the topic or payload is invalid for MQTT.
            ConnectionLostError: the connection is not up, or every packet id is in flight.
        """
        if qos == 1:
            if self._state is not _CONNECTED:
                raise ConnectionLostError("not connected")
            # The next id is almost always free: the scan for another is kept off this path.
            packet_id = self._next_packet_id
            in_flight = self._in_flight
            if packet_id in in_flight or packet_id in self._subscribing:
                packet_id = self._free_packet_id(packet_id)
            self._next_packet_id = packet_id % MAX_PACKET_ID + 1
            data = encode_publish(topic, payload, 1, packet_id, retain)
            in_flight[packet_id] = token
            return data
        check_publish_qos(qos)
        if self._state is not _CONNECTED:
            raise ConnectionLostError("not connected")
        return encode_publish(topic, payload, 0, None, retain)

    def publish_sent(self, packet_id: int, token: T) -> None:
        """A QoS 1 PUBLISH went out under ``packet_id`` (chosen by the caller's MQTT stack)."""
        self._in_flight[packet_id] = token

    def puback_received(self, packet_id: int) -> T | None:
        """The token of the publish that PUBACK ``packet_id`` completes; ``None`` for a duplicate."""
        return self._in_flight.pop(packet_id, None)

    # --- subscribing ----------------------------------------------------------------------------------

    def send_subscribe(self, filters: Sequence[tuple[str, int]], token: T) -> tuple[int, bytes]:
        """The packet id and the SUBSCRIBE packet for ``filters``; its SUBACK reports ``token``.

        Raises:
            ValueError: ``filters`` is empty or invalid.
            ConnectionLostError: the connection is not up, or every packet id is in flight.
        """
        if self._state is not _CONNECTED:
            raise ConnectionLostError("not connected")
        packet_id = self._next_packet_id
        if packet_id in self._in_flight or packet_id in self._subscribing:
            packet_id = self._free_packet_id(packet_id)
        self._next_packet_id = packet_id % MAX_PACKET_ID + 1
        data = encode_subscribe(packet_id, filters)
        self._subscribing[packet_id] = (len(filters), token)
        return packet_id, data

    def subscribe_abandoned(self, packet_id: int) -> None:
        """Stop waiting for the SUBACK of ``packet_id`` (timed out or cancelled); a late one is ignored."""
        self._subscribing.pop(packet_id, None)

    def _free_packet_id(self, packet_id: int) -> int:
        in_flight, subscribing = self._in_flight, self._subscribing
        if len(in_flight) + len(subscribing) >= MAX_PACKET_ID:
            raise ConnectionLostError("every MQTT packet identifier is waiting for its acknowledgement")
        while packet_id in in_flight or packet_id in subscribing:
            packet_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    # --- receiving ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[T | SessionEvent]:
        """Take bytes from the server; return, in order, what they mean.

        For each PUBACK of a publish in flight the list holds that publish's token; for each
        inbound PUBLISH, the :class:`~.packets.Publish` packet; otherwise the events of
        :data:`SessionEvent`. A :class:`ProtocolViolation` is always last.
        """
        self.last_received = now
        try:
            packets = self._codec.feed(data)
        except MalformedPacket as exc:
            events = self._handle(exc.packets_before)  # type: ignore[arg-type]
            if not events or type(events[-1]) is not ProtocolViolation:
                events.append(ProtocolViolation(f"the hub sent malformed data: {exc.reason}", exc))
            return events
        return self._handle(packets)

    def _handle(self, packets: Sequence[ClientBoundPacket]) -> list[T | SessionEvent]:
        events: list[T | SessionEvent] = []
        append = events.append
        in_flight = self._in_flight
        for packet in packets:
            kind = type(packet)
            if kind is PubAck:
                token = in_flight.pop(packet.packet_id, None)  # type: ignore[union-attr,arg-type]
                if token is not None:
                    append(token)
            elif kind is Publish:
                violation = self.message_received(packet.topic, packet.qos)  # type: ignore[union-attr]
                append(packet if violation is None else violation)  # type: ignore[arg-type]
                if violation is not None:
                    return events
            elif kind is PingResp:
                self._ping_deadline = None
            elif kind is SubAck:
                subscribing = self._subscribing
                waiting = subscribing.get(packet.packet_id)  # type: ignore[union-attr,arg-type]
                if waiting is not None:
                    granted: tuple[int, ...] = packet.granted  # type: ignore[union-attr]
                    count, token = waiting
                    if len(granted) != count:
                        # Left in flight: the connection ends, and connection_lost hands it back.
                        error = ProtocolError(f"SUBACK has {len(granted)} return codes for {count} filters")
                        append(ProtocolViolation(str(error), error))
                        return events
                    del subscribing[packet.packet_id]  # type: ignore[union-attr,arg-type]
                    append(SubscribeAcknowledged(packet.packet_id, granted, token))  # type: ignore[union-attr,arg-type]
            elif kind is ConnAck:
                if self._state is not _CONNECTING:
                    error = ProtocolError("the hub sent a second CONNACK")
                    append(ProtocolViolation(str(error), error))
                    return events
                outcome = self.connack_received(packet.return_code, packet.session_present)  # type: ignore[union-attr]
                append(outcome)
                if type(outcome) is ConnectionRefused:
                    return events  # nothing after a refusal counts: the connection ends
            # An UNSUBACK is harmless: the client never unsubscribes.
        return events

    def message_received(self, topic: str, qos: int) -> ProtocolViolation | None:
        """Check an inbound PUBLISH against the client's rules; ``None`` when it is acceptable."""
        if qos == 2:
            error = ProtocolError(f"the hub sent a QoS 2 PUBLISH to {topic!r}; it was never asked for one")
            return ProtocolViolation(str(error), error)
        state = self._state
        if state is _CONNECTING or state is _IDLE:
            # A PUBLISH in the same read as the CONNACK (a resumed session's queued messages) is
            # fine: the CONNACK was handled first.
            error = ProtocolError("the hub sent a PUBLISH before CONNACK")
            return ProtocolViolation(str(error), error)
        return None

    # --- acknowledging --------------------------------------------------------------------------------

    def may_acknowledge(self, qos: int) -> bool:
        """Whether an inbound message of ``qos`` gets its PUBACK now (see the module docstring)."""
        return qos == 1 and self._state is _CONNECTED

    def send_puback(self, qos: int, packet_id: int) -> bytes | None:
        """The PUBACK for an inbound message, or ``None`` when none is due (QoS 0, not connected)."""
        if qos == 1 and self._state is _CONNECTED:
            return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))
        return None

    # --- keep-alive -----------------------------------------------------------------------------------

    def first_keepalive_check(self, now: float) -> float | None:
        """When to check the keep-alive first, once connected at ``now`` (``None``: never)."""
        return now + self._keepalive if self._keepalive > 0 else None

    def next_keepalive_check(self) -> float | None:
        """When :meth:`check_keepalive` could next have something to say (``None``: never)."""
        if self._ping_deadline is not None:
            return self._ping_deadline  # while a ping is out, only its answer (or its absence) matters
        if self._keepalive > 0:
            return min(self.last_sent, self.last_received) + self._keepalive
        return None

    def check_keepalive(self, now: float) -> PingDue | LinkDead | None:
        """What the keep-alive asks for at ``now``: a PINGREQ, dropping a dead link, or nothing."""
        if self._state is not _CONNECTED:
            return None
        deadline = self._ping_deadline
        if deadline is not None and now >= deadline:
            return LinkDead(f"keep-alive timeout: no PINGRESP within {self._ping_timeout} s of PINGREQ")
        if deadline is None and now - min(self.last_sent, self.last_received) >= self._keepalive:
            self._start_ping(now)
            return _PING_DUE
        return None

    def send_pingreq(self, now: float) -> bytes:
        """A PINGREQ to send now (a liveness probe); its PINGRESP is then due within the ping timeout."""
        self._start_ping(now)
        return _PING_DUE.data

    def _start_ping(self, now: float) -> None:
        if self._ping_deadline is None:
            self._ping_deadline = now + self._ping_timeout

    # --- the end --------------------------------------------------------------------------------------

    def send_disconnect(self) -> bytes:
        """The DISCONNECT packet for an orderly close."""
        return encode_disconnect()

    def connection_lost(self) -> list[T]:
        """The connection ended: every token still waiting (publishes first, then subscribes)."""
        self._state = _CLOSED
        self._ping_deadline = None
        waiting = [*self._in_flight.values(), *(token for _, token in self._subscribing.values())]
        self._in_flight = {}
        self._subscribing = {}
        return waiting
