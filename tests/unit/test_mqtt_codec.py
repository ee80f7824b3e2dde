from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    ConnAck,
    Connect,
    Disconnect,
    MalformedPacket,
    MqttClientCodec,
    MqttServerCodec,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
    encode_connack,
    encode_connect,
    encode_disconnect,
    encode_pingreq,
    encode_pingresp,
    encode_puback,
    encode_publish,
    encode_suback,
    encode_subscribe,
    encode_unsuback,
    encode_unsubscribe,
)


def parse_one(data: bytes) -> object:
    packets = MqttServerCodec().feed(data)
    assert len(packets) == 1
    return packets[0]


def parse_one_client(data: bytes) -> object:
    packets = MqttClientCodec().feed(data)
    assert len(packets) == 1
    return packets[0]


def assert_malformed(data: bytes, match: str, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
    with pytest.raises(MalformedPacket, match=match):
        MqttServerCodec(max_packet_size=max_packet_size).feed(data)


# --- exact bytes, written by hand from the MQTT 3.1.1 specification ----------------------------------

CONNECT_MY_DEVICE = bytes.fromhex(
    "10 21"  # CONNECT, remaining length 33
    "00 04 4d 51 54 54 04"  # protocol name "MQTT", level 4
    "c2"  # flags: user name, password, clean session
    "00 3c"  # keep-alive 60 s
    "00 09 6d 79 5f 64 65 76 69 63 65"  # client id "my_device"
    "00 04 75 73 65 72"  # user name "user"
    "00 04 70 61 73 73"  # password "pass"
)
PUBLISH_QOS1_ID1 = bytes.fromhex("32 09 00 03 61 2f 62 00 01 68 69")  # "a/b", id 1, payload "hi"
SUBACK_ID1 = bytes.fromhex("90 04 00 01 01 80")  # id 1, granted QoS 1 then failure
SUBSCRIBE_ID10 = bytes.fromhex("82 08 00 0a 00 03 61 2f 23 01")  # id 10, "a/#" at QoS 1


def test_connect_exact_bytes() -> None:
    assert encode_connect("my_device", "user", b"pass", keepalive=60, clean_session=True) == CONNECT_MY_DEVICE
    assert parse_one(CONNECT_MY_DEVICE) == Connect(
        client_id="my_device",
        username="user",
        password=b"pass",
        keepalive=60,
        clean_session=True,
        will=None,
        protocol_level=4,
    )


def test_publish_qos1_exact_bytes() -> None:
    assert encode_publish("a/b", b"hi", 1, packet_id=1) == PUBLISH_QOS1_ID1
    assert parse_one(PUBLISH_QOS1_ID1) == Publish("a/b", b"hi", qos=1, retain=False, dup=False, packet_id=1)


def test_suback_exact_bytes() -> None:
    assert encode_suback(1, [1, 0x80]) == SUBACK_ID1
    assert parse_one_client(SUBACK_ID1) == SubAck(1, (1, 0x80))


def test_subscribe_exact_bytes() -> None:
    assert encode_subscribe(10, [("a/#", 1)]) == SUBSCRIBE_ID10
    assert parse_one(SUBSCRIBE_ID10) == Subscribe(10, (("a/#", 1),))


def test_small_packets_exact_bytes() -> None:
    assert encode_connack(True, 0) == bytes.fromhex("20 02 01 00")
    assert encode_connack(False, 5) == bytes.fromhex("20 02 00 05")
    assert encode_puback(0x1234) == bytes.fromhex("40 02 12 34")
    assert encode_unsuback(7) == bytes.fromhex("b0 02 00 07")
    assert encode_pingreq() == bytes.fromhex("c0 00")
    assert encode_pingresp() == bytes.fromhex("d0 00")
    assert encode_disconnect() == bytes.fromhex("e0 00")
    assert encode_unsubscribe(2, ["a"]) == bytes.fromhex("a2 05 00 02 00 01 61")
    assert encode_publish("t", b"", 0) == bytes.fromhex("30 03 00 01 74")


@pytest.mark.parametrize(
    ("payload_size", "header"),
    [
        (127 - 3, "30 7f"),
        (128 - 3, "30 80 01"),
        (16_383 - 3, "30 ff 7f"),
        (16_384 - 3, "30 80 80 01"),
        (2_097_151 - 3, "30 ff ff 7f"),
        (2_097_152 - 3, "30 80 80 80 01"),
    ],
)
def test_remaining_length_boundaries(payload_size: int, header: str) -> None:
    # Topic "t" takes 3 bytes of the body; the header values are the examples in section 2.2.3.
    packet = encode_publish("t", bytes(payload_size), 0)
    expected_header = bytes.fromhex(header)
    assert packet.startswith(expected_header)
    assert len(packet) == len(expected_header) + payload_size + 3
    parsed = MqttServerCodec(max_packet_size=4_000_000).feed(packet)
    assert parsed == [Publish("t", bytes(payload_size), 0, False, False, None)]


# --- the client role: every packet it encodes and decodes, exact bytes from the specification ----------

CLIENT_ENCODED: dict[str, tuple[bytes, str]] = {
    "CONNECT for X.509: user name, no password, session kept": (
        encode_connect("d", "u", None, keepalive=60, clean_session=False),
        "10 10  00 04 4d 51 54 54 04  80  00 3c  00 01 64  00 01 75",
    ),
    "CONNECT with password and a QoS 1 will, session kept": (
        encode_connect("d", "u", "p", keepalive=60, clean_session=False, will=Will("w", b"x", 1, False)),
        "10 19  00 04 4d 51 54 54 04  cc  00 3c  00 01 64  00 01 77  00 01 78  00 01 75  00 01 70",
    ),
    "CONNECT, clean session, retained QoS 0 will, no user name": (
        encode_connect("d", None, None, keepalive=1177, clean_session=True, will=Will("w", b"", 0, True)),
        "10 12  00 04 4d 51 54 54 04  26  04 99  00 01 64  00 01 77  00 00",
    ),
    "CONNECT, clean session, keep-alive 0": (
        encode_connect("d", "u", "p", keepalive=0, clean_session=True),
        "10 13  00 04 4d 51 54 54 04  c2  00 00  00 01 64  00 01 75  00 01 70",
    ),
    "PUBLISH QoS 0": (encode_publish("a/b", b"hi", 0), "30 07  00 03 61 2f 62  68 69"),
    "PUBLISH QoS 0 retained": (encode_publish("a/b", b"hi", 0, retain=True), "31 07  00 03 61 2f 62  68 69"),
    "PUBLISH QoS 1": (encode_publish("a/b", b"hi", 1, 0x0102), "32 09  00 03 61 2f 62  01 02  68 69"),
    "PUBLISH QoS 1 retained": (
        encode_publish("a/b", b"hi", 1, 1, retain=True),
        "33 09  00 03 61 2f 62  00 01  68 69",
    ),
    "PUBLISH QoS 1 duplicate": (encode_publish("a/b", b"", 1, 0xFFFF, dup=True), "3a 07  00 03 61 2f 62  ff ff"),
    "PUBACK": (encode_puback(0xABCD), "40 02  ab cd"),
    "SUBSCRIBE, two filters": (
        encode_subscribe(3, [("a/#", 1), ("b", 0)]),
        "82 0c  00 03  00 03 61 2f 23 01  00 01 62 00",
    ),
    "UNSUBSCRIBE, two filters": (encode_unsubscribe(4, ["a/#", "b"]), "a2 0a  00 04  00 03 61 2f 23  00 01 62"),
    "PINGREQ": (encode_pingreq(), "c0 00"),
    "DISCONNECT": (encode_disconnect(), "e0 00"),
}


@pytest.mark.parametrize(("encoded", "expected"), CLIENT_ENCODED.values(), ids=CLIENT_ENCODED.keys())
def test_client_role_encodes_exact_bytes(encoded: bytes, expected: str) -> None:
    assert encoded == bytes.fromhex(expected)


CLIENT_DECODED: dict[str, tuple[str, object]] = {
    "CONNACK accepted, new session": ("20 02 00 00", ConnAck(False, 0)),
    "CONNACK accepted, session present": ("20 02 01 00", ConnAck(True, 0)),
    "CONNACK 1 unacceptable protocol version": ("20 02 00 01", ConnAck(False, 1)),
    "CONNACK 2 identifier rejected": ("20 02 00 02", ConnAck(False, 2)),
    "CONNACK 3 server unavailable": ("20 02 00 03", ConnAck(False, 3)),
    "CONNACK 4 bad user name or password": ("20 02 00 04", ConnAck(False, 4)),
    "CONNACK 5 not authorized": ("20 02 00 05", ConnAck(False, 5)),
    "PUBLISH QoS 0": ("30 07  00 03 61 2f 62  68 69", Publish("a/b", b"hi", 0, False, False, None)),
    "PUBLISH QoS 1": ("32 09  00 03 61 2f 62  00 07  68 69", Publish("a/b", b"hi", 1, False, False, 7)),
    "PUBLISH QoS 1 retained duplicate": ("3b 07  00 03 61 2f 62  00 07", Publish("a/b", b"", 1, True, True, 7)),
    "PUBACK": ("40 02  12 34", PubAck(0x1234)),
    "SUBACK granting 0, 1 and refusing one": ("90 05  00 09  00 01 80", SubAck(9, (0, 1, 0x80))),
    "UNSUBACK": ("b0 02  00 04", UnsubAck(4)),
    "PINGRESP": ("d0 00", PingResp()),
}


@pytest.mark.parametrize(("data", "expected"), CLIENT_DECODED.values(), ids=CLIENT_DECODED.keys())
def test_client_role_decodes_exact_bytes(data: str, expected: object) -> None:
    assert parse_one_client(bytes.fromhex(data)) == expected


def test_client_codec_yields_many_packets_from_one_chunk() -> None:
    stream = b"".join(bytes.fromhex(data) for data, _ in CLIENT_DECODED.values()) + bytes.fromhex("40 02 00 01") * 100
    expected = [packet for _, packet in CLIENT_DECODED.values()] + [PubAck(1)] * 100
    assert MqttClientCodec().feed(stream) == expected


def test_client_codec_assembles_one_packet_split_over_many_chunks() -> None:
    packet = encode_publish("devices/d/messages/devicebound/%24.mid=1", bytes(range(200)), 1, 42)
    codec = MqttClientCodec()
    for index in range(len(packet) - 1):
        assert codec.feed(packet[index : index + 1]) == []
    assert codec.buffered == len(packet) - 1
    assert codec.feed(packet[-1:]) == [
        Publish("devices/d/messages/devicebound/%24.mid=1", bytes(range(200)), 1, False, False, 42)
    ]
    assert codec.buffered == 0


def test_fast_built_puback_behaves_like_constructed() -> None:
    for codec in (MqttClientCodec(), MqttServerCodec()):
        (parsed,) = codec.feed(encode_puback(0x0102))
        built = PubAck(0x0102)
        assert type(parsed) is PubAck
        assert parsed == built
        assert hash(parsed) == hash(built)
        assert repr(parsed) == repr(built)
        with pytest.raises(AttributeError):
            parsed.packet_id = 3  # type: ignore[misc]


@pytest.mark.parametrize("codec_class", [MqttClientCodec, MqttServerCodec])
def test_puback_with_packet_id_0_is_malformed_in_both_roles(codec_class: type[MqttClientCodec]) -> None:
    with pytest.raises(MalformedPacket, match="PUBACK has packet identifier 0"):
        codec_class().feed(bytes.fromhex("40 02 00 00"))


# --- round trips --------------------------------------------------------------------------------------


CLIENT_PACKETS: list[tuple[bytes, object]] = [
    (
        encode_connect("dev", keepalive=0, clean_session=False),
        Connect("dev", None, None, 0, False, None, 4),
    ),
    (
        encode_connect(
            "dev/mod",
            "hub/dev/mod/?api-version=2021-04-12",
            "SharedAccessSignature sr=x",
            keepalive=1177,
            will=Will("will/topic", b"bye", 1, True),
        ),
        Connect(
            "dev/mod",
            "hub/dev/mod/?api-version=2021-04-12",
            b"SharedAccessSignature sr=x",
            1177,
            True,
            Will("will/topic", b"bye", 1, True),
            4,
        ),
    ),
    (encode_connect("", username="x509-user"), Connect("", "x509-user", None, 60, True, None, 4)),
    (encode_connect("old", protocol_level=3), Connect("old", None, None, 60, True, None, 3)),
    (
        encode_publish("devices/d/messages/events/", b"", 0),
        Publish("devices/d/messages/events/", b"", 0, False, False, None),
    ),
    (encode_publish("a", b"x", 0, retain=True), Publish("a", b"x", 0, True, False, None)),
    (encode_publish("a", b"x", 1, 65535, dup=True), Publish("a", b"x", 1, False, True, 65535)),
    (encode_publish("ä/€", b"\x00\xff", 2, 9), Publish("ä/€", b"\x00\xff", 2, False, False, 9)),
    (encode_puback(1), PubAck(1)),
    (
        encode_subscribe(5, [("$iothub/twin/res/#", 0), ("$iothub/methods/POST/#", 2)]),
        Subscribe(5, (("$iothub/twin/res/#", 0), ("$iothub/methods/POST/#", 2))),
    ),
    (encode_unsubscribe(6, ["a/#", "b/+"]), Unsubscribe(6, ("a/#", "b/+"))),
    (encode_pingreq(), PingReq()),
    (encode_disconnect(), Disconnect()),
]

SERVER_PACKETS: list[tuple[bytes, object]] = [
    (encode_connack(False, 0), ConnAck(False, 0)),
    (encode_connack(True, 0), ConnAck(True, 0)),
    (encode_connack(False, 5), ConnAck(False, 5)),
    (
        encode_publish("$iothub/twin/res/200/?$rid=1", b"{}", 0),
        Publish("$iothub/twin/res/200/?$rid=1", b"{}", 0, False, False, None),
    ),
    (encode_publish("c2d", b"hello", 1, 3), Publish("c2d", b"hello", 1, False, False, 3)),
    (encode_puback(300), PubAck(300)),
    (encode_suback(2, [0, 1, 2, 0x80]), SubAck(2, (0, 1, 2, 0x80))),
    (encode_unsuback(4), UnsubAck(4)),
    (encode_pingresp(), PingResp()),
]


@pytest.mark.parametrize(("data", "expected"), CLIENT_PACKETS)
def test_client_packet_round_trip(data: bytes, expected: object) -> None:
    assert parse_one(data) == expected


@pytest.mark.parametrize(("data", "expected"), SERVER_PACKETS)
def test_server_packet_round_trip(data: bytes, expected: object) -> None:
    assert parse_one_client(data) == expected


def test_connect_repr_hides_password() -> None:
    packet = parse_one(encode_connect("dev", "user", "SharedAccessSignature sig=secret"))
    assert "secret" not in repr(packet)
    assert "dev" in repr(packet)


def test_fast_built_publish_behaves_like_constructed() -> None:
    parsed = parse_one(encode_publish("a/b", b"x", 1, 2))
    built = Publish("a/b", b"x", 1, False, False, 2)
    assert type(parsed) is Publish
    assert parsed == built
    assert hash(parsed) == hash(built)
    assert repr(parsed) == repr(built)
    with pytest.raises(AttributeError):
        parsed.topic = "other"  # type: ignore[misc]


# --- framing ------------------------------------------------------------------------------------------


def test_many_packets_in_one_chunk() -> None:
    stream = b"".join(data for data, _ in CLIENT_PACKETS)
    assert MqttServerCodec().feed(stream) == [expected for _, expected in CLIENT_PACKETS]


def test_packets_split_byte_by_byte() -> None:
    stream = b"".join(data for data, _ in CLIENT_PACKETS)
    codec = MqttServerCodec()
    packets: list[object] = []
    for index in range(len(stream)):
        packets.extend(codec.feed(stream[index : index + 1]))
        assert codec.buffered < 300
    assert packets == [expected for _, expected in CLIENT_PACKETS]
    assert codec.buffered == 0


def test_large_packet_split_across_chunks() -> None:
    packet = encode_publish("big", bytes(range(256)) * 1000, 1, 1)
    codec = MqttServerCodec()
    assert codec.feed(packet[:1]) == []
    assert codec.feed(packet[1:3]) == []
    assert codec.feed(packet[3:100_000]) == []
    assert codec.buffered == 100_000
    assert codec.feed(packet[100_000:] + encode_pingreq()) == [
        Publish("big", bytes(range(256)) * 1000, 1, False, False, 1),
        PingReq(),
    ]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    codec = MqttServerCodec()
    assert codec.feed(bytearray(encode_pingreq())) == [PingReq()]
    assert codec.feed(memoryview(encode_puback(1))) == [PubAck(1)]
    assert codec.feed(b"") == []


def test_client_codec_many_packets_in_one_chunk() -> None:
    stream = b"".join(data for data, _ in SERVER_PACKETS)
    assert MqttClientCodec().feed(stream) == [expected for _, expected in SERVER_PACKETS]


# --- malformed input ----------------------------------------------------------------------------------


def test_remaining_length_longer_than_four_bytes() -> None:
    assert_malformed(b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes")


def test_oversize_packet_rejected_from_the_fixed_header() -> None:
    codec = MqttServerCodec(max_packet_size=1000)
    # 997 bytes of body after a 3-byte fixed header is exactly the limit.
    assert codec.feed(encode_publish("t", bytes(994), 0)) == [Publish("t", bytes(994), 0, False, False, None)]
    with pytest.raises(MalformedPacket, match="packet too large") as caught:
        codec.feed(b"\x30\xe7\x07")  # remaining length 999: the fixed header alone is enough
    assert caught.value.reason.startswith("packet too large")


def test_default_limit_refuses_400_kib_from_the_header() -> None:
    header = encode_publish("t", bytes(400 * 1024), 0)[:4]
    assert_malformed(header, "packet too large")


def test_default_limit_accepts_max_telemetry() -> None:
    topic = "devices/dev/messages/events/" + "k=v&" * 500
    packet = encode_publish(topic.rstrip("&"), bytes(256 * 1024), 1, 1)
    assert len(MqttServerCodec().feed(packet)) == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x10\x00", "CONNECT protocol name is truncated"),
        (b"\x11" + CONNECT_MY_DEVICE[1:], "reserved flags"),
        (b"\x41\x02\x00\x01", "reserved flags"),
        (b"\x80\x06\x00\x01\x00\x01a\x00", "reserved flags"),  # SUBSCRIBE with flags 0
        (b"\x83\x06\x00\x01\x00\x01a\x00", "reserved flags"),
        (b"\xa0\x05\x00\x01\x00\x01a", "reserved flags"),  # UNSUBSCRIBE with flags 0
        (b"\xc1\x00", "reserved flags"),
        (b"\xe2\x00", "reserved flags"),
        (b"\xc0\x01\x00", "remaining length 1, expected 0"),
        (b"\xe0\x01\x00", "remaining length 1, expected 0"),
        (b"\x40\x03\x00\x01\x00", "remaining length 3, expected 2"),
    ],
)
def test_reserved_flags_and_fixed_lengths(data: bytes, match: str) -> None:
    assert_malformed(data, match)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x20\x02\x00\x00", "CONNACK may not be sent by a client"),
        (b"\x50\x02\x00\x01", "PUBREC may not be sent by a client"),
        (b"\x62\x02\x00\x01", "PUBREL may not be sent by a client"),
        (b"\x70\x02\x00\x01", "PUBCOMP may not be sent by a client"),
        (b"\x90\x03\x00\x01\x00", "SUBACK may not be sent by a client"),
        (b"\xb0\x02\x00\x01", "UNSUBACK may not be sent by a client"),
        (b"\xd0\x00", "PINGRESP may not be sent by a client"),
        (b"\x00\x00", "reserved type 0"),
        (b"\xf0\x00", "reserved type 15"),
    ],
)
def test_packets_a_client_may_not_send(data: bytes, match: str) -> None:
    assert_malformed(data, match)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x10\x00", "CONNECT"),
        (b"\x30\x00", "PUBLISH topic is truncated"),
        (b"\x20\x02\x02\x00", "reserved acknowledge flags"),
        (b"\x20\x03\x00\x00\x00", "remaining length 3, expected 2"),
        (b"\x90\x02\x00\x01", "SUBACK has no return codes"),
        (b"\x90\x03\x00\x01\x03", "invalid return code 0x03"),
        (b"\x90\x03\x00\x00\x01", "packet identifier 0"),
        (b"\xc0\x00", "PINGREQ may not be sent by a server"),
        (b"\x50\x02\x00\x01", "PUBREC may not be sent by a server"),
    ],
)
def test_client_codec_malformed(data: bytes, match: str) -> None:
    with pytest.raises(MalformedPacket, match=match):
        MqttClientCodec().feed(data)


@pytest.mark.parametrize(
    ("topic_bytes", "match"),
    [
        (b"a/\xff", "not valid UTF-8"),
        (b"\xc0\xaf", "not valid UTF-8"),  # overlong encoding of "/"
        (b"\xed\xa0\x80", "not valid UTF-8"),  # a UTF-16 surrogate
        (b"a\x00b", "U\\+0000"),
        (b"a/+", "wildcard"),
        (b"a/#", "wildcard"),
        (b"#", "wildcard"),
    ],
)
def test_publish_topic_rules(topic_bytes: bytes, match: str) -> None:
    body = len(topic_bytes).to_bytes(2, "big") + topic_bytes + b"payload"
    assert_malformed(bytes((0x30, len(body))) + body, match)


def test_publish_structure_rules() -> None:
    assert_malformed(b"\x30\x02\x00\x00", "PUBLISH topic is empty")
    assert_malformed(b"\x30\x03\x00\x05a", "runs past the end")
    assert_malformed(b"\x36\x05\x00\x01a\x00\x01", "QoS 3")
    assert_malformed(b"\x38\x03\x00\x01a", "DUP flag")
    assert_malformed(b"\x32\x05\x00\x01a\x00\x00", "packet identifier 0")
    assert_malformed(b"\x32\x04\x00\x01a\x00", "no packet identifier")


def test_publish_qos2_parses_so_the_hub_can_refuse_it() -> None:
    assert parse_one(b"\x34\x05\x00\x01a\x00\x07") == Publish("a", b"", 2, False, False, 7)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x40\x02\x00\x00", "PUBACK has packet identifier 0"),
        (b"\x82\x06\x00\x00\x00\x01a\x01", "SUBSCRIBE has packet identifier 0"),
        (b"\xa2\x05\x00\x00\x00\x01a", "UNSUBSCRIBE has packet identifier 0"),
        (b"\x82\x02\x00\x01", "SUBSCRIBE has no topic filters"),
        (b"\xa2\x02\x00\x01", "UNSUBSCRIBE has no topic filters"),
        (b"\x82\x01\x00", "packet identifier is truncated"),
        (b"\x82\x05\x00\x01\x00\x01a", "has no requested QoS"),
        (b"\x82\x06\x00\x01\x00\x01a\x03", "invalid QoS byte 0x03"),
        (b"\x82\x06\x00\x01\x00\x01a\x41", "invalid QoS byte 0x41"),
        (b"\x82\x05\x00\x01\x00\x00\x01", "empty topic filter"),
        (b"\xa2\x04\x00\x01\x00\x00", "empty topic filter"),
        (b"\x82\x06\x00\x01\x00\x01\xff\x01", "not valid UTF-8"),
        (b"\x82\x06\x00\x01\x00\x01\x00\x01", "U\\+0000"),
        (b"\xa2\x05\x00\x01\x00\x01\x80", "not valid UTF-8"),
        (b"\x82\x06\x00\x01\x00\x09a\x01", "runs past the end"),
    ],
)
def test_packet_identifier_and_filter_rules(data: bytes, match: str) -> None:
    assert_malformed(data, match)


def _connect(variable_header: bytes, payload: bytes) -> bytes:
    body = variable_header + payload
    return bytes((0x10, len(body))) + body


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_connect(b"\x00\x04MQTX\x04\x02\x00\x3c", b"\x00\x01a"), "unknown protocol name"),
        (_connect(b"\x00\x04MQTT\x04\x03\x00\x3c", b"\x00\x01a"), "reserved flag"),
        (_connect(b"\x00\x04MQTT\x04\x1e\x00\x3c", b"\x00\x01a\x00\x01t\x00\x00"), "will QoS 3"),
        (_connect(b"\x00\x04MQTT\x04\x0a\x00\x3c", b"\x00\x01a"), "without a will"),
        (_connect(b"\x00\x04MQTT\x04\x22\x00\x3c", b"\x00\x01a"), "without a will"),
        (_connect(b"\x00\x04MQTT\x04\x42\x00\x3c", b"\x00\x01a\x00\x01p"), "password but no user name"),
        (_connect(b"\x00\x04MQTT\x04\x02\x00\x3c", b"\x00\x01a\x00"), "1 unexpected trailing bytes"),
        (_connect(b"\x00\x04MQTT\x04\x02", b""), "variable header is truncated"),
        (_connect(b"\x00\x04MQTT\x04\x02\x00\x3c", b"\x00\x05a"), "client identifier runs past the end"),
        (_connect(b"\x00\x04MQTT\x04\x02\x00\x3c", b"\x00\x01\xfe"), "client identifier is not valid UTF-8"),
        (_connect(b"\x00\x04MQTT\x04\x82\x00\x3c", b"\x00\x01a\x00\x02\x00x"), "user name contains U\\+0000"),
        (_connect(b"\x00\x04MQTT\x04\x06\x00\x3c", b"\x00\x01a\x00\x01#\x00\x00"), "will topic"),
        (_connect(b"\x00\x04MQTT\x04\xc2\x00\x3c", b"\x00\x01a\x00\x01u"), "password is truncated"),
    ],
)
def test_connect_rules(data: bytes, match: str) -> None:
    assert_malformed(data, match)


@pytest.mark.parametrize(
    "variable_header",
    [b"\x00\x04MQTT\x05\x02\x00\x3c", b"\x00\x04MQTT\x03\x02\x00\x3c", b"\x00\x06MQIsdp\x04\x02\x00\x3c"],
)
def test_unsupported_protocol_level_asks_for_connack_1(variable_header: bytes) -> None:
    with pytest.raises(MalformedPacket, match="unsupported protocol level") as caught:
        MqttServerCodec().feed(_connect(variable_header, b"\x00\x01a"))
    assert caught.value.return_code == 1


def test_other_errors_carry_no_return_code() -> None:
    with pytest.raises(MalformedPacket) as caught:
        MqttServerCodec().feed(b"\xf0\x00")
    assert caught.value.return_code is None
    assert isinstance(caught.value, ProtocolError)


def test_valid_packets_before_the_error_are_kept() -> None:
    codec = MqttServerCodec()
    with pytest.raises(MalformedPacket) as caught:
        codec.feed(encode_pingreq() + encode_puback(3) + b"\xf0\x00" + encode_pingreq())
    assert caught.value.packets_before == (PingReq(), PubAck(3))


def test_codec_stays_broken_after_an_error() -> None:
    codec = MqttServerCodec()
    with pytest.raises(MalformedPacket) as first:
        codec.feed(b"\xf0\x00")
    with pytest.raises(MalformedPacket) as second:
        codec.feed(encode_pingreq())
    assert second.value is first.value


def test_error_message_names_the_topic() -> None:
    with pytest.raises(MalformedPacket, match="devices/x/#"):
        MqttServerCodec().feed(b"\x30\x0d\x00\x0bdevices/x/#")


# --- encoder arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exception", "match"),
    [
        (lambda: encode_publish("a/#", b"", 0), ValueError, "topic"),
        (lambda: encode_publish("", b"", 0), ValueError, "topic"),
        (lambda: encode_publish("a\x00", b"", 0), ValueError, "topic"),
        (lambda: encode_publish("a", b"", 3), ValueError, "qos"),
        (lambda: encode_publish("a", b"", 1), ValueError, "packet_id"),
        (lambda: encode_publish("a", b"", 0, 1), ValueError, "packet_id"),
        (lambda: encode_publish("a", b"", 1, 0), ValueError, "packet_id"),
        (lambda: encode_publish("a", b"", 1, 65536), ValueError, "packet_id"),
        (lambda: encode_publish("a", b"", 0, dup=True), ValueError, "dup"),
        (lambda: encode_publish("a", "text", 0), TypeError, "payload"),  # type: ignore[arg-type]
        (lambda: encode_publish("a" * 65536, b"", 0), ValueError, "topic"),
        (lambda: encode_puback(0), ValueError, "packet_id"),
        (lambda: encode_puback(True), TypeError, "packet_id"),
        (lambda: encode_connack(True, 5), ValueError, "session_present"),
        (lambda: encode_connack(False, 256), ValueError, "return_code"),
        (lambda: encode_suback(1, []), ValueError, "granted"),
        (lambda: encode_suback(1, [3]), ValueError, "granted\\[0\\]"),
        (lambda: encode_subscribe(1, []), ValueError, "filters"),
        (lambda: encode_subscribe(1, [("a", 0), ("", 0)]), ValueError, "filters\\[1\\]"),
        (lambda: encode_subscribe(1, [("a", 5)]), ValueError, "filters\\[0\\] QoS"),
        (lambda: encode_unsubscribe(1, []), ValueError, "filters"),
        (lambda: encode_connect("a", keepalive=70000), ValueError, "keepalive"),
        (lambda: encode_connect("a", password=b"p"), ValueError, "password"),
        (lambda: encode_connect("a", protocol_level=5), ValueError, "protocol_level"),
        (lambda: encode_connect("a", will=Will("t", b"", 3, False)), ValueError, "will.qos"),
        (lambda: encode_connect(5), TypeError, "client_id"),  # type: ignore[arg-type]
        (lambda: MqttServerCodec(max_packet_size=1), ValueError, "max_packet_size"),
        (lambda: MqttServerCodec(max_packet_size=1.5), TypeError, "max_packet_size"),  # type: ignore[arg-type]
    ],
)
def test_encoder_argument_errors(call: object, exception: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(exception, match=match):
        call()


# --- properties ---------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_malformed_packet(data: bytes) -> None:
    for codec in (MqttServerCodec(max_packet_size=150), MqttClientCodec(max_packet_size=150)):
        try:
            packets = codec.feed(data)
        except MalformedPacket:
            continue
        assert isinstance(packets, list)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_random_chunks_raise_only_malformed_packet(chunks: list[bytes]) -> None:
    codec = MqttServerCodec()
    try:
        for chunk in chunks:
            codec.feed(chunk)
    except MalformedPacket:
        pass


topics = st.text(alphabet=st.characters(exclude_characters="+#\x00", codec="utf-8"), min_size=1, max_size=80)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(topics, st.binary(max_size=300), st.sampled_from([0, 1, 2]), st.booleans()),
        min_size=1,
        max_size=8,
    ),
    st.data(),
)
def test_publishes_survive_any_chunking(messages: list[tuple[str, bytes, int, bool]], data: st.DataObject) -> None:
    expected = [
        Publish(topic, payload, qos, retain, False, index + 1 if qos else None)
        for index, (topic, payload, qos, retain) in enumerate(messages)
    ]
    stream = b"".join(encode_publish(p.topic, p.payload, p.qos, p.packet_id, retain=p.retain) for p in expected)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    codec = MqttServerCodec()
    parsed: list[object] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        parsed.extend(codec.feed(stream[previous:cut]))
        previous = cut
    assert parsed == expected


@pytest.mark.parametrize("first_byte", [0x00, 0xF0, 0x20, 0x90])
def test_a_packet_type_clients_may_not_send_is_refused_from_its_fixed_header(first_byte: int) -> None:
    codec = MqttServerCodec()
    # Only the fixed header of a large packet has arrived: the codec must not wait for the body.
    with pytest.raises(MalformedPacket, match="may not be sent"):
        codec.feed(bytes([first_byte, 0xFF, 0xFF, 0x0F]))
