from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.exceptions import ProtocolError
from aioiothub.message import Message
from aioiothub.protocol.limits import message_wire_size
from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS

EXPIRY = datetime(2021, 4, 21, 11, 30, 16, tzinfo=UTC)
CREATED = datetime(2021, 4, 21, 11, 0, 0, 250000, tzinfo=UTC)


def _full_message() -> Message:
    return Message(
        b"payload",
        content_type="application/json",
        content_encoding="utf-8",
        message_id="mid-1",
        correlation_id="cid-1",
        user_id="uid-1",
        expiry_time=EXPIRY,
        creation_time=CREATED,
        component="thermostat1",
        interface_id="urn:azureiot:Security:SecurityAgent:1",
        output_name="out1",
        properties={"alert": "1", "iothub-creation-time-utc": "2021-04-21T11:30:16Z"},
    )


# --- body -----------------------------------------------------------------------------------------------


def test_default_message_is_empty() -> None:
    message = Message()
    assert message.body == b""
    assert message.wire_properties() == {}
    assert dict(message.properties) == {}
    assert (message.input_name, message.ack, message.to) == (None, None, None)


def test_str_body_is_utf8() -> None:
    assert Message("héllo").body == "héllo".encode()


def test_bytes_like_body_becomes_bytes() -> None:
    body = Message(bytearray(b"abc")).body  # type: ignore[arg-type]
    assert body == b"abc"
    assert type(body) is bytes


@pytest.mark.parametrize("body", [{"a": 1}, 5, None, ["x"]])
def test_other_bodies_are_refused(body: object) -> None:
    with pytest.raises(TypeError, match=r"body must be bytes or str.*Message\.json"):
        Message(body)  # type: ignore[arg-type]


# --- JSON -----------------------------------------------------------------------------------------------


def test_json_is_compact_and_sets_content_type_and_encoding() -> None:
    message = Message.json({"temperature": 21.5, "tags": ["a", "b"]}, message_id="m1")
    assert message.body == b'{"temperature":21.5,"tags":["a","b"]}'
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.message_id == "m1"
    assert message.wire_properties() == {"$.mid": "m1", "$.ct": "application/json", "$.ce": "utf-8"}


def test_json_non_ascii_is_utf8() -> None:
    message = Message.json({"city": "Zürich"})
    assert message.body == '{"city":"Zürich"}'.encode()
    assert message.json_body() == {"city": "Zürich"}


def test_json_content_type_can_be_overridden() -> None:
    message = Message.json([1], content_type="application/cloudevents+json", properties={"k": "v"})
    assert message.content_type == "application/cloudevents+json"
    assert dict(message.properties) == {"k": "v"}


@pytest.mark.parametrize("value", [math.nan, math.inf, {"x": -math.inf}])
def test_json_refuses_non_json_floats(value: Any) -> None:
    with pytest.raises(ValueError, match="value"):
        Message.json(value)


@pytest.mark.parametrize("value", [{1, 2}, object(), {"x": b"bytes"}])
def test_json_refuses_unserialisable_values(value: Any) -> None:
    with pytest.raises(TypeError, match="value is not JSON-serialisable"):
        Message.json(value)


def test_json_body() -> None:
    assert Message(b'{"a":[1,2]}').json_body() == {"a": [1, 2]}
    with pytest.raises(ValueError, match="Expecting value"):
        Message(b"not json").json_body()


# --- wire properties ------------------------------------------------------------------------------------


def test_wire_properties_use_system_keys() -> None:
    assert _full_message().wire_properties() == {
        "$.mid": "mid-1",
        "$.cid": "cid-1",
        "$.uid": "uid-1",
        "$.ct": "application/json",
        "$.ce": "utf-8",
        "$.exp": "2021-04-21T11:30:16Z",
        "$.ctime": "2021-04-21T11:00:00.250000Z",
        "$.sub": "thermostat1",
        "$.ifid": "urn:azureiot:Security:SecurityAgent:1",
        "$.on": "out1",
        "alert": "1",
        "iothub-creation-time-utc": "2021-04-21T11:30:16Z",
    }


def test_times_are_sent_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    message = Message(expiry_time=datetime(2021, 4, 21, 13, 30, 16, tzinfo=plus_two))
    assert message.wire_properties() == {"$.exp": "2021-04-21T11:30:16Z"}


def test_wire_properties_returns_a_fresh_dict() -> None:
    message = Message(properties={"k": "v"})
    message.wire_properties()["k"] = "changed"
    assert message.wire_properties() == {"k": "v"}


def test_wire_size() -> None:
    message = _full_message()
    assert message.wire_size() == message_wire_size(message.body, message.wire_properties())
    # body 3 + "$.mid" value 2 + "k" 1 + "vv" 2: system property names do not count.
    assert Message(b"abc", message_id="m1", properties={"k": "vv"}).wire_size() == 8


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["naïve", "ключ", "k\u00a0"])
def test_non_ascii_property_name(name: str) -> None:
    with pytest.raises(ValueError, match="must be ASCII") as excinfo:
        Message(properties={name: "v"})
    assert repr(name) in str(excinfo.value)


def test_non_ascii_property_value_names_the_property() -> None:
    with pytest.raises(ValueError, match=r"properties\['city'\] must be ASCII"):
        Message(properties={"city": "Zürich"})


def test_empty_property_name() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Message(properties={"": "v"})


@pytest.mark.parametrize("name", sorted(SYSTEM_PROPERTY_KEYS))
def test_system_keys_are_not_application_properties(name: str) -> None:
    with pytest.raises(ValueError, match="system property") as excinfo:
        Message(properties={name: "v"})
    assert repr(name) in str(excinfo.value)


@pytest.mark.parametrize("value", [1, None, b"v", 1.5])
def test_property_value_must_be_str(value: object) -> None:
    with pytest.raises(TypeError, match=r"properties\['count'\] must be a str"):
        Message(properties={"count": value})  # type: ignore[dict-item]


def test_property_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="names must be str"):
        Message(properties={1: "v"})  # type: ignore[dict-item]


def test_properties_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="properties must be a mapping"):
        Message(properties=[("k", "v")])  # type: ignore[arg-type]


def test_message_id_length() -> None:
    assert Message(message_id="x" * 128).message_id == "x" * 128
    with pytest.raises(ValueError, match="message_id must be at most 128 characters, got 129"):
        Message(message_id="x" * 129)


@pytest.mark.parametrize(
    "argument",
    [
        "content_type",
        "content_encoding",
        "message_id",
        "correlation_id",
        "user_id",
        "component",
        "interface_id",
        "output_name",
    ],
)
def test_system_text_must_be_ascii_str(argument: str) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be ASCII"):
        Message(**{argument: "é"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"{argument} must be a str"):
        Message(**{argument: 5})  # type: ignore[arg-type]


@pytest.mark.parametrize("argument", ["expiry_time", "creation_time"])
def test_times_must_be_aware_datetimes(argument: str) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be timezone-aware"):
        Message(**{argument: datetime(2021, 1, 1)})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"{argument} must be a datetime"):
        Message(**{argument: "2021-01-01T00:00:00Z"})  # type: ignore[arg-type]


def test_properties_are_copied_and_read_only() -> None:
    source = {"k": "v"}
    message = Message(properties=source)
    source["k"] = "changed"
    source["extra"] = "x"
    assert dict(message.properties) == {"k": "v"}
    with pytest.raises(TypeError):
        message.properties["k"] = "x"  # type: ignore[index]


def test_messages_without_properties_share_one_empty_mapping() -> None:
    assert Message(b"a").properties is Message(b"b").properties
    assert Message(properties={}).properties is Message().properties


def test_message_is_immutable_and_slotted() -> None:
    message = Message(b"x")
    with pytest.raises(AttributeError):
        message.message_id = "m"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.anything = 1  # type: ignore[attr-defined]
    assert not hasattr(message, "__dict__")


def test_replace() -> None:
    original = _full_message()
    changed = original.replace(output_name="out2", properties={"k": "v"})
    assert changed.output_name == "out2"
    assert dict(changed.properties) == {"k": "v"}
    assert changed.message_id == original.message_id
    assert original.output_name == "out1"
    assert original.replace() == original
    with pytest.raises(ValueError, match="message_id"):
        original.replace(message_id="x" * 200)
    with pytest.raises(TypeError, match="unknown arguments: colour"):
        original.replace(colour="red")


# --- from_wire ------------------------------------------------------------------------------------------


def test_from_wire_maps_system_keys_back() -> None:
    message = Message.from_wire(
        b"hello",
        {
            "$.mid": "2c2db32a",
            "$.to": "/devices/pubsub/messages/devicebound",
            "$.ce": "utf-8",
            "iothub-ack": "full",
            "$.exp": "2021-04-21T11:30:16Z",
            "$.ctime": "2021-04-21T11:00:00.250000Z",
            "$.cid": "c",
            "$.uid": "u",
            "$.ct": "text/plain",
            "$.sub": "comp",
            "$.ifid": "if",
            "$.on": "out",
            "k": "v",
        },
        input_name="input1",
    )
    assert message.body == b"hello"
    assert message.message_id == "2c2db32a"
    assert message.to == "/devices/pubsub/messages/devicebound"
    assert message.ack == "full"
    assert message.content_encoding == "utf-8"
    assert message.content_type == "text/plain"
    assert message.correlation_id == "c"
    assert message.user_id == "u"
    assert message.component == "comp"
    assert message.interface_id == "if"
    assert message.output_name == "out"
    assert message.expiry_time == EXPIRY
    assert message.creation_time == CREATED
    assert message.expiry_time is not None
    assert message.expiry_time.tzinfo is not None
    assert message.input_name == "input1"
    assert dict(message.properties) == {"k": "v"}


def test_from_wire_round_trips_received_fields() -> None:
    received = Message.from_wire(b"x", {"$.to": "/devices/d/messages/devicebound", "iothub-ack": "none"})
    assert received.wire_properties() == {"$.to": "/devices/d/messages/devicebound", "iothub-ack": "none"}
    assert Message.from_wire(received.body, received.wire_properties()) == received


def test_from_wire_time_without_offset_is_utc() -> None:
    message = Message.from_wire(b"", {"$.exp": "2021-04-21T11:30:16"})
    assert message.expiry_time == EXPIRY


@pytest.mark.parametrize("key", ["$.exp", "$.ctime"])
def test_from_wire_malformed_time_is_protocol_error(key: str) -> None:
    with pytest.raises(ProtocolError, match="is not an ISO 8601 time: 'yesterday'") as excinfo:
        Message.from_wire(b"", {key: "yesterday"})
    assert key in str(excinfo.value)


def test_from_wire_missing_values() -> None:
    message = Message.from_wire(b"", {"$.mid": None, "flag": None})
    assert message.message_id is None
    assert dict(message.properties) == {"flag": ""}


def test_from_wire_accepts_what_outgoing_messages_may_not() -> None:
    message = Message.from_wire(b"", {"city": "Zürich", "$.mid": "m" * 300})
    assert message.properties["city"] == "Zürich"
    assert message.message_id == "m" * 300


def test_from_wire_without_properties_shares_the_empty_mapping() -> None:
    assert Message.from_wire(b"", {}).properties is Message().properties


# --- equality and repr ----------------------------------------------------------------------------------


def test_equality_covers_every_field() -> None:
    assert _full_message() == _full_message()
    base = _full_message()
    variants: dict[str, object] = {
        "body": b"other",
        "content_type": "text/plain",
        "content_encoding": "utf-16",
        "message_id": "mid-2",
        "correlation_id": "cid-2",
        "user_id": "uid-2",
        "expiry_time": EXPIRY + timedelta(seconds=1),
        "creation_time": CREATED + timedelta(seconds=1),
        "component": "c2",
        "interface_id": "if2",
        "output_name": "out2",
        "properties": {"alert": "2"},
    }
    for name, value in variants.items():
        assert base.replace(**{name: value}) != base, name
    wire = base.wire_properties()
    assert Message.from_wire(base.body, wire) == base
    assert Message.from_wire(base.body, wire, input_name="in") != base
    assert Message.from_wire(base.body, {**wire, "iothub-ack": "full"}) != base
    assert Message.from_wire(base.body, {**wire, "$.to": "/devices/d"}) != base


def test_equal_instants_in_other_zones_are_equal() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert Message(expiry_time=EXPIRY) == Message(expiry_time=EXPIRY.astimezone(plus_two))


def test_not_equal_to_other_types() -> None:
    assert Message(b"x") != b"x"
    assert Message() != None  # noqa: E711


def test_repr_shows_body_length_not_body() -> None:
    message = Message(b"secret sensor data" * 100, message_id="m1", properties={"k": "v"})
    text = repr(message)
    assert text == "Message(body=<1800 bytes>, message_id='m1', properties={'k': 'v'})"
    assert "secret" not in text
    assert repr(Message()) == "Message(body=<0 bytes>)"


# --- round trip -----------------------------------------------------------------------------------------

_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@given(
    body=st.binary(max_size=50),
    message_id=st.none() | _ascii,
    content_type=st.none() | _ascii,
    expiry_time=_times,
    creation_time=_times,
    component=st.none() | _ascii,
    properties=st.dictionaries(
        _ascii.filter(lambda name: bool(name) and name not in SYSTEM_PROPERTY_KEYS), _ascii, max_size=5
    ),
)
def test_from_wire_of_wire_properties_round_trips(
    body: bytes,
    message_id: str | None,
    content_type: str | None,
    expiry_time: datetime | None,
    creation_time: datetime | None,
    component: str | None,
    properties: dict[str, str],
) -> None:
    message = Message(
        body,
        message_id=message_id,
        content_type=content_type,
        expiry_time=expiry_time,
        creation_time=creation_time,
        component=component,
        properties=properties,
    )
    assert Message.from_wire(message.body, message.wire_properties()) == message
    assert message.wire_size() >= len(body)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=10,
    )
)
def test_json_round_trips(value: Any) -> None:
    message = Message.json(value)
    assert message.json_body() == value
    assert message.body == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
