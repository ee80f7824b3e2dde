"""The Device Provisioning Service of the emulated hub: enrollments, registrations, assignments (hub role).

Theory of operation
-------------------
DPS shares the hub's listeners: a CONNECT whose username is
``{idScope}/registrations/{registrationId}/api-version=...`` is a DPS connection
(:meth:`ProvisioningService.claims`), served by
:class:`~aioiothub.emulator.mqtt.dps.DpsHandler`, which asks this part three things:

* :meth:`~ProvisioningService.admit` -- may this registration id connect? The id scope must be this
  service's and the client id the registration id; then :func:`~.dps_enrollments.attest` checks the
  SAS token or client certificate against the enrollments (CONNACK 5 when it fails).
* :meth:`~ProvisioningService.register` -- a register request. The enrollment's allocation (its
  hook, or the default: the enrollment's device id, else the registration id) picks the device id;
  the device is created on the hub with the credential the device attested with (or its credential
  brought up to date when it exists), with the enrollment's initial twin when it is new. The answer
  is 202 ``assigning`` with an operation id and ``retry-after``; the outcome waits in the operation.
  A disabled enrollment's registration ends ``disabled`` and a failing hook ``failed``, with error
  codes, and the hub is left unchanged.
* :meth:`~ProvisioningService.poll` -- an operation-status poll: 202 ``assigning`` for the first
  :attr:`~ProvisioningService.pending_polls` polls, then 200 with the final registration state.

``assignedHub`` is the hub's host name alone, as DPS answers: devices connect to it on the port
they reached DPS on (a real DPS and hub both listen on 8883 and 443), so a client of an emulator on
another port must be given that port for the hub too --
:meth:`IoTHubDeviceClient.from_provisioning <aioiothub.IoTHubDeviceClient.from_provisioning>` carries
it over from the provisioning client.

Injected failures (:meth:`~ProvisioningService.fail_requests`) answer register and poll requests
with an error status and ``retry-after`` before any of this. Every registration is recorded
(:meth:`~ProvisioningService.registrations`) with what the device sent and what it was told.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aioiothub.emulator.hub.dps_enrollments import (
    AllocationHook,
    Attestation,
    AttestedDevice,
    Enrollment,
    EnrollmentGroup,
    attest,
)
from aioiothub.emulator.hub.dps_registration import DeviceAssigner, RegistrationRecord
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.registry import Registry
from aioiothub.emulator.hub.twins import Twins
from aioiothub.emulator.hub.values import check_count
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_ACCEPTED,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    parse_dps_username,
)
from aioiothub.protocol.dps import (
    RegistrationOperation,
    RegistrationState,
    parse_registration_request,
    registration_response_body,
)
from aioiothub.protocol.mqtt import Connect

__all__ = [
    "DEFAULT_ID_SCOPE",
    "DpsAdmission",
    "DpsAnswer",
    "ProvisioningService",
    "RegistrationRecord",
]

logger = logging.getLogger("aioiothub.emulator")

DEFAULT_ID_SCOPE: Final = "0ne00000000"
"""The emulator's id scope unless another is set: a well-known value, as Azurite's account is."""

# Error codes as DPS writes them: the HTTP status, then three digits.
ERROR_BAD_REQUEST: Final = 400004
ERROR_UNKNOWN_OPERATION: Final = 404201
ERROR_THROTTLED: Final = 429001

# Operations are kept for polling; the oldest are forgotten past this many.
_MAX_OPERATIONS: Final = 10_000


@dataclass(frozen=True, slots=True)
class DpsAdmission:
    """The decision on a DPS CONNECT: the CONNACK return code, why, and who was admitted."""

    return_code: int
    reason: str = ""
    device: AttestedDevice | None = None
    client_version: str | None = None


@dataclass(frozen=True, slots=True)
class DpsAnswer:
    """An answer to a register or poll request: status, body, and the ``retry-after`` to put on the topic."""

    status: int
    body: bytes
    retry_after: int | None = None


@dataclass(slots=True, eq=False)
class _Operation:
    registration_id: str
    polls_left: int


def _tracking_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, code: int, message: str, retry_after: int | None = None) -> DpsAnswer:
    tracking_id = _tracking_id()
    operation = RegistrationOperation(None, "failed", error_code=code, error_message=message, tracking_id=tracking_id)
    return DpsAnswer(status, registration_response_body(operation), retry_after)


def _check_retry_after(value: object, argument: str) -> int:
    check_count(value, argument)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


class ProvisioningService:
    """The emulated DPS instance reached as ``hub.dps`` (see the module docstring).

    Example:
        >>> from aioiothub.emulator import Hub
        >>> hub = Hub()
        >>> group = hub.dps.add_enrollment_group("factory")
        >>> hub.dps.id_scope
        '0ne00000000'
        >>> len(group.derive_device_key("sensor-1")) > 0
        True

    Args:
        registry: the hub's identities, where registered devices are created.
        twins: the hub's twins, which get the initial twin.
        provision: gives a newly created identity its place in every part of the hub.
        trust_certificate: makes the listeners accept client certificates issued by (or equal to) a PEM.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        twins: Twins,
        provision: Callable[[Identity], None],
        trust_certificate: Callable[[bytes], None],
    ) -> None:
        self._registry = registry
        self._trust_certificate = trust_certificate
        self._assigner = DeviceAssigner(registry, twins, provision, trust_certificate)
        self._id_scope = DEFAULT_ID_SCOPE
        self._retry_after = 3
        self._pending_polls = 0
        self._enrollments: dict[str, Enrollment] = {}
        self._groups: dict[str, EnrollmentGroup] = {}
        self._records: dict[str, RegistrationRecord] = {}
        self._operations: collections.OrderedDict[str, _Operation] = collections.OrderedDict()
        self._faults: collections.deque[tuple[int, int | None]] = collections.deque()

    # --- settings --------------------------------------------------------------------------------

    @property
    def id_scope(self) -> str:
        """The id scope devices put in their username (``0ne00000000`` unless set)."""
        return self._id_scope

    @id_scope.setter
    def id_scope(self, value: str) -> None:
        if not isinstance(value, str) or not value or not value.isascii() or not value.isalnum():
            raise ValueError(f"id_scope must be ASCII letters and digits, not {value!r}")
        self._id_scope = value

    @property
    def retry_after(self) -> int:
        """The ``retry-after`` (seconds) of each 202 answer; 3, as DPS answers, unless set."""
        return self._retry_after

    @retry_after.setter
    def retry_after(self, value: int) -> None:
        self._retry_after = _check_retry_after(value, "retry_after")

    @property
    def pending_polls(self) -> int:
        """How many status polls are answered 202 ``assigning`` before the final answer (default 0)."""
        return self._pending_polls

    @pending_polls.setter
    def pending_polls(self, value: int) -> None:
        check_count(value, "pending_polls")
        self._pending_polls = value

    # --- enrollments -----------------------------------------------------------------------------

    def add_enrollment(
        self,
        registration_id: str,
        *,
        attestation: Attestation = "symmetric_key",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
        device_id: str | None = None,
        initial_twin: Mapping[str, Any] | None = None,
        enabled: bool = True,
        allocation: AllocationHook | None = None,
    ) -> Enrollment:
        """Enroll one device by registration id.

        Example:
            >>> enrollment = hub.dps.add_enrollment("dev1")  # doctest: +SKIP
            >>> enrollment.primary_key  # doctest: +SKIP
            'q1...='

        Args:
            registration_id: the registration id.
            attestation: ``"symmetric_key"`` (keys generated unless given) or ``"x509"`` (a
                self-signed certificate with CN = registration id is generated unless
                ``certificate_pem`` is given; its thumbprint is enrolled).
            primary_key, secondary_key: base64 keys to use instead of random ones.
            certificate_pem: the device's certificate (CN = registration id; self-signed, or issued
                by a CA the emulator trusts).
            device_id: the device id to create on the hub (default: the registration id).
            initial_twin: ``{"properties": {"desired": {...}}}`` for a newly created device.
            enabled: ``False`` makes registrations end with status ``disabled``.
            allocation: a custom allocation hook (:data:`AllocationHook`).

        Raises:
            ValueError: the registration id is invalid or already enrolled, or an option does not fit.
        """
        if registration_id in self._enrollments:
            raise ValueError(f"registration_id: {registration_id!r} is already enrolled")
        enrollment = Enrollment(
            registration_id,
            attestation=attestation,
            primary_key=primary_key,
            secondary_key=secondary_key,
            certificate_pem=certificate_pem,
            device_id=device_id,
            initial_twin=initial_twin,
            enabled=enabled,
            allocation=allocation,
        )
        if enrollment.certificate_pem is not None:
            self._trust_certificate(enrollment.certificate_pem)
        self._enrollments[registration_id] = enrollment
        return enrollment

    def add_enrollment_group(
        self,
        name: str,
        *,
        attestation: Attestation = "symmetric_key",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        ca_certificate_pem: bytes | None = None,
        initial_twin: Mapping[str, Any] | None = None,
        enabled: bool = True,
        allocation: AllocationHook | None = None,
    ) -> EnrollmentGroup:
        """Create an enrollment group.

        Example:
            >>> group = hub.dps.add_enrollment_group("factory")  # doctest: +SKIP
            >>> device_key = group.derive_device_key("sensor-1")  # doctest: +SKIP

        Args:
            name: the group's name.
            attestation: ``"symmetric_key"`` (group keys generated unless given; devices sign with
                ``derive_device_key(group_key, registration_id)``) or ``"x509"`` (devices present a
                certificate issued by the group's CA, CN = registration id; a CA is generated unless
                ``ca_certificate_pem`` is given).
            primary_key, secondary_key: base64 group keys to use instead of random ones.
            ca_certificate_pem: the CA certificate that issues the group's device certificates.
            initial_twin: ``{"properties": {"desired": {...}}}`` for newly created devices.
            enabled: ``False`` makes registrations end with status ``disabled``.
            allocation: a custom allocation hook (:data:`AllocationHook`).

        Raises:
            ValueError: the name is invalid or taken, or an option does not fit.
        """
        if name in self._groups:
            raise ValueError(f"name: enrollment group {name!r} already exists")
        group = EnrollmentGroup(
            name,
            attestation=attestation,
            primary_key=primary_key,
            secondary_key=secondary_key,
            ca_certificate_pem=ca_certificate_pem,
            initial_twin=initial_twin,
            enabled=enabled,
            allocation=allocation,
        )
        if group.ca_certificate_pem is not None:
            self._trust_certificate(group.ca_certificate_pem)
        self._groups[name] = group
        return group

    def enrollment(self, registration_id: str) -> Enrollment:
        """The individual enrollment of ``registration_id``.

        Raises:
            ValueError: there is none.
        """
        try:
            return self._enrollments[registration_id]
        except KeyError:
            raise ValueError(f"registration_id: {registration_id!r} is not enrolled") from None

    def enrollment_group(self, name: str) -> EnrollmentGroup:
        """The enrollment group called ``name``.

        Raises:
            ValueError: there is none.
        """
        try:
            return self._groups[name]
        except KeyError:
            raise ValueError(f"name: there is no enrollment group {name!r}") from None

    def trusted_certificates(self) -> list[bytes]:
        """Every certificate the listeners must trust for DPS clients (enrolled ones and group CAs)."""
        pems = [enrollment.certificate_pem for enrollment in self._enrollments.values()]
        pems += [group.ca_certificate_pem for group in self._groups.values()]
        return [pem for pem in pems if pem is not None]

    def registrations(self) -> list[RegistrationRecord]:
        """The latest registration of each registration id, oldest first."""
        return list(self._records.values())

    # --- fault injection -------------------------------------------------------------------------

    def fail_requests(self, count: int, status: int = 429, *, retry_after: int | None = 1) -> None:
        """Answer the next ``count`` register or poll requests with ``status`` (0 cancels).

        Example:
            >>> hub.dps.fail_requests(2, 429, retry_after=1)  # doctest: +SKIP

        Args:
            count: how many requests to answer so.
            status: 429 (throttled) or a 5xx status, which devices retry; or a 4xx one, which ends
                their registration.
            retry_after: the ``retry-after`` on the answer's topic; ``None`` leaves it out.
        """
        check_count(count, "count")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status < 600:
            raise ValueError(f"status must be an error status from 400 to 599, not {status!r}")
        if retry_after is not None:
            _check_retry_after(retry_after, "retry_after")
        self._faults = collections.deque([(status, retry_after)] * count)

    def _take_fault(self) -> DpsAnswer | None:
        if not self._faults:
            return None
        status, retry_after = self._faults.popleft()
        code = ERROR_THROTTLED if status == 429 else status * 1000
        return _error(status, code, f"failed by fail_requests() with {status}", retry_after)

    # --- what a DPS connection asks (hub role) ---------------------------------------------------

    def claims(self, username: str | None) -> bool:
        """Whether a CONNECT with this username is for DPS rather than for the hub."""
        if username is None:
            return False
        parts = username.split("/", 3)
        # A hub username is {hostname}/{device}[/{module}]/?...: its first part is the hub's name.
        return len(parts) == 4 and parts[1] == "registrations" and parts[0].lower() != self._registry.hostname.lower()

    def admit(self, connect: Connect, client_certificate_der: bytes | None, *, now: float) -> DpsAdmission:
        """Decide on a DPS CONNECT (see the module docstring)."""
        try:
            username = parse_dps_username(connect.username or "")
        except ProtocolError as exc:
            return DpsAdmission(CONNACK_NOT_AUTHORIZED, str(exc))
        if username.id_scope != self._id_scope:
            return DpsAdmission(CONNACK_NOT_AUTHORIZED, f"id scope {username.id_scope!r} is not this DPS's")
        registration_id = username.registration_id
        if connect.client_id != registration_id:
            return DpsAdmission(
                CONNACK_IDENTIFIER_REJECTED,
                f"client id {connect.client_id!r} is not the registration id {registration_id!r}",
            )
        attested = attest(
            self._enrollments.get(registration_id),
            list(self._groups.values()),
            id_scope=self._id_scope,
            registration_id=registration_id,
            password=connect.password,
            client_certificate_der=client_certificate_der,
            now=now,
        )
        if isinstance(attested, str):
            return DpsAdmission(CONNACK_NOT_AUTHORIZED, attested)
        return DpsAdmission(CONNACK_ACCEPTED, device=attested, client_version=username.client_version)

    async def register(self, device: AttestedDevice, body: bytes, client_version: str | None) -> DpsAnswer:
        """Serve a register request from an admitted device."""
        fault = self._take_fault()
        if fault is not None:
            return fault
        try:
            request = parse_registration_request(body)
        except ProtocolError as exc:
            return _error(400, ERROR_BAD_REQUEST, str(exc))
        registration_id = device.registration_id
        if request.registration_id != registration_id:
            message = f"registrationId {request.registration_id!r} is not the connection's {registration_id!r}"
            return _error(400, ERROR_BAD_REQUEST, message)
        operation_id = f"4.{secrets.token_hex(8)}.{uuid.uuid4()}"
        earlier = self._records.get(registration_id)
        record = await self._assigner.outcome(device, request.payload, client_version, operation_id, earlier)
        self._records.pop(registration_id, None)
        self._records[registration_id] = record
        self._operations[operation_id] = _Operation(registration_id, self._pending_polls)
        while len(self._operations) > _MAX_OPERATIONS:
            self._operations.popitem(last=False)
        logger.info("DPS: %s registered: %s (operation %s)", registration_id, record.status, operation_id)
        return self._assigning(operation_id)

    def poll(self, device: AttestedDevice, operation_id: str) -> DpsAnswer:
        """Serve an operation-status poll from an admitted device."""
        fault = self._take_fault()
        if fault is not None:
            return fault
        operation = self._operations.get(operation_id)
        record = self._records.get(device.registration_id)
        if operation is None or operation.registration_id != device.registration_id or record is None:
            return _error(404, ERROR_UNKNOWN_OPERATION, f"operation {operation_id!r} is not known")
        if record.operation_id == operation_id:
            self._records[device.registration_id] = dataclasses.replace(record, polls=record.polls + 1)
        if operation.polls_left:
            operation.polls_left -= 1
            return self._assigning(operation_id)
        state = RegistrationState(
            registration_id=record.registration_id,
            assigned_hub=record.assigned_hub,
            device_id=record.device_id,
            status=record.status,
            substatus=record.substatus,
            payload=record.response_payload,
            created=record.created,
            last_updated=record.last_updated,
            etag=record.etag,
        )
        final = RegistrationOperation(
            operation_id,
            record.status,
            state,
            error_code=record.error_code,
            error_message=record.error_message,
            tracking_id=None if record.error_code is None else _tracking_id(),
        )
        return DpsAnswer(200, registration_response_body(final))

    def _assigning(self, operation_id: str) -> DpsAnswer:
        body = registration_response_body(RegistrationOperation(operation_id, "assigning"))
        return DpsAnswer(202, body, self._retry_after)

    # --- assignment ------------------------------------------------------------------------------
