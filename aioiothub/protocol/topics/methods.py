"""Topics of direct methods: the request the hub delivers and the response the device publishes."""

from __future__ import annotations

from dataclasses import dataclass

from aioiothub.protocol.topics.fields import (
    check_request_id,
    check_segment,
    mismatch,
    parse_response_topic,
    query,
    required_text,
    response_topic,
)

__all__ = [
    "METHODS_SUBSCRIPTION",
    "METHOD_RESPONSE_PREFIX",
    "MethodRequestTopic",
    "MethodResponseTopic",
    "method_request_topic",
    "method_response_topic",
    "parse_method_request_topic",
    "parse_method_response_topic",
]

METHODS_SUBSCRIPTION = "$iothub/methods/POST/#"
"""Filter for direct method requests."""

METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"
"""Every direct method response topic begins with it."""

_METHOD_REQUEST = "$iothub/methods/POST/"
_METHOD_RESPONSE = METHOD_RESPONSE_PREFIX


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
    check_segment(method_name, "method_name")
    return f"$iothub/methods/POST/{method_name}/?$rid={check_request_id(request_id)}"


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
        raise mismatch(topic, "method request")
    name, separator, rest = topic[len(_METHOD_REQUEST) :].partition("/")
    if not name or not separator:
        raise mismatch(topic, "method request")
    parameters = query(rest, topic, "method request")
    component: str | None = None
    command = name
    star = name.find("*")
    if star > 0:
        component, command = name[:star], name[star + 1 :]
    return MethodRequestTopic(
        name=name,
        request_id=required_text(parameters, "$rid", topic),
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
    return response_topic(_METHOD_RESPONSE, status, request_id)


def parse_method_response_topic(topic: str) -> MethodResponseTopic:
    """Parse the topic of a direct method response (hub role).

    Args:
        topic: the topic of a device's PUBLISH.

    Returns:
        The status and request id.

    Raises:
        ProtocolError: the topic is not a method response, or its status or ``$rid`` is bad.
    """
    status, request_id, _ = parse_response_topic(topic, _METHOD_RESPONSE, "method response")
    return MethodResponseTopic(status, request_id)
