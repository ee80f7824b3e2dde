"""The MQTT 3.1.1 encoders: one ``encode_*`` function per packet, for either direction.

Each builds the exact bytes of one packet and checks its arguments first: a value MQTT forbids
raises ``TypeError`` or ``ValueError`` naming the argument, and nothing is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aioiothub.protocol.mqtt.packets import MAX_REMAINING_LENGTH, SUBACK_CODES, Will

__all__ = [
    "encode_connack",
    "encode_connect",
    "encode_disconnect",
    "encode_pingreq",
    "encode_pingresp",
    "encode_puback",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "encode_unsubscribe",
]

_MAX_STRING_BYTES: Final = 65_535


def _remaining_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {length} bytes exceeds the MQTT limit of {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        digit = length & 0x7F
        length >>= 7
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _encode_text(text: str, argument: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{argument} must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{argument} may not contain U+0000")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{argument} is not encodable as UTF-8 (lone surrogate)") from None
    if len(raw) > _MAX_STRING_BYTES:
        raise ValueError(f"{argument} is longer than {_MAX_STRING_BYTES} bytes of UTF-8")
    return len(raw).to_bytes(2, "big") + raw


def _encode_binary(data: bytes, argument: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{argument} must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > _MAX_STRING_BYTES:
        raise ValueError(f"{argument} is longer than {_MAX_STRING_BYTES} bytes")
    return len(raw).to_bytes(2, "big") + raw


def _check_packet_id(packet_id: int, argument: str = "packet_id") -> bytes:
    if isinstance(packet_id, bool) or not isinstance(packet_id, int):
        raise TypeError(f"{argument} must be an int, not {type(packet_id).__name__}")
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"{argument} must be between 1 and 65535, got {packet_id}")
    return packet_id.to_bytes(2, "big")


def _check_qos(qos: int, argument: str) -> int:
    if isinstance(qos, bool) or not isinstance(qos, int):
        raise TypeError(f"{argument} must be an int, not {type(qos).__name__}")
    if qos not in (0, 1, 2):
        raise ValueError(f"{argument} must be 0, 1 or 2, got {qos}")
    return qos


def _check_topic_name(topic: str, argument: str) -> bytes:
    encoded = _encode_text(topic, argument)
    if not topic:
        raise ValueError(f"{argument} may not be empty")
    if "+" in topic or "#" in topic:
        raise ValueError(f"{argument} may not contain the wildcards + or #: {topic!r}")
    return encoded


def encode_connect(
    client_id: str,
    username: str | None = None,
    password: bytes | str | None = None,
    keepalive: int = 60,
    clean_session: bool = True,
    will: Will | None = None,
    *,
    protocol_level: int = 4,
) -> bytes:
    """Encode a CONNECT packet (client to server).

    Args:
        client_id: the client identifier.
        username: the user name, or ``None`` to leave it out.
        password: the password (a ``str`` is sent as UTF-8), or ``None``; needs a user name.
        keepalive: the keep-alive interval in seconds, 0 to 65535.
        clean_session: the CleanSession flag.
        will: a last-will message, or ``None``.
        protocol_level: 4 for MQTT 3.1.1 (protocol name ``MQTT``) or 3 for MQTT 3.1 (``MQIsdp``).

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    if protocol_level == 4:
        header = b"\x00\x04MQTT\x04"
    elif protocol_level == 3:
        header = b"\x00\x06MQIsdp\x03"
    else:
        raise ValueError(f"protocol_level must be 3 or 4, got {protocol_level}")
    if isinstance(keepalive, bool) or not isinstance(keepalive, int):
        raise TypeError(f"keepalive must be an int, not {type(keepalive).__name__}")
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive must be between 0 and 65535, got {keepalive}")
    if password is not None and username is None:
        raise ValueError("password needs a username (MQTT 3.1.1 forbids a password alone)")
    flags = 0x02 if clean_session else 0
    parts = [_encode_text(client_id, "client_id")]
    if will is not None:
        flags |= 0x04 | (_check_qos(will.qos, "will.qos") << 3) | (0x20 if will.retain else 0)
        parts.append(_check_topic_name(will.topic, "will.topic"))
        parts.append(_encode_binary(will.payload, "will.payload"))
    if username is not None:
        flags |= 0x80
        parts.append(_encode_text(username, "username"))
    if password is not None:
        flags |= 0x40
        raw_password = password.encode("utf-8") if isinstance(password, str) else password
        parts.append(_encode_binary(raw_password, "password"))
    body = header + bytes((flags,)) + keepalive.to_bytes(2, "big") + b"".join(parts)
    return b"\x10" + _remaining_length(len(body)) + body


def encode_connack(session_present: bool, return_code: int) -> bytes:
    """Encode a CONNACK packet (server to client).

    Raises:
        ValueError: ``return_code`` is not 0 to 255, or ``session_present`` is set on a refusal.
    """
    if isinstance(return_code, bool) or not isinstance(return_code, int):
        raise TypeError(f"return_code must be an int, not {type(return_code).__name__}")
    if not 0 <= return_code <= 0xFF:
        raise ValueError(f"return_code must be between 0 and 255, got {return_code}")
    if session_present and return_code:
        raise ValueError("session_present must be False when return_code is not 0 (MQTT-3.2.2-4)")
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int | None = None,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """Encode a PUBLISH packet (either direction).

    Args:
        topic: the topic name; no wildcards.
        payload: the application message.
        qos: 0, 1 or 2.
        packet_id: 1 to 65535 for QoS 1 and 2; must be ``None`` for QoS 0.
        retain: the RETAIN flag.
        dup: the DUP flag (a re-delivery); not allowed with QoS 0.

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    encoded_topic = _check_topic_name(topic, "topic")
    _check_qos(qos, "qos")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    first = 0x30 | (qos << 1) | (0x01 if retain else 0)
    if qos:
        if packet_id is None:
            raise ValueError(f"packet_id is required for QoS {qos}")
        variable = encoded_topic + _check_packet_id(packet_id)
        if dup:
            first |= 0x08
    else:
        if packet_id is not None:
            raise ValueError("packet_id must be None for QoS 0")
        if dup:
            raise ValueError("dup must be False for QoS 0 (MQTT-3.3.1-2)")
        variable = encoded_topic
    return b"".join((bytes((first,)), _remaining_length(len(variable) + len(payload)), variable, payload))


def encode_puback(packet_id: int) -> bytes:
    """Encode a PUBACK packet (either direction)."""
    return b"\x40\x02" + _check_packet_id(packet_id)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """Encode a SUBSCRIBE packet (client to server) for ``(topic filter, QoS)`` pairs.

    Raises:
        ValueError: ``filters`` is empty, or a filter or QoS is invalid.
    """
    if not filters:
        raise ValueError("filters may not be empty")
    parts = [_check_packet_id(packet_id)]
    for index, (topic_filter, qos) in enumerate(filters):
        if not topic_filter:
            raise ValueError(f"filters[{index}] may not be an empty topic filter")
        parts.append(_encode_text(topic_filter, f"filters[{index}]"))
        parts.append(bytes((_check_qos(qos, f"filters[{index}] QoS"),)))
    body = b"".join(parts)
    return b"\x82" + _remaining_length(len(body)) + body


def encode_suback(packet_id: int, granted: Sequence[int]) -> bytes:
    """Encode a SUBACK packet (server to client): one of 0, 1, 2 or 0x80 per requested filter.

    Raises:
        ValueError: ``granted`` is empty or holds another value.
    """
    if not granted:
        raise ValueError("granted may not be empty")
    for index, code in enumerate(granted):
        if code not in SUBACK_CODES:
            raise ValueError(f"granted[{index}] must be 0, 1, 2 or 0x80, got {code!r}")
    body = _check_packet_id(packet_id) + bytes(granted)
    return b"\x90" + _remaining_length(len(body)) + body


def encode_unsubscribe(packet_id: int, filters: Sequence[str]) -> bytes:
    """Encode an UNSUBSCRIBE packet (client to server).

    Raises:
        ValueError: ``filters`` is empty or holds an empty filter.
    """
    if not filters:
        raise ValueError("filters may not be empty")
    parts = [_check_packet_id(packet_id)]
    for index, topic_filter in enumerate(filters):
        if not topic_filter:
            raise ValueError(f"filters[{index}] may not be an empty topic filter")
        parts.append(_encode_text(topic_filter, f"filters[{index}]"))
    body = b"".join(parts)
    return b"\xa2" + _remaining_length(len(body)) + body


def encode_unsuback(packet_id: int) -> bytes:
    """Encode an UNSUBACK packet (server to client)."""
    return b"\xb0\x02" + _check_packet_id(packet_id)


def encode_pingreq() -> bytes:
    """Encode a PINGREQ packet (client to server)."""
    return b"\xc0\x00"


def encode_pingresp() -> bytes:
    """Encode a PINGRESP packet (server to client)."""
    return b"\xd0\x00"


def encode_disconnect() -> bytes:
    """Encode a DISCONNECT packet (client to server)."""
    return b"\xe0\x00"
