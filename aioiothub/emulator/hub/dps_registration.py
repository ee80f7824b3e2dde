"""What a registration does to the hub: allocation, the device it creates or updates, the record DPS keeps.

Theory of operation
-------------------
:meth:`DeviceAssigner.outcome` decides one registration. A disabled enrollment ends it ``disabled``.
Otherwise :func:`allocate` asks the enrollment's hook (if any) for the device id, initial twin and
response payload, falling back to the enrollment's device id (else the registration id) and initial
twin; a hook that raises, or answers something unusable, ends it ``failed`` with the hub untouched.
Then the device is created on the hub with the credential it attested with and its initial twin --
or, when it exists, its credential is brought up to date and its twin left alone (DPS's default
"re-provision and keep data" policy) -- and the registration is ``assigned``.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aioiothub.emulator.certs import certificate_thumbprints
from aioiothub.emulator.hub.dps_enrollments import (
    Allocation,
    Attestation,
    AttestedDevice,
    DeviceCredential,
    Enrollment,
    EnrollmentGroup,
    initial_desired,
)
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.registry import Registry
from aioiothub.emulator.hub.twins import Twins
from aioiothub.emulator.hub.values import iso_time, now_utc
from aioiothub.protocol.connect import validate_identity

__all__ = ["ERROR_ALLOCATION_FAILED", "ERROR_DISABLED", "DeviceAssigner", "RegistrationRecord", "allocate"]

# Error codes as DPS writes them: the HTTP status, then three digits.
ERROR_ALLOCATION_FAILED: Final = 400209
ERROR_DISABLED: Final = 401002


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """The latest registration of one registration id, as DPS keeps it.

    Attributes:
        registration_id: the registration id.
        status: ``assigned``, ``failed`` or ``disabled``.
        substatus: ``initialAssignment`` when assigned.
        device_id: the device id on the hub (when assigned).
        assigned_hub: the hub's host name (when assigned).
        enrollment_group: the group that admitted it, or ``None`` for an individual enrollment.
        attestation: ``"symmetric_key"`` or ``"x509"``.
        request_payload: the ``payload`` the device sent.
        response_payload: the payload returned to the device (from an allocation hook).
        created: ``createdDateTimeUtc``; last_updated: ``lastUpdatedDateTimeUtc``; etag: its etag.
        error_code, error_message: why it failed or is disabled.
        client_version: the ``ClientVersion`` the device announced in its username.
        operation_id: the latest registration operation.
        polls: how many status polls the device has sent for that operation.
    """

    registration_id: str
    status: str
    substatus: str | None
    device_id: str | None
    assigned_hub: str | None
    enrollment_group: str | None
    attestation: Attestation
    request_payload: Any
    response_payload: Any
    created: str
    last_updated: str
    etag: str
    error_code: int | None
    error_message: str | None
    client_version: str | None
    operation_id: str
    polls: int = 0


def allocate(enrollment: Enrollment | EnrollmentGroup, registration_id: str, payload: Any) -> Allocation:
    """Ask the enrollment's allocation hook; the default allocation when it has none.

    Raises:
        Exception: whatever the hook raised; TypeError when it returned something else than an Allocation.
    """
    hook = enrollment.allocation
    if hook is None:
        return Allocation()
    allocation = hook(registration_id, payload)
    if not isinstance(allocation, Allocation):
        raise TypeError(f"the allocation hook returned {type(allocation).__name__}, not an Allocation")
    return allocation


class DeviceAssigner:
    """Creates and updates the devices registrations assign to the hub.

    Args:
        registry: the hub's identities.
        twins: the hub's twins, which get the initial twin.
        provision: gives a newly created identity its place in every part of the hub.
        trust_certificate: makes the listeners accept a device certificate.
    """

    def __init__(
        self,
        registry: Registry,
        twins: Twins,
        provision: Callable[[Identity], None],
        trust_certificate: Callable[[bytes], None],
    ) -> None:
        self._registry = registry
        self._twins = twins
        self._provision = provision
        self._trust_certificate = trust_certificate

    async def outcome(
        self,
        device: AttestedDevice,
        payload: Any,
        client_version: str | None,
        operation_id: str,
        earlier: RegistrationRecord | None,
    ) -> RegistrationRecord:
        """Decide a registration (allocation, then the device on the hub) and describe it as DPS records it."""
        enrollment = device.enrollment
        registration_id = device.registration_id
        now = iso_time(now_utc())
        etag = base64.b64encode(f'"{uuid.uuid4()}"'.encode()).decode("ascii")
        record = RegistrationRecord(
            registration_id=registration_id,
            status="assigned",
            substatus="initialAssignment",
            device_id=None,
            assigned_hub=None,
            enrollment_group=enrollment.name if isinstance(enrollment, EnrollmentGroup) else None,
            attestation=enrollment.attestation,
            request_payload=payload,
            response_payload=None,
            created=now if earlier is None else earlier.created,
            last_updated=now,
            etag=etag,
            error_code=None,
            error_message=None,
            client_version=client_version,
            operation_id=operation_id,
        )
        if not enrollment.enabled:
            kind = "enrollment group" if isinstance(enrollment, EnrollmentGroup) else "enrollment"
            message = f"the {kind} is disabled"
            return dataclasses.replace(
                record, status="disabled", substatus=None, error_code=ERROR_DISABLED, error_message=message
            )
        try:
            allocation = allocate(enrollment, registration_id, payload)
            device_id = allocation.device_id or getattr(enrollment, "device_id", None) or registration_id
            validate_identity(device_id, "device_id")
            twin = allocation.initial_twin if allocation.initial_twin is not None else enrollment.initial_twin
            desired = initial_desired(twin)
        except Exception as exc:
            return dataclasses.replace(
                record,
                status="failed",
                substatus=None,
                error_code=ERROR_ALLOCATION_FAILED,
                error_message=f"Custom allocation failed: {exc}",
            )
        await self._assign(device_id, device.credential, desired)
        return dataclasses.replace(
            record, device_id=device_id, assigned_hub=self._registry.hostname, response_payload=allocation.payload
        )

    async def _assign(self, device_id: str, credential: DeviceCredential, desired: dict[str, Any]) -> None:
        identity = self._registry.get(device_id)
        if identity is None:
            identity = self._registry.add_device(
                device_id, credential.authentication, credential.primary_key, credential.secondary_key,
                credential.certificate_pem,
            )
            self._provision(identity)
            if desired:
                await self._twins.update_desired(identity, desired)
            return
        # The device exists (registered before, or added by the service): DPS brings its credential
        # up to date and leaves its twin as it is.
        identity.authentication = credential.authentication
        identity.primary_key = credential.primary_key
        identity.secondary_key = credential.secondary_key
        identity.certificate_pem = credential.certificate_pem
        identity.private_key_pem = None
        if credential.certificate_pem is None:
            identity.thumbprints = frozenset()
        else:
            identity.thumbprints = frozenset(certificate_thumbprints(credential.certificate_pem))
            self._trust_certificate(credential.certificate_pem)
