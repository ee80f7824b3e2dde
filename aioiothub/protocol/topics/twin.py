"""Topics of the device twin: GET and reported-property PATCH requests, responses, desired-property notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aioiothub.protocol.topics.fields import (
    check_request_id,
    check_status,
    mismatch,
    optional_integer,
    parse_response_topic,
    query,
    required_text,
    response_topic,
)

__all__ = [
    "TWIN_DESIRED_SUBSCRIPTION",
    "TWIN_RESPONSE_SUBSCRIPTION",
    "TWIN_TOPIC_PREFIX",
    "DesiredPatchTopic",
    "TwinRequestTopic",
    "TwinResponseTopic",
    "parse_twin_desired_topic",
    "parse_twin_request_topic",
    "parse_twin_response_topic",
    "twin_desired_topic",
    "twin_get_topic",
    "twin_patch_reported_topic",
    "twin_response_topic",
]

TWIN_RESPONSE_SUBSCRIPTION = "$iothub/twin/res/#"
"""Filter for the hub's answers to twin GET and reported-property PATCH requests."""

TWIN_DESIRED_SUBSCRIPTION = "$iothub/twin/PATCH/properties/desired/#"
"""Filter for desired-property change notifications."""

TWIN_TOPIC_PREFIX = "$iothub/twin/"
"""Every twin topic begins with it: requests, responses and desired-property notifications."""

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_PATCH_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_TWIN_PATCH_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_TWIN_RESPONSE = "$iothub/twin/res/"


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
    return f"$iothub/twin/GET/?$rid={check_request_id(request_id)}"


def twin_patch_reported_topic(request_id: str) -> str:
    """Build the topic of a reported-properties PATCH request.

    Args:
        request_id: the request id; percent-encoded here.

    Returns:
        ``$iothub/twin/PATCH/properties/reported/?$rid={request_id}``.

    Raises:
        TypeError, ValueError: the request id is not a non-empty ``str``.
    """
    return f"$iothub/twin/PATCH/properties/reported/?$rid={check_request_id(request_id)}"


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
        raise mismatch(topic, "twin request")
    parameters = query(rest, topic, "twin request")
    return TwinRequestTopic(operation=operation, request_id=required_text(parameters, "$rid", topic))


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
    return response_topic(_TWIN_RESPONSE, status, request_id, key="$version", value=version, argument="version")


def parse_twin_response_topic(topic: str) -> TwinResponseTopic:
    """Parse the topic of a twin response.

    Args:
        topic: the topic of the hub's PUBLISH.

    Returns:
        The status, request id and optional version.

    Raises:
        ProtocolError: the topic is not a twin response, or its status, ``$rid`` or ``$version`` is bad.
    """
    status, request_id, parameters = parse_response_topic(topic, _TWIN_RESPONSE, "twin response")
    return TwinResponseTopic(status, request_id, optional_integer(parameters, "$version", topic))


def twin_desired_topic(version: int) -> str:
    """Build the topic of a desired-property notification (hub role).

    Args:
        version: the desired ``$version`` after the change.

    Returns:
        ``$iothub/twin/PATCH/properties/desired/?$version={version}``.

    Raises:
        TypeError, ValueError: the version is not a non-negative ``int``.
    """
    return f"$iothub/twin/PATCH/properties/desired/?$version={check_status(version, 'version')}"


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
        raise mismatch(topic, "desired properties")
    rest = topic[len(_TWIN_PATCH_DESIRED) :]
    if not rest:
        return DesiredPatchTopic(version=None)
    parameters = query(rest, topic, "desired properties")
    return DesiredPatchTopic(version=optional_integer(parameters, "$version", topic))
