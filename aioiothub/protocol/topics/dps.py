"""Topics of the Device Provisioning Service: register and poll requests, and the service's responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aioiothub.protocol.topics.fields import (
    check_request_id,
    mismatch,
    optional_integer,
    parse_response_topic,
    query,
    required_text,
    response_topic,
)

__all__ = [
    "DPS_RESPONSE_SUBSCRIPTION",
    "DpsRequestTopic",
    "DpsResponseTopic",
    "dps_poll_topic",
    "dps_register_topic",
    "dps_response_topic",
    "parse_dps_request_topic",
    "parse_dps_response_topic",
]

DPS_RESPONSE_SUBSCRIPTION = "$dps/registrations/res/#"
"""Filter for DPS answers; the only subscription a DPS connection may hold."""

_DPS_REGISTER = "$dps/registrations/PUT/iotdps-register/"
_DPS_POLL = "$dps/registrations/GET/iotdps-get-operationstatus/"
_DPS_RESPONSE = "$dps/registrations/res/"


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
    return f"$dps/registrations/PUT/iotdps-register/?$rid={check_request_id(request_id)}"


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
    rid = check_request_id(request_id)
    operation = check_request_id(operation_id, "operation_id")
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
        parameters = query(topic[len(_DPS_REGISTER) :], topic, "DPS request")
        return DpsRequestTopic(
            operation="register", request_id=required_text(parameters, "$rid", topic), operation_id=None
        )
    if topic.startswith(_DPS_POLL):
        parameters = query(topic[len(_DPS_POLL) :], topic, "DPS request")
        return DpsRequestTopic(
            operation="poll",
            request_id=required_text(parameters, "$rid", topic),
            operation_id=required_text(parameters, "operationId", topic),
        )
    raise mismatch(topic, "DPS request")


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
    return response_topic(
        _DPS_RESPONSE, status, request_id, key="retry-after", value=retry_after, argument="retry_after"
    )


def parse_dps_response_topic(topic: str) -> DpsResponseTopic:
    """Parse the topic of a DPS response.

    Args:
        topic: the topic of the service's PUBLISH.

    Returns:
        The status, request id and optional retry-after seconds.

    Raises:
        ProtocolError: the topic is not a DPS response, or its status, ``$rid`` or ``retry-after`` is bad.
    """
    status, request_id, parameters = parse_response_topic(topic, _DPS_RESPONSE, "DPS response")
    return DpsResponseTopic(status, request_id, optional_integer(parameters, "retry-after", topic))
