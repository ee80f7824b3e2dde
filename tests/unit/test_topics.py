"""Tests for topic builders and parsers (protocol.md sections 2, 3 and 5)."""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.topics import (
    DPS_RESPONSE_SUBSCRIPTION,
    METHOD_RESPONSE_PREFIX,
    METHODS_SUBSCRIPTION,
    TWIN_DESIRED_SUBSCRIPTION,
    TWIN_RESPONSE_SUBSCRIPTION,
    TWIN_TOPIC_PREFIX,
    C2DTopic,
    DesiredPatchTopic,
    DpsRequestTopic,
    DpsResponseTopic,
    InputTopic,
    MethodRequestTopic,
    MethodResponseTopic,
    TelemetryTopic,
    TwinRequestTopic,
    TwinResponseTopic,
    allowed_subscriptions,
    c2d_subscription,
    c2d_topic,
    dps_poll_topic,
    dps_register_topic,
    dps_response_topic,
    input_subscription,
    input_topic,
    method_request_topic,
    method_response_topic,
    parse_c2d_topic,
    parse_dps_request_topic,
    parse_dps_response_topic,
    parse_input_topic,
    parse_method_request_topic,
    parse_method_response_topic,
    parse_telemetry_topic,
    parse_twin_desired_topic,
    parse_twin_request_topic,
    parse_twin_response_topic,
    telemetry_topic,
    twin_desired_topic,
    twin_get_topic,
    twin_patch_reported_topic,
    twin_response_topic,
)

IDENTITY_ALPHABET = string.ascii_letters + string.digits + "-.+%_#*?!(),=@;$':"

identities = st.text(alphabet=IDENTITY_ALPHABET, min_size=1, max_size=128)
request_ids = st.text(min_size=1)
statuses = st.integers(min_value=0, max_value=999)
versions = st.integers(min_value=0, max_value=2**63 - 1)
segments = st.text(min_size=1).filter(lambda text: not any(character in text for character in "/+#\x00"))
property_bags = st.dictionaries(st.text(min_size=1), st.none() | st.text())

PARSERS: list[Callable[[str], object]] = [
    parse_telemetry_topic,
    parse_c2d_topic,
    parse_input_topic,
    parse_twin_request_topic,
    parse_twin_response_topic,
    parse_twin_desired_topic,
    parse_method_request_topic,
    parse_method_response_topic,
    parse_dps_request_topic,
    parse_dps_response_topic,
]

PREFIXES = [
    "devices/d/messages/events/",
    "devices/d/modules/m/messages/events/",
    "devices/d/messages/devicebound/",
    "devices/d/modules/m/inputs/",
    "$iothub/twin/GET/",
    "$iothub/twin/PATCH/properties/reported/",
    "$iothub/twin/PATCH/properties/desired/",
    "$iothub/twin/res/",
    "$iothub/methods/POST/",
    "$iothub/methods/res/",
    "$dps/registrations/PUT/iotdps-register/",
    "$dps/registrations/GET/iotdps-get-operationstatus/",
    "$dps/registrations/res/",
]


# --- protocol.md section 5 vectors (azure-sdk-for-c) --------------------------------------------


def test_telemetry_vectors() -> None:
    assert telemetry_topic("my_device") == "devices/my_device/messages/events/"
    assert parse_telemetry_topic("devices/my_device/messages/events/") == TelemetryTopic("my_device", None, {})
    topic = "devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2"
    assert telemetry_topic("my_device", "my_module_id", {"key": "value", "key_two": "value2"}) == topic
    assert parse_telemetry_topic(topic) == TelemetryTopic(
        "my_device", "my_module_id", {"key": "value", "key_two": "value2"}
    )


def test_twin_request_vectors() -> None:
    assert twin_get_topic("id_one") == "$iothub/twin/GET/?$rid=id_one"
    assert twin_patch_reported_topic("id_one") == "$iothub/twin/PATCH/properties/reported/?$rid=id_one"
    assert parse_twin_request_topic("$iothub/twin/GET/?$rid=id_one") == TwinRequestTopic("GET", "id_one")
    assert parse_twin_request_topic("$iothub/twin/PATCH/properties/reported/?$rid=id_one") == TwinRequestTopic(
        "PATCH_REPORTED", "id_one"
    )


@pytest.mark.parametrize(
    ("topic", "status", "version"),
    [
        ("$iothub/twin/res/204/?$rid=id_one&$version=16", 204, 16),
        ("$iothub/twin/res/204/?$rid=id_one", 204, None),
        ("$iothub/twin/res/400/?$rid=id_one", 400, None),
    ],
)
def test_twin_response_vectors(topic: str, status: int, version: int | None) -> None:
    assert parse_twin_response_topic(topic) == TwinResponseTopic(status, "id_one", version)
    assert twin_response_topic(status, "id_one", version) == topic


def test_method_vectors() -> None:
    plain = "$iothub/methods/POST/TestMethod/?$rid=1"
    assert parse_method_request_topic(plain) == MethodRequestTopic("TestMethod", "1", None, "TestMethod")
    assert method_request_topic("TestMethod", "1") == plain
    component = "$iothub/methods/POST/component_one*TestMethod/?$rid=1"
    assert parse_method_request_topic(component) == MethodRequestTopic(
        "component_one*TestMethod", "1", "component_one", "TestMethod"
    )
    assert method_request_topic("component_one*TestMethod", "1") == component
    assert method_response_topic(200, "2") == "$iothub/methods/res/200/?$rid=2"
    assert parse_method_response_topic("$iothub/methods/res/200/?$rid=2") == MethodResponseTopic(200, "2")


@pytest.mark.parametrize(
    ("name", "component", "command"),
    [
        ("*TestMethod", None, "*TestMethod"),
        ("a*b*c", "a", "b*c"),
        ("a*", "a", ""),
        ("reboot", None, "reboot"),
    ],
)
def test_method_component_split(name: str, component: str | None, command: str) -> None:
    parsed = parse_method_request_topic(f"$iothub/methods/POST/{name}/?$rid=7")
    assert (parsed.name, parsed.component, parsed.command) == (name, component, command)


# --- protocol.md section 3 vectors (DPS) --------------------------------------------------------

OPERATION_ID = "4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d"


def test_dps_vectors() -> None:
    assert DPS_RESPONSE_SUBSCRIPTION == "$dps/registrations/res/#"
    register = "$dps/registrations/PUT/iotdps-register/?$rid=1"
    assert dps_register_topic("1") == register
    assert parse_dps_request_topic(register) == DpsRequestTopic("register", "1", None)
    poll = f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId={OPERATION_ID}"
    assert dps_poll_topic("1", OPERATION_ID) == poll
    assert parse_dps_request_topic(poll) == DpsRequestTopic("poll", "1", OPERATION_ID)


def test_dps_response_topics() -> None:
    assert dps_response_topic(202, "1", 3) == "$dps/registrations/res/202/?$rid=1&retry-after=3"
    assert dps_response_topic(200, "1") == "$dps/registrations/res/200/?$rid=1"
    assert parse_dps_response_topic("$dps/registrations/res/202/?$rid=1&retry-after=3") == DpsResponseTopic(202, "1", 3)
    assert parse_dps_response_topic("$dps/registrations/res/200/?$rid=1") == DpsResponseTopic(200, "1", None)


# --- protocol.md section 2 ----------------------------------------------------------------------


def test_real_c2d_topic_parses() -> None:
    topic = (
        "devices/pubsub/messages/devicebound/%24.mid=2c2db32a-8d5e-4d6f-9c2f-2b0f7c9e1a44"
        "&%24.to=%2Fdevices%2Fpubsub%2Fmessages%2Fdevicebound&%24.ce=utf-8&iothub-ack=none"
    )
    expected: dict[str, str | None] = {
        "$.mid": "2c2db32a-8d5e-4d6f-9c2f-2b0f7c9e1a44",
        "$.to": "/devices/pubsub/messages/devicebound",
        "$.ce": "utf-8",
        "iothub-ack": "none",
    }
    assert parse_c2d_topic(topic) == C2DTopic("pubsub", expected)
    assert c2d_topic("pubsub", expected) == topic


def test_c2d_topic_without_properties() -> None:
    assert c2d_topic("dev") == "devices/dev/messages/devicebound/"
    assert c2d_topic("dev", {}) == "devices/dev/messages/devicebound/"
    assert parse_c2d_topic("devices/dev/messages/devicebound/") == C2DTopic("dev", {})


def test_subscriptions() -> None:
    assert c2d_subscription("dev") == "devices/dev/messages/devicebound/#"
    assert input_subscription("dev", "mod") == "devices/dev/modules/mod/inputs/#"
    assert TWIN_RESPONSE_SUBSCRIPTION == "$iothub/twin/res/#"
    assert TWIN_DESIRED_SUBSCRIPTION == "$iothub/twin/PATCH/properties/desired/#"
    assert METHODS_SUBSCRIPTION == "$iothub/methods/POST/#"


def test_topic_prefixes() -> None:
    assert TWIN_TOPIC_PREFIX == "$iothub/twin/"
    assert METHOD_RESPONSE_PREFIX == "$iothub/methods/res/"
    for twin_topic in (
        twin_get_topic("1"),
        twin_patch_reported_topic("1"),
        twin_response_topic(204, "1", 2),
        twin_desired_topic(3),
        TWIN_RESPONSE_SUBSCRIPTION,
        TWIN_DESIRED_SUBSCRIPTION,
    ):
        assert twin_topic.startswith(TWIN_TOPIC_PREFIX)
    assert method_response_topic(200, "2") == f"{METHOD_RESPONSE_PREFIX}200/?$rid=2"
    assert parse_method_response_topic(f"{METHOD_RESPONSE_PREFIX}500/?$rid=7") == MethodResponseTopic(500, "7")
    assert not method_request_topic("m", "1").startswith(METHOD_RESPONSE_PREFIX)


def test_allowed_subscriptions() -> None:
    twin_and_methods = {"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"}
    assert allowed_subscriptions("dev", None) == frozenset(twin_and_methods | {"devices/dev/messages/devicebound/#"})
    assert allowed_subscriptions("dev", "mod") == frozenset(twin_and_methods | {"devices/dev/modules/mod/inputs/#"})


def test_input_topic() -> None:
    topic = "devices/dev/modules/mod/inputs/input1/%24.cdid=dev&k=v"
    assert input_topic("dev", "mod", "input1", {"$.cdid": "dev", "k": "v"}) == topic
    assert parse_input_topic(topic) == InputTopic("dev", "mod", "input1", {"$.cdid": "dev", "k": "v"})
    assert input_topic("dev", "mod", "input1") == "devices/dev/modules/mod/inputs/input1/"
    assert parse_input_topic("devices/dev/modules/mod/inputs/input1") == InputTopic("dev", "mod", "input1", {})


def test_system_properties_in_telemetry_topic() -> None:
    properties = {"$.ct": "application/json", "$.ce": "utf-8", "alert": "1"}
    topic = telemetry_topic("dev", properties=properties)
    assert topic == "devices/dev/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&alert=1"
    assert parse_telemetry_topic(topic).properties == properties


@pytest.mark.parametrize(
    ("topic", "properties"),
    [
        ("devices/dev/messages/events/a=1/", {"a": "1"}),
        ("devices/dev/messages/events//", {}),
        ("devices/dev/modules/m/messages/events/a/", {"a": None}),
    ],
)
def test_telemetry_tolerates_one_trailing_slash(topic: str, properties: dict[str, str | None]) -> None:
    assert parse_telemetry_topic(topic).properties == properties


def test_desired_topic() -> None:
    assert twin_desired_topic(5) == "$iothub/twin/PATCH/properties/desired/?$version=5"
    assert parse_twin_desired_topic("$iothub/twin/PATCH/properties/desired/?$version=5") == DesiredPatchTopic(5)
    assert parse_twin_desired_topic("$iothub/twin/PATCH/properties/desired/") == DesiredPatchTopic(None)
    assert parse_twin_desired_topic("$iothub/twin/PATCH/properties/desired/?x=1") == DesiredPatchTopic(None)


# --- query parameters ---------------------------------------------------------------------------


def test_response_parameters_in_any_order_with_unknown_extras() -> None:
    assert parse_twin_response_topic("$iothub/twin/res/204/?$version=16&foo=bar&$rid=id_one&flag") == (
        TwinResponseTopic(204, "id_one", 16)
    )
    assert parse_method_response_topic("$iothub/methods/res/500/?x=1&$rid=r") == MethodResponseTopic(500, "r")
    assert parse_dps_response_topic("$dps/registrations/res/429/?retry-after=10&$rid=9&z") == DpsResponseTopic(
        429, "9", 10
    )
    assert parse_dps_request_topic(
        f"$dps/registrations/GET/iotdps-get-operationstatus/?operationId={OPERATION_ID}&$rid=4&x=y"
    ) == DpsRequestTopic("poll", "4", OPERATION_ID)
    assert parse_twin_desired_topic("$iothub/twin/PATCH/properties/desired/?a=b&$version=3") == DesiredPatchTopic(3)


def test_request_ids_are_percent_encoded_and_decoded() -> None:
    assert twin_get_topic("a b&c=d/é") == "$iothub/twin/GET/?$rid=a%20b%26c%3Dd%2F%C3%A9"
    assert parse_twin_request_topic("$iothub/twin/GET/?$rid=a%20b%26c%3Dd%2F%C3%A9").request_id == "a b&c=d/é"
    assert parse_twin_response_topic("$iothub/twin/res/200/?%24rid=a%2fb").request_id == "a/b"
    assert parse_method_request_topic("$iothub/methods/POST/m/?$rid=a+b").request_id == "a+b"


@pytest.mark.parametrize("bad", ["+1", " 1", "1 ", "1.0", "-1", "", "0x10", "1e3", "\u0661", "\u00b2", "1" * 21])
def test_statuses_and_versions_must_be_decimal_integers(bad: str) -> None:
    topics = [
        f"$iothub/twin/res/{bad}/?$rid=1",
        f"$iothub/twin/res/200/?$rid=1&$version={bad}",
        f"$iothub/twin/PATCH/properties/desired/?$version={bad}",
        f"$iothub/methods/res/{bad}/?$rid=1",
        f"$dps/registrations/res/{bad}/?$rid=1",
        f"$dps/registrations/res/202/?$rid=1&retry-after={bad}",
    ]
    parsers = [
        parse_twin_response_topic,
        parse_twin_response_topic,
        parse_twin_desired_topic,
        parse_method_response_topic,
        parse_dps_response_topic,
        parse_dps_response_topic,
    ]
    for parse, topic in zip(parsers, topics, strict=True):
        with pytest.raises(ProtocolError, match=r"not a decimal integer"):
            parse(topic)


def test_version_parameter_without_value_is_rejected() -> None:
    with pytest.raises(ProtocolError, match=r"not a decimal integer"):
        parse_twin_response_topic("$iothub/twin/res/204/?$rid=1&$version")


def test_leading_zeros_are_decimal() -> None:
    assert parse_twin_response_topic("$iothub/twin/res/0200/?$rid=1&$version=007") == TwinResponseTopic(200, "1", 7)


@pytest.mark.parametrize(
    ("parse", "topic"),
    [
        (parse_twin_request_topic, "$iothub/twin/GET/"),
        (parse_twin_request_topic, "$iothub/twin/GET/?"),
        (parse_twin_request_topic, "$iothub/twin/GET/?$rid="),
        (parse_twin_request_topic, "$iothub/twin/GET/?$rid"),
        (parse_twin_response_topic, "$iothub/twin/res/200/?$version=1"),
        (parse_method_request_topic, "$iothub/methods/POST/m/?rid=1"),
        (parse_method_response_topic, "$iothub/methods/res/200/"),
        (parse_dps_request_topic, "$dps/registrations/PUT/iotdps-register/?x=1"),
        (parse_dps_request_topic, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1"),
        (parse_dps_response_topic, "$dps/registrations/res/200/?retry-after=1"),
    ],
)
def test_missing_required_parameters_are_rejected(parse: Callable[[str], object], topic: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(topic)
    assert repr(topic) in str(caught.value)


# --- mismatches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "topic"),
    [
        (parse_telemetry_topic, "devices/dev/messages/devicebound/"),
        (parse_telemetry_topic, "devices/dev/messages/events"),
        (parse_telemetry_topic, "devices//messages/events/"),
        (parse_telemetry_topic, "devices/dev"),
        (parse_telemetry_topic, "devices/dev/modules/mod"),
        (parse_telemetry_topic, "devices/dev/modules//messages/events/"),
        (parse_telemetry_topic, "devices/d v/messages/events/"),
        (parse_telemetry_topic, "Devices/dev/messages/events/"),
        (parse_telemetry_topic, "devices/dev/messages/events/a=%zz"),
        (parse_c2d_topic, "devices/dev/messages/events/"),
        (parse_c2d_topic, "devices/dev/modules/m/messages/devicebound/"),
        (parse_input_topic, "devices/dev/inputs/in/"),
        (parse_input_topic, "devices/dev/modules/m/inputs//"),
        (parse_input_topic, "devices/dev/modules/m/outputs/x/"),
        (parse_twin_request_topic, "$iothub/twin/PATCH/properties/desired/?$rid=1"),
        (parse_twin_request_topic, "$iothub/twin/GET?$rid=1"),
        (parse_twin_response_topic, "$iothub/twin/res/200"),
        (parse_twin_response_topic, "$iothub/twin/res/200/$rid=1"),
        (parse_twin_desired_topic, "$iothub/twin/PATCH/properties/reported/?$version=1"),
        (parse_twin_desired_topic, "$iothub/twin/PATCH/properties/desired/$version=1"),
        (parse_method_request_topic, "$iothub/methods/POST/m"),
        (parse_method_request_topic, "$iothub/methods/POST//?$rid=1"),
        (parse_method_response_topic, "$iothub/methods/POST/200/?$rid=1"),
        (parse_dps_request_topic, "$dps/registrations/PUT/iotdps-register?$rid=1"),
        (parse_dps_response_topic, "$iothub/twin/res/200/?$rid=1"),
    ],
)
def test_non_matching_topics_raise_protocol_error_with_the_topic(parse: Callable[[str], object], topic: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(topic)
    assert repr(topic) in str(caught.value)


# --- builder argument checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: telemetry_topic(""), ValueError, "^device_id: must not be empty"),
        (lambda: telemetry_topic("a/b"), ValueError, "^device_id: 'a/b' contains '/'"),
        (lambda: telemetry_topic(1), TypeError, "^device_id: expected str"),  # type: ignore[arg-type]
        (lambda: telemetry_topic("d", "m/x"), ValueError, "^module_id: "),
        (lambda: telemetry_topic("d", properties={"": "x"}), ValueError, "^properties: "),
        (lambda: c2d_subscription(""), ValueError, "^device_id: "),
        (lambda: c2d_topic("d", {"k": 1}), TypeError, r"^properties\['k'\]: "),  # type: ignore[dict-item]
        (lambda: input_subscription("d", ""), ValueError, "^module_id: "),
        (lambda: input_topic("d", "m", "a/b"), ValueError, "^input_name: 'a/b' must not contain '/'"),
        (lambda: input_topic("d", "m", ""), ValueError, "^input_name: must not be empty"),
        (lambda: twin_get_topic(""), ValueError, "^request_id: must not be empty"),
        (lambda: twin_get_topic(5), TypeError, "^request_id: expected str"),  # type: ignore[arg-type]
        (lambda: twin_patch_reported_topic(None), TypeError, "^request_id: "),  # type: ignore[arg-type]
        (lambda: twin_response_topic("200", "1"), TypeError, "^status: expected int, got str"),  # type: ignore[arg-type]
        (lambda: twin_response_topic(True, "1"), TypeError, "^status: expected int, got bool"),
        (lambda: twin_response_topic(-1, "1"), ValueError, "^status: must not be negative"),
        (lambda: twin_response_topic(200, "1", -3), ValueError, "^version: must not be negative"),
        (lambda: twin_desired_topic(1.0), TypeError, "^version: expected int"),  # type: ignore[arg-type]
        (lambda: method_request_topic("a/b", "1"), ValueError, "^method_name: "),
        (lambda: method_request_topic("a#", "1"), ValueError, "^method_name: "),
        (lambda: method_request_topic("a+", "1"), ValueError, "^method_name: "),
        (lambda: method_request_topic("", "1"), ValueError, "^method_name: must not be empty"),
        (lambda: method_response_topic(200, ""), ValueError, "^request_id: "),
        (lambda: dps_poll_topic("1", ""), ValueError, "^operation_id: must not be empty"),
        (lambda: dps_response_topic(202, "1", -1), ValueError, "^retry_after: must not be negative"),
        (lambda: allowed_subscriptions("a/b", None), ValueError, "^device_id: "),
    ],
)
def test_builders_validate_arguments(call: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_status_accepts_int_enums() -> None:
    assert method_response_topic(HTTPStatus.OK, "1") == "$iothub/methods/res/200/?$rid=1"


# --- round trips --------------------------------------------------------------------------------


@given(device_id=identities, module_id=st.none() | identities, properties=property_bags)
def test_telemetry_round_trip(device_id: str, module_id: str | None, properties: dict[str, str | None]) -> None:
    parsed = parse_telemetry_topic(telemetry_topic(device_id, module_id, properties))
    assert parsed == TelemetryTopic(device_id, module_id, properties)


@given(device_id=identities, properties=property_bags)
def test_c2d_round_trip(device_id: str, properties: dict[str, str | None]) -> None:
    assert parse_c2d_topic(c2d_topic(device_id, properties)) == C2DTopic(device_id, properties)


@given(device_id=identities, module_id=identities, input_name=segments, properties=property_bags)
def test_input_round_trip(device_id: str, module_id: str, input_name: str, properties: dict[str, str | None]) -> None:
    parsed = parse_input_topic(input_topic(device_id, module_id, input_name, properties))
    assert parsed == InputTopic(device_id, module_id, input_name, properties)


@given(request_id=request_ids)
def test_twin_request_round_trip(request_id: str) -> None:
    assert parse_twin_request_topic(twin_get_topic(request_id)) == TwinRequestTopic("GET", request_id)
    assert parse_twin_request_topic(twin_patch_reported_topic(request_id)) == TwinRequestTopic(
        "PATCH_REPORTED", request_id
    )


@given(status=statuses, request_id=request_ids, version=st.none() | versions)
def test_twin_response_round_trip(status: int, request_id: str, version: int | None) -> None:
    parsed = parse_twin_response_topic(twin_response_topic(status, request_id, version))
    assert parsed == TwinResponseTopic(status, request_id, version)


@given(version=versions)
def test_twin_desired_round_trip(version: int) -> None:
    assert parse_twin_desired_topic(twin_desired_topic(version)) == DesiredPatchTopic(version)


@given(name=segments, request_id=request_ids)
def test_method_request_round_trip(name: str, request_id: str) -> None:
    parsed = parse_method_request_topic(method_request_topic(name, request_id))
    assert (parsed.name, parsed.request_id) == (name, request_id)
    if parsed.component is None:
        assert parsed.command == name
    else:
        assert f"{parsed.component}*{parsed.command}" == name
        assert parsed.component
        assert "*" not in parsed.component


@given(status=statuses, request_id=request_ids)
def test_method_response_round_trip(status: int, request_id: str) -> None:
    parsed = parse_method_response_topic(method_response_topic(status, request_id))
    assert parsed == MethodResponseTopic(status, request_id)


@given(request_id=request_ids, operation_id=request_ids)
def test_dps_request_round_trip(request_id: str, operation_id: str) -> None:
    assert parse_dps_request_topic(dps_register_topic(request_id)) == DpsRequestTopic("register", request_id, None)
    assert parse_dps_request_topic(dps_poll_topic(request_id, operation_id)) == DpsRequestTopic(
        "poll", request_id, operation_id
    )


@given(status=statuses, request_id=request_ids, retry_after=st.none() | st.integers(0, 10**6))
def test_dps_response_round_trip(status: int, request_id: str, retry_after: int | None) -> None:
    parsed = parse_dps_response_topic(dps_response_topic(status, request_id, retry_after))
    assert parsed == DpsResponseTopic(status, request_id, retry_after)


# --- robustness ---------------------------------------------------------------------------------

topic_like = st.text() | st.builds(
    lambda prefix, tail: prefix + tail,
    st.sampled_from(PREFIXES),
    st.text(alphabet="?/&=%$rid01aF+ -é\x00") | st.text(),
)


@pytest.mark.parametrize("parse", PARSERS, ids=lambda parse: parse.__name__)
@given(topic=topic_like)
def test_parsers_raise_only_protocol_error(parse: Callable[[str], object], topic: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse(topic)


def test_filter_prefix_is_the_literal_start_of_a_multi_level_filter() -> None:
    from aioiothub.protocol.topics import filter_prefix

    assert filter_prefix("$iothub/methods/POST/#") == "$iothub/methods/POST/"
    assert filter_prefix("devices/d1/messages/devicebound/#") == "devices/d1/messages/devicebound/"
    with pytest.raises(ValueError, match="topic_filter"):
        filter_prefix("$iothub/twin/res/")
