"""DeviceProtocol: exact publishes out, exact events in, and the $rid table."""

from __future__ import annotations

import pytest

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.device import (
    CloudToDeviceMessage,
    DesiredPatch,
    DeviceProtocol,
    InputMessage,
    MethodInvoked,
    OutboundPublish,
    TwinResponse,
)
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES


def test_telemetry_topics_for_a_device_and_a_module() -> None:
    assert DeviceProtocol("my_device").telemetry(b"x", {}) == OutboundPublish(
        "devices/my_device/messages/events/", b"x", 1
    )
    module = DeviceProtocol("my_device", "my_module_id")
    assert module.telemetry(b"", {"key": "value", "key_two": "value2"}, qos=0, retain=True) == OutboundPublish(
        "devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2", b"", 0, True
    )


def test_telemetry_is_checked_against_the_hub_s_limit_and_qos() -> None:
    protocol = DeviceProtocol("d")
    protocol.telemetry(b"x" * MAX_TELEMETRY_BYTES, {})
    with pytest.raises(ValueError, match="262145 bytes on the wire"):
        protocol.telemetry(b"x" * MAX_TELEMETRY_BYTES, {"k": ""})
    with pytest.raises(ValueError, match="qos must be 0 or 1"):
        protocol.telemetry(b"x", {}, qos=2)


def test_twin_requests_get_increasing_rids_and_responses_carry_the_waiter_back() -> None:
    protocol: DeviceProtocol[str] = DeviceProtocol("d")
    get = protocol.begin_twin_request("get", b"", "waiter-1")
    patch = protocol.begin_twin_request("patch", b'{"a":1}', "waiter-2")
    assert get.publish == OutboundPublish("$iothub/twin/GET/?$rid=1", b"", 0)
    assert patch.publish == OutboundPublish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"a":1}', 0)
    assert [pending.request_id for pending in protocol.pending_twin_requests] == ["1", "2"]

    event = protocol.receive("$iothub/twin/res/204/?$rid=2&$version=16", b"")
    assert event == TwinResponse("2", 204, 16, b"", "waiter-2")
    assert protocol.receive("$iothub/twin/res/204/?$rid=2&$version=16", b"") is None  # answered once
    protocol.end_twin_request("1")
    assert protocol.receive("$iothub/twin/res/200/?$rid=1", b"{}") is None
    assert protocol.pending_twin_requests == []
    with pytest.raises(ValueError, match="kind"):
        protocol.begin_twin_request("delete", b"", "w")


def test_inbound_events() -> None:
    protocol: DeviceProtocol[object] = DeviceProtocol("pubsub", "mod")
    assert protocol.receive("$iothub/twin/PATCH/properties/desired/?$version=5", b'{"a":1}') == DesiredPatch(
        {"a": 1, "$version": 5}
    )
    assert protocol.receive("$iothub/methods/POST/component_one*TestMethod/?$rid=1", b'{"x":2}') == MethodInvoked(
        "component_one*TestMethod", "1", {"x": 2}, "component_one", "TestMethod"
    )
    assert protocol.receive("$iothub/methods/POST/reboot/?$rid=2", b"") == MethodInvoked(
        "reboot", "2", None, None, "reboot"
    )
    c2d = "devices/pubsub/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&k"
    assert protocol.receive(c2d, b"hi") == CloudToDeviceMessage(
        b"hi", {"$.mid": "m1", "$.to": "/devices/pubsub/messages/devicebound", "k": None}
    )
    assert protocol.receive("devices/pubsub/modules/mod/inputs/in1/a=b", b"") == InputMessage("in1", b"", {"a": "b"})


@pytest.mark.parametrize(
    ("topic", "payload", "complaint"),
    [
        ("devices/other/messages/devicebound/", b"", "unexpected topic"),
        ("$iothub/twin/PATCH/properties/desired/?$version=5", b"[1]", "not an object"),
        ("$iothub/twin/PATCH/properties/desired/?$version=5", b"[" * 100_000, "nested too deeply"),
        ("$iothub/methods/POST/m/?$rid=1", b"{", "not valid JSON"),
        ("$iothub/methods/POST/m/?$rid=1", b"\xff", "not valid JSON"),
        ("$iothub/twin/res/abc/?$rid=1", b"", "twin"),
    ],
)
def test_malformed_inbound_raises_protocol_error(topic: str, payload: bytes, complaint: str) -> None:
    protocol: DeviceProtocol[object] = DeviceProtocol("pubsub")
    with pytest.raises(ProtocolError, match=complaint):
        protocol.receive(topic, payload)


def test_subscriptions_are_remembered_in_order() -> None:
    protocol: DeviceProtocol[object] = DeviceProtocol("d", "m")
    protocol.want_subscription(*protocol.inputs_subscription())
    protocol.want_subscription("$iothub/methods/POST/#", 0)
    protocol.want_subscription("$iothub/methods/POST/#", 0)
    assert protocol.subscriptions == [("devices/d/modules/m/inputs/#", 1), ("$iothub/methods/POST/#", 0)]
    assert protocol.wants("$iothub/methods/POST/#")
    assert protocol.cloud_messages_subscription() == ("devices/d/messages/devicebound/#", 1)
    with pytest.raises(RuntimeError, match="module identity"):
        DeviceProtocol("d").inputs_subscription()


def test_method_response() -> None:
    assert DeviceProtocol("d").method_response("2", 200, b"{}") == OutboundPublish(
        "$iothub/methods/res/200/?$rid=2", b"{}", 1
    )
