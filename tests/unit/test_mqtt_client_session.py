"""The client-role MQTT session state machine, with exact vectors: bytes in, events and bytes out.

The byte strings are written by hand from the MQTT 3.1.1 specification, as in test_mqtt_codec.py.
"""

from __future__ import annotations

import pytest

from aioiothub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    DeviceDisabledError,
    ProtocolError,
)
from aioiothub.protocol.mqtt import (
    MAX_PACKET_ID,
    SUBACK_FAILURE,
    ClientSession,
    ConnectionAccepted,
    ConnectionRefused,
    LinkDead,
    MalformedPacket,
    PingDue,
    ProtocolViolation,
    Publish,
    SessionState,
    SubscribeAcknowledged,
    check_publish_qos,
    connack_refused,
)

CONNACK_ACCEPTED = bytes.fromhex("20 02 00 00")
CONNACK_RESUMED = bytes.fromhex("20 02 01 00")
PINGREQ = bytes.fromhex("c0 00")
PINGRESP = bytes.fromhex("d0 00")
TOPIC = "devices/d/messages/events/"
#: PUBLISH QoS 1 to "a/b", packet id 1, payload "hi".
PUBLISH_QOS1_ID1 = bytes.fromhex("32 09 00 03 61 2f 62 00 01 68 69")


def puback(packet_id: int) -> bytes:
    return bytes((0x40, 2, packet_id >> 8, packet_id & 0xFF))


def connecting(*, keepalive: int = 60, ping_timeout: float = 30.0, now: float = 0.0) -> ClientSession[str]:
    session: ClientSession[str] = ClientSession(keepalive=keepalive, ping_timeout=ping_timeout, now=now)
    session.send_connect("d", "u", None, False, None)
    return session


def connected(**arguments: float) -> ClientSession[str]:
    session = connecting(**arguments)  # type: ignore[arg-type]
    assert session.receive_data(CONNACK_ACCEPTED, 0.0) == [ConnectionAccepted(False)]
    return session


# --- connecting -------------------------------------------------------------------------------------


def test_connect_bytes_and_states() -> None:
    session: ClientSession[str] = ClientSession(keepalive=60, ping_timeout=30.0, now=0.0)
    assert session.state is SessionState.IDLE
    assert session.send_connect("d", "u", None, True, None) == bytes.fromhex(
        "10 10 00 04 4d 51 54 54 04 82 00 3c 00 01 64 00 01 75"  # CONNECT, 16 bytes: MQTT 4, username + clean
    )
    assert session.state is SessionState.CONNECTING
    assert session.receive_data(CONNACK_RESUMED, 1.0) == [ConnectionAccepted(True)]
    assert session.state is SessionState.CONNECTED
    assert session.last_received == 1.0


def test_connect_is_sent_once() -> None:
    session = connecting()
    with pytest.raises(RuntimeError, match="once"):
        session.connect_sent()


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (1, ConnectError, "the hub refused the connection (CONNACK 1: unacceptable protocol version)"),
        (2, ConnectError, "the hub refused the connection (CONNACK 2: identifier rejected)"),
        (
            3,
            DeviceDisabledError,
            "the hub refused the connection (CONNACK 3: server unavailable): the device may be disabled in the "
            "hub (IoT Hub answers a disabled device, or a module of one, this way)",
        ),
        (4, AuthenticationError, "the hub refused the credentials (CONNACK 4: bad user name or password)"),
        (5, AuthenticationError, "the hub refused the credentials (CONNACK 5: not authorized)"),
        (6, ConnectError, "the hub refused the connection (CONNACK 6: unknown reason)"),
        (0xFF, ConnectError, "the hub refused the connection (CONNACK 255: unknown reason)"),
    ],
)
def test_each_refused_connack_maps_to_the_library_exception(code: int, kind: type[ConnectError], text: str) -> None:
    session = connecting()
    # Whatever follows a refusal in the same read is not reported: the connection ends.
    [event] = session.receive_data(bytes((0x20, 2, 0, code)) + PUBLISH_QOS1_ID1, 0.0)
    assert isinstance(event, ConnectionRefused)
    assert event.return_code == code
    assert type(event.error) is kind
    assert str(event.error) == text
    assert event.error.return_code == code
    assert session.state is SessionState.REFUSED
    assert session.send_puback(1, 1) is None


def test_a_refusal_with_an_unknown_code() -> None:
    error = connack_refused(None)
    assert type(error) is ConnectError
    assert str(error) == "the hub refused the connection (CONNACK None: unknown reason)"
    assert error.return_code is None
    session: ClientSession[str] = ClientSession(keepalive=60, ping_timeout=30.0, now=0.0)
    session.connect_sent()
    refused = session.connack_received(None)
    assert isinstance(refused, ConnectionRefused)
    assert refused.return_code is None


def test_a_second_connack_is_a_violation() -> None:
    session = connected()
    [event] = session.receive_data(CONNACK_ACCEPTED, 0.0)
    assert isinstance(event, ProtocolViolation)
    assert event.reason == "the hub sent a second CONNACK"
    assert isinstance(event.error, ProtocolError)


def test_a_publish_before_connack_is_a_violation_but_one_after_it_in_the_same_read_is_not() -> None:
    session = connecting()
    [event] = session.receive_data(PUBLISH_QOS1_ID1, 0.0)
    assert isinstance(event, ProtocolViolation)
    assert event.reason == "the hub sent a PUBLISH before CONNACK"

    session = connecting()
    events = session.receive_data(CONNACK_RESUMED + PUBLISH_QOS1_ID1, 0.0)
    assert events == [ConnectionAccepted(True), Publish("a/b", b"hi", 1, False, False, 1)]
    # A resumed session's message may be acknowledged at once.
    assert session.send_puback(1, 1) == puback(1)


# --- publishing -------------------------------------------------------------------------------------


def test_publish_bytes_and_puback_returns_the_token() -> None:
    session = connected()
    assert session.send_publish("a/b", b"hi", 1, False, "first") == PUBLISH_QOS1_ID1
    assert session.send_publish("a/b", b"hi", 0, True, "ignored") == bytes.fromhex("31 07 00 03 61 2f 62 68 69")
    assert session.in_flight == 1
    assert session.receive_data(puback(1), 2.5) == ["first"]
    assert session.in_flight == 0
    assert session.last_received == 2.5


def test_a_duplicated_or_unknown_puback_is_ignored() -> None:
    session = connected()
    session.send_publish("a/b", b"hi", 1, False, "first")
    assert session.receive_data(puback(1) + puback(1) + puback(7), 0.0) == ["first"]
    assert session.puback_received(1) is None


def test_pubacks_in_one_read_come_back_in_their_order() -> None:
    session = connected()
    for name in "abc":
        session.send_publish("a/b", b"", 1, False, name)
    assert session.receive_data(puback(3) + puback(1) + puback(2), 0.0) == ["c", "a", "b"]


@pytest.mark.parametrize("qos", [2, 3, -1])
def test_qos_other_than_0_or_1_is_refused(qos: int) -> None:
    session = connected()
    with pytest.raises(ValueError, match=f"qos must be 0 or 1, not {qos}"):
        session.send_publish("a/b", b"", qos, False, "x")
    with pytest.raises(ValueError, match=f"qos must be 0 or 1, not {qos}"):
        check_publish_qos(qos)
    assert session.in_flight == 0


def test_an_inbound_qos_2_publish_is_a_violation() -> None:
    session = connected()
    qos2 = bytes.fromhex("34 07 00 03 61 2f 62 00 05")
    [event] = session.receive_data(qos2 + puback(1), 0.0)
    assert isinstance(event, ProtocolViolation)
    assert event.reason == "the hub sent a QoS 2 PUBLISH to 'a/b'; it was never asked for one"
    again = session.message_received("a/b", 2)
    assert again is not None
    assert again.reason == event.reason


def test_publishing_needs_an_accepted_connection() -> None:
    session = connecting()
    for qos in (0, 1):
        with pytest.raises(ConnectionLostError, match="not connected"):
            session.send_publish("a/b", b"", qos, False, "x")
    session = connected()
    session.connection_lost()
    with pytest.raises(ConnectionLostError, match="not connected"):
        session.send_publish("a/b", b"", 1, False, "x")
    with pytest.raises(ConnectionLostError, match="not connected"):
        session.send_subscribe([("a/#", 1)], "x")


# --- packet identifiers -----------------------------------------------------------------------------


def test_packet_ids_wrap_around_after_65535_and_skip_those_in_flight() -> None:
    session = connected()
    session.send_publish("a/b", b"", 1, False, "kept")  # id 1 stays in flight
    for packet_id in range(2, MAX_PACKET_ID + 1):
        data = session.send_publish("a/b", b"", 1, False, "x")
        assert data[-2:] == packet_id.to_bytes(2, "big")
        assert session.receive_data(puback(packet_id), 0.0) == ["x"]
    # 65535 was the last; 1 is still in flight, so the next id is 2.
    assert session.send_publish("a/b", b"", 1, False, "y")[-2:] == b"\x00\x02"


def test_when_every_packet_id_is_in_flight_sending_fails_until_one_is_acknowledged() -> None:
    session = connected()
    for packet_id in range(1, MAX_PACKET_ID + 1):
        session.send_publish("a/b", b"", 1, False, str(packet_id))
    assert session.in_flight == MAX_PACKET_ID
    message = "every MQTT packet identifier is waiting for its acknowledgement"
    with pytest.raises(ConnectionLostError, match=message):
        session.send_publish("a/b", b"", 1, False, "more")
    with pytest.raises(ConnectionLostError, match=message):
        session.send_subscribe([("a/#", 1)], "more")
    assert session.receive_data(puback(300), 0.0) == ["300"]
    assert session.send_publish("a/b", b"", 1, False, "more")[-2:] == (300).to_bytes(2, "big")


def test_a_subscribe_in_flight_holds_its_packet_id() -> None:
    session = connected()
    packet_id, _ = session.send_subscribe([("a/#", 1)], "subscribe")
    assert packet_id == 1
    assert session.send_publish("a/b", b"", 1, False, "x")[-2:] == b"\x00\x02"


# --- subscribing ------------------------------------------------------------------------------------


def test_subscribe_bytes_and_suback_with_a_refused_filter() -> None:
    session = connected()
    packet_id, data = session.send_subscribe([("a/#", 1), ("b", 0)], "waiter")
    assert (packet_id, data) == (1, bytes.fromhex("82 0c 00 01 00 03 61 2f 23 01 00 01 62 00"))
    [event] = session.receive_data(bytes.fromhex("90 04 00 01 01 80"), 0.0)
    assert event == SubscribeAcknowledged(1, (1, SUBACK_FAILURE), "waiter")
    assert isinstance(event, SubscribeAcknowledged)
    assert event.refused == (1,)
    # The SUBACK completed it: a duplicate is ignored.
    assert session.receive_data(bytes.fromhex("90 04 00 01 01 80"), 0.0) == []


def test_a_suback_with_the_wrong_number_of_codes_is_a_violation_and_leaves_the_waiter_in_flight() -> None:
    session = connected()
    session.send_publish("a/b", b"", 1, False, "publish")
    session.send_subscribe([("a/#", 1), ("b/#", 1)], "waiter")
    [event] = session.receive_data(bytes.fromhex("90 03 00 02 01") + puback(1), 0.0)
    assert isinstance(event, ProtocolViolation)
    assert event.reason == "SUBACK has 1 return codes for 2 filters"
    assert session.connection_lost() == ["publish", "waiter"]
    assert session.state is SessionState.CLOSED


def test_an_abandoned_subscribe_ignores_its_late_suback() -> None:
    session = connected()
    packet_id, _ = session.send_subscribe([("a/#", 1)], "waiter")
    session.subscribe_abandoned(packet_id)
    assert session.receive_data(bytes.fromhex("90 03 00 01 01"), 0.0) == []
    assert session.connection_lost() == []


# --- acknowledging inbound messages -----------------------------------------------------------------


def test_puback_only_for_qos_1_while_connected_in_any_order() -> None:
    session = connecting()
    assert session.send_puback(1, 5) is None  # before CONNACK
    assert not session.may_acknowledge(1)
    session.receive_data(CONNACK_ACCEPTED, 0.0)
    assert session.send_puback(0, 5) is None
    assert not session.may_acknowledge(0)
    assert session.send_puback(1, 0x1234) == bytes.fromhex("40 02 12 34")
    assert session.send_puback(1, 7) == puback(7)  # the application's order, not the arrival order
    assert session.may_acknowledge(1)
    session.connection_lost()
    assert session.send_puback(1, 5) is None
    assert not session.may_acknowledge(1)


def test_an_inbound_qos_0_and_qos_1_publish_are_reported_as_packets() -> None:
    session = connected()
    qos0 = bytes.fromhex("30 05 00 03 61 2f 62")
    assert session.receive_data(qos0 + PUBLISH_QOS1_ID1, 0.0) == [
        Publish("a/b", b"", 0, False, False, None),
        Publish("a/b", b"hi", 1, False, False, 1),
    ]


# --- malformed input --------------------------------------------------------------------------------


def test_malformed_bytes_report_what_came_before_then_a_violation() -> None:
    session = connected()
    session.send_publish("a/b", b"", 1, False, "first")
    events = session.receive_data(puback(1) + bytes.fromhex("40 02 00 00"), 0.0)
    assert events[0] == "first"
    violation = events[1]
    assert isinstance(violation, ProtocolViolation)
    assert violation.reason == "the hub sent malformed data: PUBACK has packet identifier 0"
    assert isinstance(violation.error, MalformedPacket)
    assert len(events) == 2


def test_a_violation_before_malformed_bytes_is_the_only_one_reported() -> None:
    session = connected()
    events = session.receive_data(CONNACK_ACCEPTED + bytes.fromhex("40 02 00 00"), 0.0)
    assert [type(event) for event in events] == [ProtocolViolation]
    assert events[0].reason == "the hub sent a second CONNACK"  # type: ignore[union-attr]


# --- keep-alive -------------------------------------------------------------------------------------


def test_keepalive_pings_an_idle_link_and_declares_it_dead_without_pingresp() -> None:
    session = connected(keepalive=60, ping_timeout=30.0, now=100.0)
    session.last_sent = session.last_received = 100.0
    assert session.first_keepalive_check(105.0) == 165.0
    assert session.next_keepalive_check() == 160.0
    assert session.check_keepalive(159.9) is None
    assert session.check_keepalive(160.0) == PingDue(PINGREQ)
    assert session.next_keepalive_check() == 190.0  # the PINGRESP is due within the ping timeout
    assert session.check_keepalive(170.0) is None
    assert session.check_keepalive(190.0) == LinkDead("keep-alive timeout: no PINGRESP within 30.0 s of PINGREQ")


def test_pingresp_clears_the_ping_deadline_and_traffic_postpones_the_next_ping() -> None:
    session = connected(keepalive=60, ping_timeout=30.0, now=0.0)
    session.last_sent = session.last_received = 0.0
    assert session.check_keepalive(60.0) == PingDue(PINGREQ)
    session.last_sent = 60.0
    assert session.receive_data(PINGRESP, 61.0) == []
    assert session.next_keepalive_check() == 120.0  # the older of last sent and last received
    session.last_sent = 100.0
    assert session.next_keepalive_check() == 121.0
    assert session.check_keepalive(120.5) is None
    assert session.check_keepalive(121.0) == PingDue(PINGREQ)


def test_the_ping_timeout_is_capped_at_the_keepalive() -> None:
    session = connected(keepalive=5, ping_timeout=30.0, now=0.0)
    assert session.send_pingreq(10.0) == PINGREQ
    assert session.send_pingreq(12.0) == PINGREQ  # a second probe keeps the first deadline
    assert session.next_keepalive_check() == 15.0
    assert session.check_keepalive(15.0) == LinkDead("keep-alive timeout: no PINGRESP within 5 s of PINGREQ")


def test_no_keepalive_means_no_checks_and_nothing_before_connack() -> None:
    session = connected(keepalive=0, ping_timeout=30.0, now=0.0)
    assert session.first_keepalive_check(1.0) is None
    assert session.next_keepalive_check() is None
    session.send_pingreq(1.0)  # an explicit probe still has its deadline
    assert session.next_keepalive_check() == 31.0
    assert connecting(keepalive=60).check_keepalive(1_000.0) is None


# --- the event-level API (a caller with its own framing) --------------------------------------------


def test_events_from_a_caller_that_frames_packets_itself() -> None:
    session: ClientSession[str] = ClientSession(keepalive=60, ping_timeout=30.0, now=0.0)
    session.connect_sent()
    assert session.message_received("a/b", 1) is not None  # before the CONNACK
    assert session.connack_received(0, True) == ConnectionAccepted(True)
    assert session.message_received("a/b", 1) is None
    session.publish_sent(42, "forty-two")
    assert session.in_flight == 1
    assert session.puback_received(42) == "forty-two"
    assert session.puback_received(42) is None
    session.publish_sent(43, "lost")
    assert session.connection_lost() == ["lost"]
    assert session.in_flight == 0
    assert repr(session) == "<ClientSession closed, 0 publishes in flight>"
