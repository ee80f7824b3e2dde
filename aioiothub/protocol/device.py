"""The device side of IoT Hub over MQTT as a sans-IO object: publishes out, events in.

Theory of operation
-------------------
A :class:`DeviceProtocol` belongs to one device or module identity for the whole life of a client,
across any number of connections. It turns what the application asks for into
:class:`OutboundPublish` values (topic, payload, QoS) and turns every PUBLISH the hub sends into one
frozen event; it never touches a socket, a clock or a task. The session above it moves the
publishes over a transport and routes the events to futures and buffers.

It owns three pieces of state:

* **Subscriptions wanted.** Each kind of inbound traffic needs a topic filter; the filters the
  application has asked for are kept here, so every new connection restores exactly them
  (:attr:`DeviceProtocol.subscriptions`).
* **Pending twin requests.** :meth:`DeviceProtocol.begin_twin_request` allocates a ``$rid`` and
  keeps the request with an opaque ``waiter`` supplied by the caller (a future, for the session).
  The response event carries that waiter back. A request is re-published with the same ``$rid``
  after a reconnect, and is forgotten with :meth:`DeviceProtocol.end_twin_request` however it
  ends (answered, timed out, cancelled): no entry outlives its request.
* **Desired-property sync.** The :class:`~aioiothub.protocol.desired.DesiredSync` state machine
  decides which notifications reach the application and when the twin must be re-read.

Inbound dispatch is by topic prefix, cheapest first. Anything that is not a well-formed message on
a topic this identity subscribes to raises :class:`~aioiothub.exceptions.ProtocolError`; the caller
logs it and acknowledges the packet, and the protocol's state is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol import topics
from aioiothub.protocol.desired import DesiredSync
from aioiothub.protocol.json_payloads import load_json_object, load_json_payload
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES, message_wire_size

__all__ = [
    "CloudToDeviceMessage",
    "DesiredPatch",
    "DeviceProtocol",
    "InputMessage",
    "MethodInvoked",
    "OutboundPublish",
    "PendingTwinRequest",
    "TwinResponse",
    "telemetry_publish",
]

W = TypeVar("W")

_TWIN_RESPONSE_PREFIX = topics.filter_prefix(topics.TWIN_RESPONSE_SUBSCRIPTION)
_DESIRED_PREFIX = topics.filter_prefix(topics.TWIN_DESIRED_SUBSCRIPTION)
_METHODS_PREFIX = topics.filter_prefix(topics.METHODS_SUBSCRIPTION)


@dataclass(frozen=True, slots=True)
class OutboundPublish:
    """A PUBLISH to send."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


def telemetry_publish(
    device_id: str,
    module_id: str | None,
    body: bytes,
    properties: Mapping[str, str],
    *,
    qos: int = 1,
    retain: bool = False,
    topic: str | None = None,
) -> OutboundPublish:
    """A telemetry PUBLISH, checked against the hub's 256 KiB limit as the hub counts it.

    Also what a will message is built with: the hub accepts a will only on a telemetry topic.

    Example:
        >>> telemetry_publish("dev1", None, b"bye", {"reason": "lost"}).topic
        'devices/dev1/messages/events/reason=lost'

    Args:
        device_id: the device id.
        module_id: the module id, for a module identity.
        body: the message body.
        properties: system and application properties under their wire names.
        qos: 0 or 1.
        retain: the RETAIN flag (the hub forwards the message with ``mqtt-retain: true``).
        topic: the topic already built for these properties, if the caller has it.

    Raises:
        ValueError: the message is too large, or ``qos`` is not 0 or 1.
    """
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1 (IoT Hub closes the connection on QoS 2), not {qos!r}")
    size = message_wire_size(body, properties)
    if size > MAX_TELEMETRY_BYTES:
        raise ValueError(f"message is {size} bytes on the wire; IoT Hub accepts at most {MAX_TELEMETRY_BYTES}")
    if topic is None:
        topic = topics.telemetry_topic(device_id, module_id, properties)
    return OutboundPublish(topic, body, qos, retain)


@dataclass(frozen=True, slots=True)
class PendingTwinRequest(Generic[W]):
    """A twin request waiting for its response; re-published as it is after a reconnect."""

    request_id: str
    publish: OutboundPublish
    waiter: W


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwinResponse(Generic[W]):
    """The hub answered a twin request.

    Attributes:
        request_id: the ``$rid`` of the request.
        status: the status from the response topic.
        version: the ``$version`` on the topic (reported patches), if any.
        body: the response body (the twin document for a GET).
        waiter: what :meth:`DeviceProtocol.begin_twin_request` was given.
    """

    request_id: str
    status: int
    version: int | None
    body: bytes
    waiter: W


@dataclass(frozen=True, slots=True)
class DesiredPatch:
    """A desired-property notification, with ``"$version"`` set from the topic when the body lacks it."""

    patch: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MethodInvoked:
    """A direct method invocation waiting for an answer."""

    name: str
    request_id: str
    payload: Any
    component: str | None
    command: str


@dataclass(frozen=True, slots=True)
class CloudToDeviceMessage:
    """A cloud-to-device message; QoS 1 ones wait for the application before they are acknowledged."""

    body: bytes
    properties: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class InputMessage:
    """A message routed to one of a module's inputs (IoT Edge)."""

    input_name: str
    body: bytes
    properties: dict[str, str | None]


Event = TwinResponse[W] | DesiredPatch | MethodInvoked | CloudToDeviceMessage | InputMessage
"""What :meth:`DeviceProtocol.receive` returns."""


class DeviceProtocol(Generic[W]):
    """The IoT Hub protocol of one device or module identity.

    Args:
        device_id: the device id.
        module_id: the module id, for a module identity.
        desired_hold_limit: how many desired notifications a resync holds for delivery after its
            twin reading (:class:`~aioiothub.protocol.desired.DesiredSync`).

    Example:
        >>> protocol = DeviceProtocol("dev1")
        >>> protocol.telemetry(b"{}", {"$.ct": "application/json"}).topic
        'devices/dev1/messages/events/%24.ct=application%2Fjson'
        >>> pending = protocol.begin_twin_request("get", b"", waiter="w")
        >>> pending.publish.topic
        '$iothub/twin/GET/?$rid=1'
        >>> protocol.receive('$iothub/twin/res/200/?$rid=1', b'{"desired":{},"reported":{}}').waiter
        'w'
    """

    def __init__(self, device_id: str, module_id: str | None = None, *, desired_hold_limit: int = 64) -> None:
        self.device_id = device_id
        self.module_id = module_id
        self.desired = DesiredSync(hold_limit=desired_hold_limit)
        self._subscriptions: dict[str, int] = {}
        self._twin_requests: dict[str, PendingTwinRequest[W]] = {}
        self._last_request_id = 0
        self._c2d_subscription = topics.c2d_subscription(device_id)
        self._c2d_prefix = topics.filter_prefix(self._c2d_subscription)
        if module_id is None:
            self._inputs_subscription: str | None = None
            self._inputs_prefix: str | None = None
        else:
            self._inputs_subscription = topics.input_subscription(device_id, module_id)
            self._inputs_prefix = topics.filter_prefix(self._inputs_subscription)
        # Telemetry without properties has a fixed topic: built once, not per message.
        self._bare_telemetry_topic = topics.telemetry_topic(device_id, module_id)

    # --- subscriptions ---------------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """Every filter the application has asked for, with its QoS, in the order asked."""
        return list(self._subscriptions.items())

    def want_subscription(self, topic_filter: str, qos: int) -> None:
        """Record that ``topic_filter`` is needed on this and every later connection."""
        self._subscriptions[topic_filter] = qos

    def wants(self, topic_filter: str) -> bool:
        """Whether the application has asked for ``topic_filter``."""
        return topic_filter in self._subscriptions

    def cloud_messages_subscription(self) -> tuple[str, int]:
        """The filter (and QoS) for cloud-to-device messages."""
        return self._c2d_subscription, 1

    def inputs_subscription(self) -> tuple[str, int]:
        """The filter (and QoS) for module inputs.

        Raises:
            RuntimeError: this is a device identity.
        """
        if self._inputs_subscription is None:
            raise RuntimeError("module inputs need a module identity")
        return self._inputs_subscription, 1

    # --- outbound --------------------------------------------------------------------------------

    def telemetry(
        self, body: bytes, properties: Mapping[str, str], *, qos: int = 1, retain: bool = False
    ) -> OutboundPublish:
        """A telemetry PUBLISH, checked against the hub's 256 KiB limit as the hub counts it.

        Raises:
            ValueError: the message is too large, or ``qos`` is not 0 or 1.
        """
        topic = None if properties else self._bare_telemetry_topic
        return telemetry_publish(
            self.device_id, self.module_id, body, properties, qos=qos, retain=retain, topic=topic
        )

    def method_response(self, request_id: str, status: int, body: bytes) -> OutboundPublish:
        """The answer to a method invocation (QoS 1: the hub acknowledges it)."""
        return OutboundPublish(topics.method_response_topic(status, request_id), body, 1)

    def begin_twin_request(self, kind: str, body: bytes, waiter: W) -> PendingTwinRequest[W]:
        """Start a twin request (``"get"`` the twin, or ``"patch"`` the reported properties).

        Raises:
            ValueError: ``kind`` is neither.
        """
        if kind == "get":
            build = topics.twin_get_topic
        elif kind == "patch":
            build = topics.twin_patch_reported_topic
        else:
            raise ValueError(f"kind must be 'get' or 'patch', not {kind!r}")
        self._last_request_id += 1
        request_id = str(self._last_request_id)
        pending = PendingTwinRequest(request_id, OutboundPublish(build(request_id), body, 0), waiter)
        self._twin_requests[request_id] = pending
        return pending

    def end_twin_request(self, request_id: str) -> None:
        """Forget a twin request, however it ended; a late response is then ignored."""
        self._twin_requests.pop(request_id, None)

    @property
    def pending_twin_requests(self) -> list[PendingTwinRequest[W]]:
        """The twin requests still waiting for a response, oldest first."""
        return list(self._twin_requests.values())

    # --- inbound ---------------------------------------------------------------------------------

    def receive(self, topic: str, payload: bytes) -> Event[W] | None:
        """Turn one inbound PUBLISH into an event.

        Returns:
            The event, or ``None`` for a twin response to a request that is no longer pending.

        Raises:
            ProtocolError: the topic is not one this identity subscribes to, or the message on it
                is malformed.
        """
        if topic.startswith(_TWIN_RESPONSE_PREFIX):
            response = topics.parse_twin_response_topic(topic)
            pending = self._twin_requests.pop(response.request_id, None)
            if pending is None:
                return None
            return TwinResponse(response.request_id, response.status, response.version, payload, pending.waiter)
        if topic.startswith(self._c2d_prefix):
            return CloudToDeviceMessage(payload, topics.parse_c2d_topic(topic).properties)
        if self._inputs_prefix is not None and topic.startswith(self._inputs_prefix):
            parsed_input = topics.parse_input_topic(topic)
            return InputMessage(parsed_input.input_name, payload, parsed_input.properties)
        if topic.startswith(_METHODS_PREFIX):
            request = topics.parse_method_request_topic(topic)
            body = load_json_payload(payload, f"payload of method {request.name!r}") if payload else None
            return MethodInvoked(request.name, request.request_id, body, request.component, request.command)
        if topic.startswith(_DESIRED_PREFIX):
            parsed = topics.parse_twin_desired_topic(topic)
            patch = load_json_object(payload, "desired-property patch")
            if "$version" not in patch and parsed.version is not None:
                patch["$version"] = parsed.version
            return DesiredPatch(patch)
        raise ProtocolError(f"a message on an unexpected topic {topic!r}")
