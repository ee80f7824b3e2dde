"""Device Provisioning Service (DPS) registration bodies, for both the device and the service.

A device registers by publishing ``{"registrationId": ..., "payload": ...}`` and then polls the
returned operation until its ``status`` is final. The answers are JSON with camelCase names::

    {"operationId": "...", "status": "assigned",
     "registrationState": {"registrationId": "...", "assignedHub": "...", "deviceId": "...",
                           "status": "assigned", "substatus": "initialAssignment",
                           "createdDateTimeUtc": "...", "lastUpdatedDateTimeUtc": "...",
                           "etag": "...", "payload": {...}}}

Errors come back as ``{"errorCode": 401002, "trackingId": "...", "message": "..."}``; a registration
that failed carries ``errorCode``/``errorMessage`` inside its ``registrationState``. Timestamps are
kept as the text the service sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import validate_identity

__all__ = [
    "RegistrationOperation",
    "RegistrationRequest",
    "RegistrationState",
    "parse_registration_request",
    "parse_registration_response",
    "registration_request_body",
    "registration_response_body",
]

# How much of a malformed body to quote in an error message.
_EXCERPT_BYTES = 200

# Final operation status reported for an error answer whose body names no status of its own.
_ERROR_STATUS = "failed"


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """A parsed register request (service role).

    Attributes:
        registration_id: the ``registrationId`` the device sent.
        payload: the decoded ``payload`` (e.g. ``{"modelId": "dtmi:..."}``), or ``None`` when absent.
    """

    registration_id: str
    payload: Any


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """Where and how a device was provisioned.

    Attributes:
        registration_id: the registration id.
        assigned_hub: the IoT hub host name the device was assigned to, or ``None``.
        device_id: the device id created on that hub, or ``None``.
        status: ``assigned``, ``assigning``, ``failed``, ``disabled`` ..., or ``None`` when absent.
        substatus: e.g. ``initialAssignment`` or ``reprovisionedToNewHub``, or ``None``.
        payload: the custom allocation payload returned to the device, or ``None``.
        created: ``createdDateTimeUtc`` as sent, or ``None``.
        last_updated: ``lastUpdatedDateTimeUtc`` as sent, or ``None``.
        etag: the registration's etag, or ``None``.
    """

    registration_id: str
    assigned_hub: str | None = None
    device_id: str | None = None
    status: str | None = None
    substatus: str | None = None
    payload: Any = None
    created: str | None = None
    last_updated: str | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class RegistrationOperation:
    """A parsed answer to a register or poll request.

    Attributes:
        operation_id: the id to poll with, or ``None`` in an error answer.
        status: the operation status (``assigning``, ``assigned``, ``failed``, ``disabled`` ...). An
            error answer without a status of its own reads ``failed``; whether to retry is decided by
            the response topic's status (>= 429 is transient), not by this field.
        registration_state: the registration details, or ``None`` while assigning or on error.
        error_code: the service's ``errorCode``, or ``None``.
        error_message: the service's ``message`` (or ``errorMessage``), or ``None``.
        tracking_id: the service's ``trackingId`` (to quote in a support request), or ``None``.
    """

    operation_id: str | None
    status: str
    registration_state: RegistrationState | None = None
    error_code: int | None = None
    error_message: str | None = None
    tracking_id: str | None = None


def _dump(value: Any, argument: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{argument}: not representable as JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(bytes(body).decode(), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed {what}: {exc}: {bytes(body[:_EXCERPT_BYTES])!r}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"malformed {what}: expected a JSON object: {bytes(body[:_EXCERPT_BYTES])!r}")
    return value


def _optional_text(data: dict[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"malformed {what}: {key} is {value!r}, not a string")
    return value


def _required_text(data: dict[str, Any], key: str, what: str) -> str:
    value = _optional_text(data, key, what)
    if not value:
        raise ProtocolError(f"malformed {what}: missing {key}")
    return value


def _optional_integer(data: dict[str, Any], key: str, what: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ProtocolError(f"malformed {what}: {key} is {value!r}, not an integer")
    return value


def registration_request_body(registration_id: str, payload: Any = None) -> bytes:
    """Build the body of a register request.

    Args:
        registration_id: the registration id.
        payload: JSON-serializable data for the service (e.g. ``{"modelId": "dtmi:..."}``), or ``None``.

    Returns:
        UTF-8 JSON: ``{"registrationId": ...}`` plus ``"payload"`` when one is given.

    Raises:
        TypeError, ValueError: the registration id is invalid or the payload is not JSON-serializable.
    """
    validate_identity(registration_id, "registration_id")
    document: dict[str, Any] = {"registrationId": registration_id}
    if payload is not None:
        document["payload"] = payload
    return _dump(document, "payload")


def parse_registration_request(body: bytes) -> RegistrationRequest:
    """Parse the body of a register request (service role).

    Args:
        body: the PUBLISH payload.

    Returns:
        The registration id and optional payload.

    Raises:
        ProtocolError: the body is not a JSON object with a non-empty string ``registrationId``.
    """
    what = "DPS register request"
    data = _load_object(body, what)
    return RegistrationRequest(
        registration_id=_required_text(data, "registrationId", what), payload=data.get("payload")
    )


def _parse_state(data: Any, what: str) -> RegistrationState:
    if not isinstance(data, dict):
        raise ProtocolError(f"malformed {what}: registrationState is {data!r}, not an object")
    return RegistrationState(
        registration_id=_required_text(data, "registrationId", what),
        assigned_hub=_optional_text(data, "assignedHub", what),
        device_id=_optional_text(data, "deviceId", what),
        status=_optional_text(data, "status", what),
        substatus=_optional_text(data, "substatus", what),
        payload=data.get("payload"),
        created=_optional_text(data, "createdDateTimeUtc", what),
        last_updated=_optional_text(data, "lastUpdatedDateTimeUtc", what),
        etag=_optional_text(data, "etag", what),
    )


def parse_registration_response(status: int, body: bytes) -> RegistrationOperation:
    """Parse the body of a DPS answer to a register or poll request.

    Success answers (2xx) must carry ``operationId`` and ``status``. Error answers may carry an
    error object or nothing at all.

    Args:
        status: the status from the response topic.
        body: the PUBLISH payload.

    Returns:
        The operation, with its registration state and error details when present.

    Raises:
        TypeError: ``status`` is not an ``int``.
        ProtocolError: the body is not valid JSON of the expected shape.
    """
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"status: expected int, got {type(status).__name__}")
    what = f"DPS {status} response"
    success = 200 <= status < 300
    if not success and not bytes(body).strip():
        return RegistrationOperation(operation_id=None, status=_ERROR_STATUS)
    data = _load_object(body, what)
    if success:
        operation_id: str | None = _required_text(data, "operationId", what)
        operation_status = _required_text(data, "status", what)
    else:
        operation_id = _optional_text(data, "operationId", what)
        stated = _optional_text(data, "status", what)
        operation_status = _ERROR_STATUS if stated is None else stated
    raw_state = data.get("registrationState")
    state = None if raw_state is None else _parse_state(raw_state, what)
    error_code = _optional_integer(data, "errorCode", what)
    error_message = _optional_text(data, "message", what)
    if error_message is None:
        error_message = _optional_text(data, "errorMessage", what)
    if isinstance(raw_state, dict):
        if error_code is None:
            error_code = _optional_integer(raw_state, "errorCode", what)
        if error_message is None:
            error_message = _optional_text(raw_state, "errorMessage", what)
    return RegistrationOperation(
        operation_id=operation_id,
        status=operation_status,
        registration_state=state,
        error_code=error_code,
        error_message=error_message,
        tracking_id=_optional_text(data, "trackingId", what),
    )


def _state_document(state: RegistrationState, operation: RegistrationOperation) -> dict[str, Any]:
    fields = {
        "registrationId": state.registration_id,
        "assignedHub": state.assigned_hub,
        "deviceId": state.device_id,
        "status": state.status,
        "substatus": state.substatus,
        "createdDateTimeUtc": state.created,
        "lastUpdatedDateTimeUtc": state.last_updated,
        "etag": state.etag,
        "payload": state.payload,
        # A failed registration reports its error inside the state, as DPS does.
        "errorCode": operation.error_code,
        "errorMessage": operation.error_message,
    }
    return {key: value for key, value in fields.items() if value is not None}


def registration_response_body(operation: RegistrationOperation) -> bytes:
    """Build the body of a DPS answer (service role); the inverse of :func:`parse_registration_response`.

    An operation without an ``operation_id`` is written as an error object (``errorCode``,
    ``message``). Otherwise the body holds ``operationId``, ``status`` and, when present, the
    ``registrationState`` with its camelCase names; error details go inside the state when there is
    one, else at the top level.

    Args:
        operation: the operation to describe.

    Returns:
        UTF-8 JSON.

    Raises:
        TypeError: ``operation`` is not a :class:`RegistrationOperation`.
        ValueError: the payload in the state is not JSON-serializable.
    """
    if not isinstance(operation, RegistrationOperation):
        raise TypeError(f"operation: expected RegistrationOperation, got {type(operation).__name__}")
    document: dict[str, Any]
    if operation.operation_id is None:
        document = {
            "errorCode": operation.error_code,
            "trackingId": operation.tracking_id,
            "message": operation.error_message,
        }
        if operation.status != _ERROR_STATUS:
            document["status"] = operation.status
    else:
        document = {"operationId": operation.operation_id, "status": operation.status}
        if operation.registration_state is not None:
            document["registrationState"] = _state_document(operation.registration_state, operation)
        else:
            document["errorCode"] = operation.error_code
            document["message"] = operation.error_message
        document["trackingId"] = operation.tracking_id
    return _dump({key: value for key, value in document.items() if value is not None}, "operation")
