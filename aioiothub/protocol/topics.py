"""Topic names and subscription filters of IoT Hub and DPS, with a parser for every builder.

Builders produce the exact text a peer publishes; they take the role of the side that publishes
(device role unless the docstring says *hub role*). Parsers accept what the other side may send:
query parameters in any order, unknown parameters ignored, request ids percent-decoded, statuses and
versions as plain decimal integers. Anything else raises :class:`~aioiothub.exceptions.ProtocolError`
quoting the topic. Identifiers in topics are never percent-encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import validate_identity
from aioiothub.protocol.properties import decode_property_bag, encode_property_bag, quote_component

__all__ = [
    "DPS_RESPONSE_SUBSCRIPTION",
    "METHODS_SUBSCRIPTION",
    "METHOD_RESPONSE_PREFIX",
    "TWIN_DESIRED_SUBSCRIPTION",
    "TWIN_RESPONSE_SUBSCRIPTION",
    "TWIN_TOPIC_PREFIX",
    "C2DTopic",
    "DesiredPatchTopic",
    "DpsRequestTopic",
    "DpsResponseTopic",
    "InputTopic",
    "MethodRequestTopic",
    "MethodResponseTopic",
    "TelemetryTopic",
    "TwinRequestTopic",
    "TwinResponseTopic",
    "allowed_subscriptions",
    "c2d_subscription",
    "c2d_topic",
    "dps_poll_topic",
    "dps_register_topic",
    "dps_response_topic",
    "filter_prefix",
    "input_subscription",
    "input_topic",
    "method_request_topic",
    "method_response_topic",
    "parse_c2d_topic",
    "parse_dps_request_topic",
    "parse_dps_response_topic",
    "parse_input_topic",
    "parse_method_request_topic",
    "parse_method_response_topic",
    "parse_telemetry_topic",
    "parse_twin_desired_topic",
    "parse_twin_request_topic",
    "parse_twin_response_topic",
    "telemetry_topic",
    "twin_desired_topic",
    "twin_get_topic",
    "twin_patch_reported_topic",
    "twin_response_topic",
]

TWIN_RESPONSE_SUBSCRIPTION = "$iothub/twin/res/#"
"""Filter for the hub's answers to twin GET and reported-property PATCH requests."""

TWIN_DESIRED_SUBSCRIPTION = "$iothub/twin/PATCH/properties/desired/#"
"""Filter for desired-property change notifications."""

METHODS_SUBSCRIPTION = "$iothub/methods/POST/#"
"""Filter for direct method requests."""

DPS_RESPONSE_SUBSCRIPTION = "$dps/registrations/res/#"
"""Filter for DPS answers; the only subscription a DPS connection may hold."""

TWIN_TOPIC_PREFIX = "$iothub/twin/"
"""Every twin topic begins with it: requests, responses and desired-property notifications."""

METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"
"""Every direct method response topic begins with it."""

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_PATCH_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_TWIN_PATCH_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_TWIN_RESPONSE = "$iothub/twin/res/"
_METHOD_REQUEST = "$iothub/methods/POST/"
_METHOD_RESPONSE = METHOD_RESPONSE_PREFIX
_DPS_REGISTER = "$dps/registrations/PUT/iotdps-register/"
_DPS_POLL = "$dps/registrations/GET/iotdps-get-operationstatus/"
_DPS_RESPONSE = "$dps/registrations/res/"

# Long enough for any status or a 64-bit version, short enough that int() never sees a huge string.
_MAX_INTEGER_DIGITS = 20


# --- argument checks (caller mistakes) ---------------------------------------------------------


def _check_request_id(request_id: str, argument: str = "request_id") -> str:
    encoded = quote_component(request_id, argument=argument)
    if not encoded:
        raise ValueError(f"{argument}: must not be empty")
    return encoded


def _check_status(status: int, argument: str = "status") -> int:
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"{argument}: expected int, got {type(status).__name__}")
    if status < 0:
        raise ValueError(f"{argument}: must not be negative, got {status}")
    # int() turns an IntEnum such as http.HTTPStatus into its plain value for formatting.
    return int(status)


def _check_segment(value: str, argument: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument}: must not be empty")
    # A topic level cannot hold "/", and MQTT forbids wildcards and NUL in topic names.
    for forbidden in "/+#\x00":
        if forbidden in value:
            raise ValueError(f"{argument}: {value!r} must not contain {forbidden!r}")
    return value


def _bag(properties: Mapping[str, str | None] | None) -> str:
    return encode_property_bag(properties) if properties else ""


# --- parsing helpers (network data) ------------------------------------------------------------


def _mismatch(topic: str, what: str) -> ProtocolError:
    return ProtocolError(f"not a {what} topic: {topic!r}")


def _decode_bag(bag: str, topic: str) -> dict[str, str | None]:
    try:
        return decode_property_bag(bag)
    except ProtocolError as exc:
        raise ProtocolError(f"{exc} (topic {topic!r})") from None


def _query(rest: str, topic: str, what: str) -> dict[str, str | None]:
    if not rest.startswith("?"):
        raise _mismatch(topic, what)
    return _decode_bag(rest[1:], topic)


def _parse_integer(text: str | None, name: str, topic: str) -> int:
    # str.isdigit() alone admits superscripts and other scripts' digits, so insist on ASCII.
    if text is None or not (0 < len(text) <= _MAX_INTEGER_DIGITS and text.isascii() and text.isdigit()):
        raise ProtocolError(f"{name} {text!r} is not a decimal integer in topic {topic!r}")
    return int(text)


def _optional_integer(parameters: dict[str, str | None], key: str, topic: str) -> int | None:
    if key not in parameters:
        return None
    return _parse_integer(parameters[key], key, topic)


def _required_text(parameters: dict[str, str | None], key: str, topic: str) -> str:
    value = parameters.get(key)
    if not value:
        raise ProtocolError(f"missing or empty {key} in topic {topic!r}")
    return value


def _check_identifier(value: str, name: str, topic: str) -> None:
    try:
        validate_identity(value, name)
    except ValueError as exc:
        raise ProtocolError(f"{exc} in topic {topic!r}") from None


def _split_identity(topic: str, what: str) -> tuple[str, str | None, str]:
    """Split ``devices/{d}[/modules/{m}]/{rest}`` into device id, module id and rest."""
    if not topic.startswith("devices/"):
        raise _mismatch(topic, what)
    device_id, separator, rest = topic[8:].partition("/")
    if not separator:
        raise _mismatch(topic, what)
    _check_identifier(device_id, "device id", topic)
    module_id: str | None = None
    if rest.startswith("modules/"):
        module_id, separator, rest = rest[8:].partition("/")
        if not separator:
            raise _mismatch(topic, what)
        _check_identifier(module_id, "module id", topic)
    return device_id, module_id, rest


def _strip_trailing_slash(bag: str) -> str:
    return bag[:-1] if bag.endswith("/") else bag


def _split_status(remainder: str, topic: str, what: str) -> tuple[int, dict[str, str | None]]:
    status_text, separator, rest = remainder.partition("/")
    if not separator:
        raise _mismatch(topic, what)
    status = _parse_integer(status_text, "status", topic)
    return status, _query(rest, topic, what)


# --- device-to-cloud telemetry -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    """A parsed telemetry topic.

    Attributes:
        device_id: the sending device.
        module_id: the sending module, or ``None`` for a device.
        properties: the decoded property bag (system and application properties).
    """

    device_id: str
    module_id: str | None
    properties: dict[str, str | None]


def telemetry_topic(
    device_id: str,
    module_id: str | None = None,
    properties: Mapping[str, str | None] | None = None,
) -> str:
    """Build the topic a device or module publishes telemetry on.

    Args:
        device_id: the device id.
        module_id: the module id, for a module identity.
        properties: system and application properties with their wire names, or ``None``.

    Returns:
        ``devices/{d}/messages/events/{bag}`` or ``devices/{d}/modules/{m}/messages/events/{bag}``;
        the bag is empty when there are no properties.

    Raises:
        TypeError, ValueError: an id or property is invalid.
    """
    validate_identity(device_id, "device_id")
    bag = encode_property_bag(properties) if properties else ""
    if module_id is None:
        return f"devices/{device_id}/messages/events/{bag}"
    validate_identity(module_id, "module_id")
    return f"devices/{device_id}/modules/{module_id}/messages/events/{bag}"


def parse_telemetry_topic(topic: str) -> TelemetryTopic:
    """Parse a telemetry topic (hub role); a single trailing ``/`` after the bag is tolerated.

    Args:
        topic: the topic of a device's PUBLISH.

    Returns:
        The identity and decoded properties.

    Raises:
        ProtocolError: the topic is not a telemetry topic or its bag is malformed.
    """
    device_id, module_id, rest = _split_identity(topic, "telemetry")
    if not rest.startswith("messages/events/"):
        raise _mismatch(topic, "telemetry")
    properties = _decode_bag(_strip_trailing_slash(rest[16:]), topic)
    return TelemetryTopic(device_id=device_id, module_id=module_id, properties=properties)


# --- cloud-to-device messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class C2DTopic:
    """A parsed cloud-to-device message topic.

    Attributes:
        device_id: the receiving device.
        properties: the decoded property bag (system and application properties).
    """

    device_id: str
    properties: dict[str, str | None]


def filter_prefix(topic_filter: str) -> str:
    """The literal start of a ``…/#`` filter: every topic the filter matches begins with it.

    Dispatch by prefix is cheaper than parsing each topic to learn its kind.

    Example:
        >>> filter_prefix(METHODS_SUBSCRIPTION)
        '$iothub/methods/POST/'
    """
    if not topic_filter.endswith("/#"):
        raise ValueError(f"topic_filter must end with '/#', not {topic_filter!r}")
    return topic_filter[:-1]


def c2d_subscription(device_id: str) -> str:
    """Build the only filter IoT Hub accepts for cloud-to-device messages.

    Args:
        device_id: the device id.

    Returns:
        ``devices/{device_id}/messages/devicebound/#``.

    Raises:
        TypeError, ValueError: the id is invalid.
    """
    validate_identity(device_id, "device_id")
    return f"devices/{device_id}/messages/devicebound/#"


def c2d_topic(device_id: str, properties: Mapping[str, str | None] | None = None) -> str:
    """Build the topic a cloud-to-device message is delivered on (hub role).

    Args:
        device_id: the device id.
        properties: system and application properties with their wire names, or ``None``.

    Returns:
        ``devices/{device_id}/messages/devicebound/{bag}``.

    Raises:
        TypeError, ValueError: the id or a property is invalid.
    """
    validate_identity(device_id, "device_id")
    return f"devices/{device_id}/messages/devicebound/{_bag(properties)}"


def parse_c2d_topic(topic: str) -> C2DTopic:
    """Parse the topic of a cloud-to-device message; a single trailing ``/`` is tolerated.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The device id and decoded properties.

    Raises:
        ProtocolError: the topic is not a cloud-to-device topic or its bag is malformed.
    """
    device_id, module_id, rest = _split_identity(topic, "cloud-to-device")
    if module_id is not None or not rest.startswith("messages/devicebound/"):
        raise _mismatch(topic, "cloud-to-device")
    properties = _decode_bag(_strip_trailing_slash(rest[21:]), topic)
    return C2DTopic(device_id=device_id, properties=properties)


# --- module inputs (IoT Edge) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputTopic:
    """A parsed module input topic.

    Attributes:
        device_id: the receiving module's device.
        module_id: the receiving module.
        input_name: the input the message was routed to.
        properties: the decoded property bag.
    """

    device_id: str
    module_id: str
    input_name: str
    properties: dict[str, str | None]


def input_subscription(device_id: str, module_id: str) -> str:
    """Build the filter a module subscribes to for its inputs.

    Args:
        device_id: the device id.
        module_id: the module id.

    Returns:
        ``devices/{device_id}/modules/{module_id}/inputs/#``.

    Raises:
        TypeError, ValueError: an id is invalid.
    """
    validate_identity(device_id, "device_id")
    validate_identity(module_id, "module_id")
    return f"devices/{device_id}/modules/{module_id}/inputs/#"


def input_topic(
    device_id: str,
    module_id: str,
    input_name: str,
    properties: Mapping[str, str | None] | None = None,
) -> str:
    """Build the topic a message routed to a module input is delivered on (hub role).

    Args:
        device_id: the device id.
        module_id: the module id.
        input_name: the input name.
        properties: system and application properties with their wire names, or ``None``.

    Returns:
        ``devices/{device_id}/modules/{module_id}/inputs/{input_name}/{bag}``.

    Raises:
        TypeError, ValueError: an id, the input name or a property is invalid.
    """
    validate_identity(device_id, "device_id")
    validate_identity(module_id, "module_id")
    _check_segment(input_name, "input_name")
    return f"devices/{device_id}/modules/{module_id}/inputs/{input_name}/{_bag(properties)}"


def parse_input_topic(topic: str) -> InputTopic:
    """Parse the topic of a message delivered to a module input.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The identity, input name and decoded properties.

    Raises:
        ProtocolError: the topic is not a module input topic or its bag is malformed.
    """
    device_id, module_id, rest = _split_identity(topic, "module input")
    if module_id is None or not rest.startswith("inputs/"):
        raise _mismatch(topic, "module input")
    input_name, _, bag = rest[7:].partition("/")
    if not input_name:
        raise _mismatch(topic, "module input")
    properties = _decode_bag(_strip_trailing_slash(bag), topic)
    return InputTopic(device_id=device_id, module_id=module_id, input_name=input_name, properties=properties)


# --- device twin -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwinRequestTopic:
    """A parsed twin request topic.

    Attributes:
        operation: ``"GET"`` for a full twin read, ``"PATCH_REPORTED"`` for a reported-property update.
        request_id: the decoded ``$rid``.
    """

    operation: Literal["GET", "PATCH_REPORTED"]
    request_id: str


@dataclass(frozen=True, slots=True)
class TwinResponseTopic:
    """A parsed twin response topic.

    Attributes:
        status: the status code, e.g. 200, 204, 400 or 429.
        request_id: the decoded ``$rid`` of the request answered.
        version: the new reported ``$version`` after a PATCH, or ``None`` when absent.
    """

    status: int
    request_id: str
    version: int | None


@dataclass(frozen=True, slots=True)
class DesiredPatchTopic:
    """A parsed desired-property notification topic.

    Attributes:
        version: the desired ``$version`` the patch produces, or ``None`` when absent.
    """

    version: int | None


def twin_get_topic(request_id: str) -> str:
    """Build the topic of a twin GET request.

    Args:
        request_id: the request id; percent-encoded here.

    Returns:
        ``$iothub/twin/GET/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: the request id is not a non-empty ``str``.
    """
    return f"$iothub/twin/GET/?$rid={_check_request_id(request_id)}"


def twin_patch_reported_topic(request_id: str) -> str:
    """Build the topic of a reported-properties PATCH request.

    Args:
        request_id: the request id; percent-encoded here.

    Returns:
        ``$iothub/twin/PATCH/properties/reported/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: the request id is not a non-empty ``str``.
    """
    return f"$iothub/twin/PATCH/properties/reported/?$rid={_check_request_id(request_id)}"


def parse_twin_request_topic(topic: str) -> TwinRequestTopic:
    """Parse a twin GET or reported-PATCH request topic (hub role).

    Args:
        topic: the topic of a device's PUBLISH.

    Returns:
        The operation and request id.

    Raises:
        ProtocolError: the topic is not a twin request or has no ``$rid``.
    """
    operation: Literal["GET", "PATCH_REPORTED"]
    if topic.startswith(_TWIN_GET):
        operation, rest = "GET", topic[len(_TWIN_GET) :]
    elif topic.startswith(_TWIN_PATCH_REPORTED):
        operation, rest = "PATCH_REPORTED", topic[len(_TWIN_PATCH_REPORTED) :]
    else:
        raise _mismatch(topic, "twin request")
    parameters = _query(rest, topic, "twin request")
    return TwinRequestTopic(operation=operation, request_id=_required_text(parameters, "$rid", topic))


def twin_response_topic(status: int, request_id: str, version: int | None = None) -> str:
    """Build the topic of a twin response (hub role).

    Args:
        status: the status code.
        request_id: the request id being answered; percent-encoded here.
        version: the new reported ``$version`` (for a PATCH), or ``None``.

    Returns:
        ``$iothub/twin/res/{status}/?$rid={request_id}[&$version={version}]``.

    Raises:
        TypeError, ValueError: an argument is of the wrong type, empty or negative.
    """
    text = f"$iothub/twin/res/{_check_status(status)}/?$rid={_check_request_id(request_id)}"
    if version is None:
        return text
    return f"{text}&$version={_check_status(version, 'version')}"


def parse_twin_response_topic(topic: str) -> TwinResponseTopic:
    """Parse the topic of a twin response.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The status, request id and optional version.

    Raises:
        ProtocolError: the topic is not a twin response, or its status, ``$rid`` or ``$version`` is bad.
    """
    if not topic.startswith(_TWIN_RESPONSE):
        raise _mismatch(topic, "twin response")
    status, parameters = _split_status(topic[len(_TWIN_RESPONSE) :], topic, "twin response")
    return TwinResponseTopic(
        status=status,
        request_id=_required_text(parameters, "$rid", topic),
        version=_optional_integer(parameters, "$version", topic),
    )


def twin_desired_topic(version: int) -> str:
    """Build the topic of a desired-property notification (hub role).

    Args:
        version: the desired ``$version`` after the change.

    Returns:
        ``$iothub/twin/PATCH/properties/desired/?$version={version}``.

    Raises:
        TypeError, ValueError: the version is not a non-negative ``int``.
    """
    return f"$iothub/twin/PATCH/properties/desired/?$version={_check_status(version, 'version')}"


def parse_twin_desired_topic(topic: str) -> DesiredPatchTopic:
    """Parse the topic of a desired-property notification.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The version, or ``None`` when the topic carries none.

    Raises:
        ProtocolError: the topic is not a desired notification or its ``$version`` is bad.
    """
    if not topic.startswith(_TWIN_PATCH_DESIRED):
        raise _mismatch(topic, "desired properties")
    rest = topic[len(_TWIN_PATCH_DESIRED) :]
    if not rest:
        return DesiredPatchTopic(version=None)
    parameters = _query(rest, topic, "desired properties")
    return DesiredPatchTopic(version=_optional_integer(parameters, "$version", topic))


# --- direct methods ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodRequestTopic:
    """A parsed direct method request topic.

    Attributes:
        name: the full method name as sent.
        request_id: the decoded ``$rid`` to answer with.
        component: the Plug and Play component for ``component*command`` names, else ``None``.
        command: the command part of a component method, else the full name.
    """

    name: str
    request_id: str
    component: str | None
    command: str


@dataclass(frozen=True, slots=True)
class MethodResponseTopic:
    """A parsed direct method response topic.

    Attributes:
        status: the status the device chose.
        request_id: the decoded ``$rid`` of the request answered.
    """

    status: int
    request_id: str


def method_request_topic(method_name: str, request_id: str) -> str:
    """Build the topic a direct method request is delivered on (hub role).

    Args:
        method_name: the method name, ``{component}*{command}`` for a component command.
        request_id: the request id; percent-encoded here.

    Returns:
        ``$iothub/methods/POST/{method_name}/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: the method name or request id is invalid.
    """
    _check_segment(method_name, "method_name")
    return f"$iothub/methods/POST/{method_name}/?$rid={_check_request_id(request_id)}"


def parse_method_request_topic(topic: str) -> MethodRequestTopic:
    """Parse the topic of a direct method request.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The method name, its component/command split and the request id.

    Raises:
        ProtocolError: the topic is not a method request or has no ``$rid``.
    """
    if not topic.startswith(_METHOD_REQUEST):
        raise _mismatch(topic, "method request")
    name, separator, rest = topic[len(_METHOD_REQUEST) :].partition("/")
    if not name or not separator:
        raise _mismatch(topic, "method request")
    parameters = _query(rest, topic, "method request")
    component: str | None = None
    command = name
    star = name.find("*")
    if star > 0:
        component, command = name[:star], name[star + 1 :]
    return MethodRequestTopic(
        name=name,
        request_id=_required_text(parameters, "$rid", topic),
        component=component,
        command=command,
    )


def method_response_topic(status: int, request_id: str) -> str:
    """Build the topic a device answers a direct method on.

    Args:
        status: the status to report to the caller.
        request_id: the request id being answered; percent-encoded here.

    Returns:
        ``$iothub/methods/res/{status}/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: an argument is of the wrong type, empty or negative.
    """
    return f"$iothub/methods/res/{_check_status(status)}/?$rid={_check_request_id(request_id)}"


def parse_method_response_topic(topic: str) -> MethodResponseTopic:
    """Parse the topic of a direct method response (hub role).

    Args:
        topic: the topic of a device's PUBLISH.

    Returns:
        The status and request id.

    Raises:
        ProtocolError: the topic is not a method response, or its status or ``$rid`` is bad.
    """
    if not topic.startswith(_METHOD_RESPONSE):
        raise _mismatch(topic, "method response")
    status, parameters = _split_status(topic[len(_METHOD_RESPONSE) :], topic, "method response")
    return MethodResponseTopic(status=status, request_id=_required_text(parameters, "$rid", topic))


# --- Device Provisioning Service ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DpsRequestTopic:
    """A parsed DPS request topic.

    Attributes:
        operation: ``"register"`` to start a registration, ``"poll"`` to ask for its status.
        request_id: the decoded ``$rid``.
        operation_id: the ``operationId`` being polled, ``None`` for a register request.
    """

    operation: Literal["register", "poll"]
    request_id: str
    operation_id: str | None


@dataclass(frozen=True, slots=True)
class DpsResponseTopic:
    """A parsed DPS response topic.

    Attributes:
        status: the status code; 202 means poll again, 200 the final answer, >= 429 retry later.
        request_id: the decoded ``$rid`` of the request answered.
        retry_after: seconds to wait before the next request, or ``None`` when absent.
    """

    status: int
    request_id: str
    retry_after: int | None


def dps_register_topic(request_id: str) -> str:
    """Build the topic of a DPS register request.

    Args:
        request_id: the request id; percent-encoded here.

    Returns:
        ``$dps/registrations/PUT/iotdps-register/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: the request id is not a non-empty ``str``.
    """
    return f"$dps/registrations/PUT/iotdps-register/?$rid={_check_request_id(request_id)}"


def dps_poll_topic(request_id: str, operation_id: str) -> str:
    """Build the topic of a DPS operation-status poll.

    Args:
        request_id: the request id; percent-encoded here.
        operation_id: the ``operationId`` from the register answer; percent-encoded here.

    Returns:
        ``$dps/registrations/GET/iotdps-get-operationstatus/?$rid={request_id}&operationId={operation_id}``.

    Raises:
        TypeError, ValueError: an argument is not a non-empty ``str``.
    """
    rid = _check_request_id(request_id)
    operation = _check_request_id(operation_id, "operation_id")
    return f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation}"


def parse_dps_request_topic(topic: str) -> DpsRequestTopic:
    """Parse a DPS register or poll request topic (hub role).

    Args:
        topic: the topic of a device's PUBLISH.

    Returns:
        The operation, request id and (for a poll) operation id.

    Raises:
        ProtocolError: the topic is not a DPS request or lacks ``$rid`` (or ``operationId`` for a poll).
    """
    if topic.startswith(_DPS_REGISTER):
        parameters = _query(topic[len(_DPS_REGISTER) :], topic, "DPS request")
        return DpsRequestTopic(
            operation="register", request_id=_required_text(parameters, "$rid", topic), operation_id=None
        )
    if topic.startswith(_DPS_POLL):
        parameters = _query(topic[len(_DPS_POLL) :], topic, "DPS request")
        return DpsRequestTopic(
            operation="poll",
            request_id=_required_text(parameters, "$rid", topic),
            operation_id=_required_text(parameters, "operationId", topic),
        )
    raise _mismatch(topic, "DPS request")


def dps_response_topic(status: int, request_id: str, retry_after: int | None = None) -> str:
    """Build the topic of a DPS response (hub role).

    Args:
        status: the status code.
        request_id: the request id being answered; percent-encoded here.
        retry_after: seconds the device should wait before its next request, or ``None``.

    Returns:
        ``$dps/registrations/res/{status}/?$rid={request_id}[&retry-after={retry_after}]``.

    Raises:
        TypeError, ValueError: an argument is of the wrong type, empty or negative.
    """
    text = f"$dps/registrations/res/{_check_status(status)}/?$rid={_check_request_id(request_id)}"
    if retry_after is None:
        return text
    return f"{text}&retry-after={_check_status(retry_after, 'retry_after')}"


def parse_dps_response_topic(topic: str) -> DpsResponseTopic:
    """Parse the topic of a DPS response.

    Args:
        topic: the topic of the service's PUBLISH.

    Returns:
        The status, request id and optional retry-after seconds.

    Raises:
        ProtocolError: the topic is not a DPS response, or its status, ``$rid`` or ``retry-after`` is bad.
    """
    if not topic.startswith(_DPS_RESPONSE):
        raise _mismatch(topic, "DPS response")
    status, parameters = _split_status(topic[len(_DPS_RESPONSE) :], topic, "DPS response")
    return DpsResponseTopic(
        status=status,
        request_id=_required_text(parameters, "$rid", topic),
        retry_after=_optional_integer(parameters, "retry-after", topic),
    )


# --- subscription policy -----------------------------------------------------------------------


def allowed_subscriptions(device_id: str, module_id: str | None) -> frozenset[str]:
    """List the exact subscription filters IoT Hub accepts from an identity.

    Devices may subscribe to cloud-to-device messages, modules to their inputs; both to twin
    responses, desired-property notifications and direct methods. (A DPS connection may subscribe
    only to :data:`DPS_RESPONSE_SUBSCRIPTION`.)

    Args:
        device_id: the device id.
        module_id: the module id, or ``None`` for a device.

    Returns:
        The allowed filters.

    Raises:
        TypeError, ValueError: an id is invalid.
    """
    messages = c2d_subscription(device_id) if module_id is None else input_subscription(device_id, module_id)
    return frozenset({messages, TWIN_RESPONSE_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION, METHODS_SUBSCRIPTION})
