"""Topics of messages: device-to-cloud telemetry, cloud-to-device messages and IoT Edge module inputs.

Each kind has its parsed form (a frozen dataclass), a builder for the topic it is published on and a
parser; cloud-to-device messages and module inputs have the subscription filter that receives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aioiothub.protocol.connect import validate_identity
from aioiothub.protocol.properties import encode_property_bag
from aioiothub.protocol.topics.fields import (
    check_segment,
    decode_bag,
    mismatch,
    property_bag,
    split_identity,
    strip_trailing_slash,
)

__all__ = [
    "C2DTopic",
    "InputTopic",
    "TelemetryTopic",
    "c2d_subscription",
    "c2d_topic",
    "input_subscription",
    "input_topic",
    "parse_c2d_topic",
    "parse_input_topic",
    "parse_telemetry_topic",
    "telemetry_topic",
]


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
    device_id, module_id, rest = split_identity(topic, "telemetry")
    if not rest.startswith("messages/events/"):
        raise mismatch(topic, "telemetry")
    properties = decode_bag(strip_trailing_slash(rest[16:]), topic)
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
    return f"devices/{device_id}/messages/devicebound/{property_bag(properties)}"


def parse_c2d_topic(topic: str) -> C2DTopic:
    """Parse the topic of a cloud-to-device message; a single trailing ``/`` is tolerated.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The device id and decoded properties.

    Raises:
        ProtocolError: the topic is not a cloud-to-device topic or its bag is malformed.
    """
    device_id, module_id, rest = split_identity(topic, "cloud-to-device")
    if module_id is not None or not rest.startswith("messages/devicebound/"):
        raise mismatch(topic, "cloud-to-device")
    properties = decode_bag(strip_trailing_slash(rest[21:]), topic)
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
    check_segment(input_name, "input_name")
    return f"devices/{device_id}/modules/{module_id}/inputs/{input_name}/{property_bag(properties)}"


def parse_input_topic(topic: str) -> InputTopic:
    """Parse the topic of a message delivered to a module input.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The identity, input name and decoded properties.

    Raises:
        ProtocolError: the topic is not a module input topic or its bag is malformed.
    """
    device_id, module_id, rest = split_identity(topic, "module input")
    if module_id is None or not rest.startswith("inputs/"):
        raise mismatch(topic, "module input")
    input_name, _, bag = rest[7:].partition("/")
    if not input_name:
        raise mismatch(topic, "module input")
    properties = decode_bag(strip_trailing_slash(bag), topic)
    return InputTopic(device_id=device_id, module_id=module_id, input_name=input_name, properties=properties)
