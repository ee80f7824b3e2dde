"""Tests for message size limits (protocol.md section 2.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aioiothub.protocol.limits import (
    MAX_C2D_BODY_BYTES,
    MAX_C2D_QUEUE_LENGTH,
    MAX_METHOD_PAYLOAD_BYTES,
    MAX_SUBSCRIPTIONS,
    MAX_TELEMETRY_BYTES,
    message_wire_size,
)
from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS


def test_constants() -> None:
    assert MAX_TELEMETRY_BYTES == 256 * 1024 == 262144
    assert MAX_C2D_BODY_BYTES == 64 * 1024
    assert MAX_METHOD_PAYLOAD_BYTES == 128 * 1024


def test_queue_and_subscription_limits() -> None:
    # protocol.md sections 2.2 and 2.7.
    assert MAX_C2D_QUEUE_LENGTH == 50
    assert MAX_SUBSCRIPTIONS == 5


def test_body_only() -> None:
    assert message_wire_size(b"", {}) == 0
    assert message_wire_size(b"hello", {}) == 5


def test_system_properties_count_values_only() -> None:
    properties = {"$.ct": "application/json", "$.ce": "utf-8", "$.mid": "m1"}
    assert message_wire_size(b"{}", properties) == 2 + 16 + 5 + 2


def test_application_properties_count_names_and_values() -> None:
    assert message_wire_size(b"", {"alert": "1", "flag": None, "empty": ""}) == 5 + 1 + 4 + 5


def test_non_ascii_text_counts_utf8_bytes() -> None:
    assert message_wire_size(b"", {"é": "€"}) == 2 + 3
    assert message_wire_size(b"", {"$.sub": "é"}) == 2


def test_every_system_key_counts_value_only() -> None:
    for key in SYSTEM_PROPERTY_KEYS:
        assert message_wire_size(b"", {key: "abc"}) == 3


def test_message_at_the_telemetry_limit_and_one_byte_over() -> None:
    properties = {"$.ct": "application/json", "$.ce": "utf-8", "temperature": "21.5"}
    overhead = 16 + 5 + len("temperature") + len("21.5")
    at_limit = b"x" * (MAX_TELEMETRY_BYTES - overhead)
    assert message_wire_size(at_limit, properties) == MAX_TELEMETRY_BYTES
    assert message_wire_size(at_limit, properties) <= MAX_TELEMETRY_BYTES
    assert message_wire_size(at_limit + b"x", properties) == MAX_TELEMETRY_BYTES + 1
    assert message_wire_size(at_limit + b"x", properties) > MAX_TELEMETRY_BYTES


@given(body=st.binary(), properties=st.dictionaries(st.text(min_size=1), st.none() | st.text()))
def test_size_matches_the_definition(body: bytes, properties: dict[str, str | None]) -> None:
    expected = len(body)
    for key, value in properties.items():
        if key not in SYSTEM_PROPERTY_KEYS:
            expected += len(key.encode("utf-8"))
        expected += len((value or "").encode("utf-8"))
    assert message_wire_size(body, properties) == expected
