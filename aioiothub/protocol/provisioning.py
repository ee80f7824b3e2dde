"""Registering with the Device Provisioning Service (DPS) as a sans-IO state machine.

Theory of operation
-------------------
A :class:`RegistrationProtocol` belongs to one registration id on one DPS connection. It turns a
registration into the PUBLISHes DPS expects and every answer into one frozen event; it never
touches a socket, a clock or a task. The client above it sends the publishes, waits as long as the
events say, and turns the final event into a result or an error.

One registration goes through these states::

    IDLE --begin()--> REQUESTING --receive(202 / assigning, >= 429)--> WAITING
                         ^                                               |
                         +------------------ next_request() -------------+
    REQUESTING --receive(200 assigned)--> DONE  (RegistrationAssigned)
    REQUESTING --receive(failed, disabled, 4xx)--> DONE  (RegistrationRefused)

* **begin** sends ``$dps/registrations/PUT/iotdps-register/?$rid={rid}`` with
  ``{"registrationId": ..., "payload": ...}``.
* An answer whose ``$rid`` is not the one outstanding is ignored (``None``): it belongs to a request
  that was abandoned (cancelled, timed out) and must not complete a newer one.
* A 2xx answer with status ``assigning`` (202, as DPS sends it) means "ask again later": the event carries the delay
  (the topic's ``retry-after``, :data:`DEFAULT_RETRY_AFTER` seconds when absent) and the operation id.
* **>= 429** is transient: the same step is retried after the delay -- the register request while
  no operation id is known, else the status poll.
* **next_request** builds the next request after the wait: a status poll
  ``$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`` (body a single
  space, as the SDKs send), or the register request again. Every request gets a new ``$rid``.
* A final ``assigned`` status completes the registration; ``failed``, ``disabled`` (or any other
  final status) and any other error status refuse it.
* **abandon** forgets the outstanding ``$rid`` however the wait ended (cancelled, timed out,
  connection lost): no entry outlives its request.

A malformed answer to the outstanding request raises :class:`~aioiothub.exceptions.ProtocolError`
and ends the registration (state ``DONE``); anything on a topic that is not a DPS response raises it
too, with the state unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol import topics
from aioiothub.protocol.device import OutboundPublish
from aioiothub.protocol.dps import RegistrationOperation, parse_registration_response, registration_request_body

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "POLL_BODY",
    "RegistrationAssigned",
    "RegistrationEvent",
    "RegistrationProtocol",
    "RegistrationRefused",
    "RegistrationState",
    "RetryLater",
]

DEFAULT_RETRY_AFTER = 2.0
"""Seconds to wait before the next request when an answer carries no ``retry-after``."""

POLL_BODY = b" "
"""The body of a status poll: a single space, as both official SDKs send it."""

# Statuses that mean the service is still working on the registration.
_IN_PROGRESS = frozenset({"assigning", "unassigned"})


class RegistrationState(enum.Enum):
    """Where a :class:`RegistrationProtocol` stands."""

    IDLE = "idle"
    REQUESTING = "requesting"
    WAITING = "waiting"
    DONE = "done"


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Wait ``delay`` seconds, then send :meth:`RegistrationProtocol.next_request`.

    Attributes:
        status: the answer's status (202 while assigning, >= 429 when throttled or failing).
        delay: seconds to wait: the answer's ``retry-after``, or :data:`DEFAULT_RETRY_AFTER`.
        operation: the parsed answer.
        request_id: the ``$rid`` it answered.
    """

    status: int
    delay: float
    operation: RegistrationOperation
    request_id: str

    @property
    def transient_error(self) -> bool:
        """Whether the service refused the request for now (429 or 5xx) rather than being busy."""
        return self.status >= 429


@dataclass(frozen=True, slots=True)
class RegistrationAssigned:
    """The device is assigned to a hub; ``operation.registration_state`` says where and as whom."""

    status: int
    operation: RegistrationOperation
    request_id: str


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """The registration ended without an assignment (``failed``, ``disabled``, or an error status).

    Attributes:
        status: the answer's status (200 for a final ``failed`` or ``disabled``, else the error).
        operation: the parsed answer with its error code, message and tracking id.
        request_id: the ``$rid`` it answered.
    """

    status: int
    operation: RegistrationOperation
    request_id: str


RegistrationEvent = RetryLater | RegistrationAssigned | RegistrationRefused
"""What :meth:`RegistrationProtocol.receive` returns for an answer to the outstanding request."""


class RegistrationProtocol:
    """The DPS registration of one registration id.

    Args:
        registration_id: the registration id (also the MQTT client id).

    Example:
        >>> protocol = RegistrationProtocol("dev1")
        >>> protocol.begin({"modelId": "dtmi:com:example:Thermostat;1"}).topic
        '$dps/registrations/PUT/iotdps-register/?$rid=1'
        >>> protocol.receive(
        ...     "$dps/registrations/res/202/?$rid=1&retry-after=3", b'{"operationId":"op1","status":"assigning"}'
        ... ).delay
        3.0
        >>> protocol.next_request().topic
        '$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op1'
    """

    def __init__(self, registration_id: str) -> None:
        # Validates the id now, so a bad one fails when the client is built, not at register().
        registration_request_body(registration_id)
        self.registration_id = registration_id
        self._state = RegistrationState.IDLE
        self._payload: Any = None
        self._operation_id: str | None = None
        self._pending: str | None = None
        self._last_request_id = 0

    @property
    def state(self) -> RegistrationState:
        """Where the registration stands."""
        return self._state

    @property
    def pending_request_id(self) -> str | None:
        """The ``$rid`` of the request waiting for its answer, if any."""
        return self._pending

    @property
    def operation_id(self) -> str | None:
        """The operation id DPS gave the registration, once it did."""
        return self._operation_id

    # --- outbound --------------------------------------------------------------------------------

    def begin(self, payload: Any = None) -> OutboundPublish:
        """Start a registration (any earlier one is forgotten).

        Args:
            payload: JSON-serialisable data for the service (``{"modelId": ...}`` for Plug and Play).

        Raises:
            TypeError, ValueError: the payload is not JSON-serialisable.
        """
        body = registration_request_body(self.registration_id, payload)
        self._payload = payload
        self._operation_id = None
        return self._send(topics.dps_register_topic, body)

    def next_request(self) -> OutboundPublish:
        """The request to send once the wait a :class:`RetryLater` asked for is over.

        Raises:
            RuntimeError: no :class:`RetryLater` is being waited on.
        """
        if self._state is not RegistrationState.WAITING:
            raise RuntimeError(f"no request is due: the registration is {self._state.value}")
        operation_id = self._operation_id
        if operation_id is None:
            return self._send(topics.dps_register_topic, registration_request_body(self.registration_id, self._payload))
        return self._send(lambda request_id: topics.dps_poll_topic(request_id, operation_id), POLL_BODY)

    def abandon(self) -> None:
        """Forget the registration however it ended; a late answer to it is then ignored."""
        self._pending = None
        self._state = RegistrationState.IDLE

    def _send(self, build: Callable[[str], str], body: bytes) -> OutboundPublish:
        self._last_request_id += 1
        request_id = str(self._last_request_id)
        publish = OutboundPublish(build(request_id), body, 1)
        self._pending = request_id
        self._state = RegistrationState.REQUESTING
        return publish

    # --- inbound ---------------------------------------------------------------------------------

    def receive(self, topic: str, payload: bytes) -> RegistrationEvent | None:
        """Turn one PUBLISH from DPS into an event.

        Returns:
            The event, or ``None`` for an answer to a request that is no longer outstanding.

        Raises:
            ProtocolError: the topic is not a DPS response, or the answer to the outstanding request
                is malformed (which ends the registration).
        """
        response = topics.parse_dps_response_topic(topic)
        request_id = response.request_id
        if request_id != self._pending or self._state is not RegistrationState.REQUESTING:
            return None
        self._pending = None
        self._state = RegistrationState.DONE
        status = response.status
        operation = parse_registration_response(status, payload)
        delay = DEFAULT_RETRY_AFTER if response.retry_after is None else float(response.retry_after)
        success = 200 <= status < 300
        if status >= 429 or (success and operation.status in _IN_PROGRESS):
            if success:
                self._operation_id = operation.operation_id
            self._state = RegistrationState.WAITING
            return RetryLater(status, delay, operation, request_id)
        if success and operation.status == "assigned":
            _check_assignment(operation)
            return RegistrationAssigned(status, operation, request_id)
        return RegistrationRefused(status, operation, request_id)


def _check_assignment(operation: RegistrationOperation) -> None:
    state = operation.registration_state
    if state is None or not state.assigned_hub or not state.device_id:
        raise ProtocolError("DPS reported the device assigned without an assigned hub and device id")
