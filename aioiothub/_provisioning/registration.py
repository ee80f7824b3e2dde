"""What a DPS registration ends with: a :class:`RegistrationResult`, or the error for a refusal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aioiothub.exceptions import ServiceError
from aioiothub.protocol.dps import RegistrationOperation
from aioiothub.protocol.provisioning import RegistrationRefused

__all__ = ["RegistrationResult", "refusal_error", "with_model_id"]


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """What DPS answered to a completed registration.

    Attributes:
        status: ``"assigned"`` (a failed or disabled registration raises :class:`ServiceError`).
        device_id: the device id created on the assigned hub.
        assigned_hub: the host name of the IoT hub the device belongs to.
        sub_status: e.g. ``"initialAssignment"`` or ``"reprovisionedToInitialAssignment"``.
        payload: the custom allocation payload DPS returned, or ``None``.
        etag: the registration's etag.
        created: ``createdDateTimeUtc`` as DPS sent it.
        last_updated: ``lastUpdatedDateTimeUtc`` as DPS sent it.
        operation_id: the id of the registration operation.
        error_code: DPS's error code, if any.
        error_message: DPS's error message, if any.
        registration_id: the registration id.
    """

    status: str
    device_id: str | None
    assigned_hub: str | None
    sub_status: str | None = None
    payload: Any = None
    etag: str | None = None
    created: str | None = None
    last_updated: str | None = None
    operation_id: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    registration_id: str | None = None

    @classmethod
    def from_operation(cls, operation: RegistrationOperation) -> RegistrationResult:
        """The result a parsed DPS answer describes."""
        state = operation.registration_state
        return cls(
            status=operation.status,
            device_id=None if state is None else state.device_id,
            assigned_hub=None if state is None else state.assigned_hub,
            sub_status=None if state is None else state.substatus,
            payload=None if state is None else state.payload,
            etag=None if state is None else state.etag,
            created=None if state is None else state.created,
            last_updated=None if state is None else state.last_updated,
            operation_id=operation.operation_id,
            error_code=operation.error_code,
            error_message=operation.error_message,
            registration_id=None if state is None else state.registration_id,
        )


def refusal_error(registration_id: str, event: RegistrationRefused) -> ServiceError:
    """The :class:`ServiceError` for a refused registration, with DPS's error code and tracking id."""
    operation = event.operation
    code = operation.error_code
    status = event.status
    # DPS error codes begin with the HTTP status they stand for (401002 -> 401).
    if 200 <= status < 300 and code is not None and 100_000 <= code < 1_000_000:
        status = code // 1000
    details = [f"status {event.status}" if operation.status == "failed" and event.status >= 300 else operation.status]
    if code is not None:
        details.append(f"error {code}")
    if operation.error_message:
        details.append(operation.error_message)
    if operation.tracking_id:
        details.append(f"tracking id {operation.tracking_id}")
    return ServiceError(
        f"DPS refused the registration of {registration_id!r}: {'; '.join(details)}",
        status=status,
        request_id=event.request_id,
        error_code=code,
        tracking_id=operation.tracking_id,
    )


def with_model_id(payload: Any, model_id: str | None) -> Any:
    """The registration payload with a Plug and Play ``{"modelId": ...}`` added.

    Raises:
        TypeError: ``payload`` is not a dict (or ``None``) while ``model_id`` is set.
        ValueError: ``payload`` names another model id.
    """
    if model_id is None:
        return payload
    if payload is None:
        return {"modelId": model_id}
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a dict or None when model_id is set, not {type(payload).__name__}")
    if payload.get("modelId", model_id) != model_id:
        raise ValueError(f"payload: its modelId {payload['modelId']!r} differs from model_id {model_id!r}")
    return {**payload, "modelId": model_id}
