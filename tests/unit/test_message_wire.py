"""Exact property bags of :class:`Message`: the encoding and decoding its field metadata drives."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aioiothub.exceptions import ProtocolError
from aioiothub.message import Message
from aioiothub.protocol.limits import message_wire_size
from aioiothub.protocol.properties import (
    SYSTEM_PROPERTY_KEYS,
    SYSTEM_PROPERTY_ORDER,
    decode_property_bag,
    encode_property_bag,
)

EXPIRY = datetime(2021, 4, 21, 13, 30, 16, tzinfo=timezone(timedelta(hours=2)))
CREATED = datetime(2021, 4, 21, 11, 0, 0, 250000, tzinfo=UTC)

# Every system property a device sends, in the order the bag carries them, then the application ones.
SENT_BAG = (
    "%24.mid=mid-1&%24.cid=cid-1&%24.uid=uid-1&%24.ct=application%2Fjson&%24.ce=utf-8"
    "&%24.exp=2021-04-21T11%3A30%3A16Z&%24.ctime=2021-04-21T11%3A00%3A00.250000Z&%24.sub=thermostat1"
    "&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&%24.on=out1&alert=1&site=north%20wing"
)
# The same with the two that only the hub sets, which go after the others.
RECEIVED_BAG = (
    "%24.mid=mid-1&%24.cid=cid-1&%24.uid=uid-1&%24.ct=application%2Fjson&%24.ce=utf-8"
    "&%24.exp=2021-04-21T11%3A30%3A16Z&%24.ctime=2021-04-21T11%3A00%3A00.250000Z&%24.sub=thermostat1"
    "&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&%24.on=out1"
    "&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&iothub-ack=full&alert=1&site=north%20wing"
)


def _every_system_property() -> Message:
    # Keywords in the constructor's order, not the bag's: the bag's order is the protocol's.
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
        properties={"alert": "1", "site": "north wing"},
    )


def test_every_system_property_encodes_to_the_exact_bag() -> None:
    assert encode_property_bag(_every_system_property().wire_properties()) == SENT_BAG


def test_the_exact_bag_decodes_to_every_field() -> None:
    message = Message.from_wire(b"payload", decode_property_bag(SENT_BAG))
    assert message == _every_system_property()
    assert message.expiry_time == EXPIRY
    assert message.expiry_time is not None
    assert message.expiry_time.utcoffset() == timedelta(0)
    assert (message.to, message.ack, message.input_name) == (None, None, None)


def test_received_bag_decodes_and_encodes_back_exactly() -> None:
    message = Message.from_wire(b"payload", decode_property_bag(RECEIVED_BAG), input_name="in1")
    assert message.to == "/devices/dev1/messages/devicebound"
    assert message.ack == "full"
    assert message.input_name == "in1"
    assert message.creation_time == CREATED
    assert dict(message.properties) == {"alert": "1", "site": "north wing"}
    assert encode_property_bag(message.wire_properties()) == RECEIVED_BAG


def test_bag_order_is_the_protocols_whatever_the_received_order() -> None:
    shuffled = dict(reversed(list(decode_property_bag(RECEIVED_BAG).items())))
    message = Message.from_wire(b"", shuffled)
    system = [key for key in message.wire_properties() if key in SYSTEM_PROPERTY_KEYS]
    assert system == list(SYSTEM_PROPERTY_ORDER)
    # Application properties keep the order they were given in.
    assert list(message.properties) == ["site", "alert"]


def test_each_system_field_alone() -> None:
    for key, name, value, text in [
        ("$.mid", "message_id", "m", "m"),
        ("$.cid", "correlation_id", "c", "c"),
        ("$.uid", "user_id", "u", "u"),
        ("$.ct", "content_type", "text/plain", "text/plain"),
        ("$.ce", "content_encoding", "utf-8", "utf-8"),
        ("$.exp", "expiry_time", EXPIRY, "2021-04-21T11:30:16Z"),
        ("$.ctime", "creation_time", CREATED, "2021-04-21T11:00:00.250000Z"),
        ("$.sub", "component", "c1", "c1"),
        ("$.ifid", "interface_id", "i1", "i1"),
        ("$.on", "output_name", "o1", "o1"),
    ]:
        message = Message(**{name: value})  # type: ignore[arg-type]
        assert message.wire_properties() == {key: text}, name
        assert getattr(Message.from_wire(b"", {key: text}), name) == value, name


def test_field_metadata_covers_the_protocols_system_keys() -> None:
    keys = [item.metadata["aioiothub.system_property"].key for item in dataclasses.fields(Message) if item.metadata]
    assert sorted(keys) == sorted(SYSTEM_PROPERTY_ORDER)
    assert frozenset(SYSTEM_PROPERTY_ORDER) == SYSTEM_PROPERTY_KEYS
    assert len(SYSTEM_PROPERTY_ORDER) == len(SYSTEM_PROPERTY_KEYS)


def test_received_only_fields_are_not_constructor_arguments() -> None:
    init = {item.name for item in dataclasses.fields(Message) if item.init}
    assert {"to", "ack", "input_name"}.isdisjoint(init)
    with pytest.raises(TypeError, match="unknown arguments: ack, to"):
        Message().replace(to="x", ack="full")


def test_wire_properties_is_documented_and_named_as_a_method() -> None:
    assert Message.wire_properties.__qualname__ == "Message.wire_properties"
    assert Message.wire_properties.__module__ == "aioiothub.message"
    assert Message.wire_properties.__doc__ is not None
    assert "property bag to send" in Message.wire_properties.__doc__


def test_wire_size_counts_the_encoded_bag() -> None:
    message = _every_system_property()
    wire = message.wire_properties()
    assert message.wire_size() == message_wire_size(message.body, wire)
    system_values = sum(len(value) for key, value in wire.items() if key in SYSTEM_PROPERTY_KEYS)
    assert message.wire_size() == len(b"payload") + system_values + len("alert1") + len("sitenorth wing")


@pytest.mark.parametrize("key", ["$.exp", "$.ctime"])
def test_decoding_a_bad_time_names_its_key(key: str) -> None:
    with pytest.raises(ProtocolError, match=rf"message property \{key} is not an ISO 8601 time"):
        Message.from_wire(b"", {key: "2021-13-45"})
