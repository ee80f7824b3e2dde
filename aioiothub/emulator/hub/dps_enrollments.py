"""DPS enrollments, and who may register: individual enrollments and enrollment groups (hub role).

An **individual enrollment** names one registration id and its attestation: a symmetric key pair,
or an X.509 certificate known by its thumbprint. An **enrollment group** admits any registration
id that proves membership: with a symmetric group key, by a SAS token signed with the key derived
from that registration id (``derive_device_key``); with an X.509 CA, by a client certificate the
CA issued with the registration id as its common name.

Theory of operation
-------------------
:func:`attest` is a pure function of the enrollments, the CONNECT's password or client certificate
and the time. As in DPS, an individual enrollment for the registration id takes precedence: when
one exists, groups are not consulted. A refused attestation is CONNACK 5 (not authorized), with the
reason for the log. An accepted one says which enrollment matched and which credential the device
gets on its hub: the enrollment's keys, the keys derived from the group's, or its certificate.
Whether an enrollment is enabled is decided later, at registration, as DPS does (status ``disabled``).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from aioiothub.emulator.certs import (
    CertificateAuthority,
    certificate_common_name,
    certificate_thumbprints,
    generate_self_signed_certificate,
)
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.connect import validate_identity
from aioiothub.protocol.sas import decode_key, derive_device_key, dps_resource_uri, verify_sas_token
from aioiothub.protocol.twin import validate_patch, validate_section_size

__all__ = [
    "Allocation",
    "AllocationHook",
    "Attestation",
    "AttestedDevice",
    "DeviceCredential",
    "Enrollment",
    "EnrollmentGroup",
    "attest",
    "initial_desired",
]

Attestation: TypeAlias = Literal["symmetric_key", "x509"]
"""How devices of an enrollment prove who they are."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a custom allocation hook decides for one registration.

    Attributes:
        device_id: the device id to create on the hub; ``None`` keeps the default (the
            enrollment's device id, else the registration id).
        initial_twin: the twin to create the device with (``{"tags": ..., "properties":
            {"desired": ...}}``, as in DPS); ``None`` keeps the enrollment's.
        payload: what DPS returns to the device in ``registrationState.payload``.
    """

    device_id: str | None = None
    initial_twin: Mapping[str, Any] | None = None
    payload: Any = None


AllocationHook: TypeAlias = Callable[[str, Any], Allocation]
"""Stands in for a custom allocation function: called with the registration id and the payload the
device sent; an exception (or anything but an :class:`Allocation`) fails the registration."""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """The credential a registered device gets on its hub.

    Attributes:
        authentication: ``"sas"`` or ``"x509"`` (a certificate known by its thumbprint).
        primary_key: the primary key (``"sas"``).
        secondary_key: the secondary key (``"sas"``).
        certificate_pem: the device certificate (``"x509"``).
    """

    authentication: Literal["sas", "x509"]
    primary_key: str | None = None
    secondary_key: str | None = None
    certificate_pem: bytes | None = None

    def __repr__(self) -> str:
        return f"DeviceCredential(authentication={self.authentication!r})"


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _check_key(key: str | None, argument: str) -> str:
    if key is None:
        return _new_key()
    try:
        decode_key(key)
    except (CredentialError, TypeError) as exc:
        raise ValueError(f"{argument}: {exc}") from None
    return key


def _check_attestation(attestation: object) -> Attestation:
    if attestation not in ("symmetric_key", "x509"):
        raise ValueError(f"attestation must be 'symmetric_key' or 'x509', not {attestation!r}")
    return attestation


def initial_desired(initial_twin: Mapping[str, Any] | None, argument: str = "initial_twin") -> dict[str, Any]:
    """The desired properties of a DPS initial twin, checked against the twin rules.

    Args:
        initial_twin: ``{"tags": {...}, "properties": {"desired": {...}}}`` (every part optional), or
            ``None``. Tags are accepted and not kept: the emulator's twins have no tags.
        argument: the name used in error messages.

    Raises:
        TypeError, ValueError: the twin has another shape or breaks the twin rules.
    """
    if initial_twin is None:
        return {}
    if not isinstance(initial_twin, Mapping):
        raise TypeError(f"{argument} must be a mapping, not {type(initial_twin).__name__}")
    unknown = set(initial_twin) - {"tags", "properties"}
    if unknown:
        raise ValueError(f"{argument}: unknown part {sorted(unknown)[0]!r} (expected 'tags' and 'properties')")
    properties = initial_twin.get("properties") or {}
    if not isinstance(properties, Mapping) or set(properties) - {"desired"}:
        raise ValueError(f"{argument}: 'properties' may hold only 'desired'")
    desired = properties.get("desired") or {}
    if not isinstance(desired, Mapping):
        raise TypeError(f"{argument}: properties.desired must be a mapping")
    validate_patch(desired, argument=f"{argument}.properties.desired")
    validate_section_size(desired, argument=f"{argument}.properties.desired")
    return dict(desired)


def _check_hook(allocation: object) -> AllocationHook | None:
    if allocation is not None and not callable(allocation):
        raise TypeError("allocation must be callable or None")
    return allocation


class Enrollment:
    """An individual enrollment: one registration id and how it attests.

    Attributes:
        registration_id: the registration id it admits.
        attestation: ``"symmetric_key"`` or ``"x509"``.
        primary_key, secondary_key: the keys (symmetric key attestation), else ``None``.
        certificate_pem: the device certificate (X.509), else ``None``.
        private_key_pem: the certificate's private key when the emulator generated it, else ``None``.
        thumbprints: the certificate's SHA-1 and SHA-256 thumbprints (X.509).
        device_id: the device id to create; ``None`` means the registration id.
        initial_twin: the twin a newly created device starts with.
        enabled: a disabled enrollment's registrations end with status ``disabled``.
        allocation: the custom allocation hook, or ``None``.
    """

    def __init__(
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
    ) -> None:
        validate_identity(registration_id, "registration_id")
        self.attestation = _check_attestation(attestation)
        if device_id is not None:
            validate_identity(device_id, "device_id")
        initial_desired(initial_twin)
        self.registration_id = registration_id
        self.device_id = device_id
        self.initial_twin = initial_twin
        self.enabled = bool(enabled)
        self.allocation = _check_hook(allocation)
        self.primary_key: str | None = None
        self.secondary_key: str | None = None
        self.certificate_pem: bytes | None = None
        self.private_key_pem: bytes | None = None
        self.thumbprints: frozenset[str] = frozenset()
        if attestation == "symmetric_key":
            if certificate_pem is not None:
                raise ValueError("certificate_pem is only for attestation='x509'")
            self.primary_key = _check_key(primary_key, "primary_key")
            self.secondary_key = _check_key(secondary_key, "secondary_key")
            return
        if primary_key is not None or secondary_key is not None:
            raise ValueError("primary_key/secondary_key are only for attestation='symmetric_key'")
        if certificate_pem is None:
            certificate_pem, self.private_key_pem = generate_self_signed_certificate(registration_id)
        if certificate_common_name(certificate_pem) != registration_id:
            raise ValueError(f"certificate_pem: its common name must be the registration id {registration_id!r}")
        self.certificate_pem = certificate_pem
        self.thumbprints = frozenset(certificate_thumbprints(certificate_pem))

    def __repr__(self) -> str:
        return (
            f"Enrollment(registration_id={self.registration_id!r}, attestation={self.attestation!r}, "
            f"enabled={self.enabled!r})"
        )


class EnrollmentGroup:
    """An enrollment group: any registration id holding the group's derived key or a certificate of its CA.

    Attributes:
        name: the group's name.
        attestation: ``"symmetric_key"`` or ``"x509"``.
        primary_key, secondary_key: the group keys (symmetric key attestation), else ``None``.
        certificate_authority: the group's CA when the emulator holds its key (a generated one),
            to issue device certificates with :meth:`issue_device_certificate`; else ``None``.
        ca_certificate_pem: the CA certificate that device certificates must be issued by (X.509).
        initial_twin: the twin a newly created device starts with.
        enabled: a disabled group's registrations end with status ``disabled``.
        allocation: the custom allocation hook, or ``None``.
    """

    def __init__(
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
    ) -> None:
        validate_identity(name, "name")
        self.attestation = _check_attestation(attestation)
        initial_desired(initial_twin)
        self.name = name
        self.initial_twin = initial_twin
        self.enabled = bool(enabled)
        self.allocation = _check_hook(allocation)
        self.primary_key: str | None = None
        self.secondary_key: str | None = None
        self.certificate_authority: CertificateAuthority | None = None
        self.ca_certificate_pem: bytes | None = None
        self._ca_certificate: x509.Certificate | None = None
        if attestation == "symmetric_key":
            if ca_certificate_pem is not None:
                raise ValueError("ca_certificate_pem is only for attestation='x509'")
            self.primary_key = _check_key(primary_key, "primary_key")
            self.secondary_key = _check_key(secondary_key, "secondary_key")
            return
        if primary_key is not None or secondary_key is not None:
            raise ValueError("primary_key/secondary_key are only for attestation='symmetric_key'")
        if ca_certificate_pem is None:
            self.certificate_authority = CertificateAuthority.generate(f"{name} enrollment group CA"[:64])
            ca_certificate_pem = self.certificate_authority.certificate_pem
        try:
            self._ca_certificate = x509.load_pem_x509_certificate(ca_certificate_pem)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ca_certificate_pem is not a PEM certificate: {exc}") from None
        self.ca_certificate_pem = ca_certificate_pem

    def derive_device_key(self, registration_id: str) -> str:
        """The primary key of one device of a symmetric-key group (what the device computes)."""
        if self.primary_key is None:
            raise ValueError(f"enrollment group {self.name!r} uses X.509, not a symmetric key")
        return derive_device_key(self.primary_key, registration_id)

    def issue_device_certificate(self, registration_id: str) -> tuple[bytes, bytes]:
        """A device certificate with CN = ``registration_id`` from the group's CA: ``(cert PEM, key PEM)``.

        Raises:
            ValueError: the group has no CA whose key the emulator holds.
        """
        if self.certificate_authority is None:
            raise ValueError(f"enrollment group {self.name!r} holds no CA key to issue certificates with")
        validate_identity(registration_id, "registration_id")
        return self.certificate_authority.issue_client_certificate(registration_id)

    def issued(self, certificate: x509.Certificate) -> bool:
        """Whether the group's CA issued ``certificate`` (X.509 groups)."""
        if self._ca_certificate is None:
            return False
        try:
            certificate.verify_directly_issued_by(self._ca_certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def __repr__(self) -> str:
        return f"EnrollmentGroup(name={self.name!r}, attestation={self.attestation!r}, enabled={self.enabled!r})"


@dataclass(frozen=True, slots=True)
class AttestedDevice:
    """A registration id that proved who it is, the enrollment that admitted it, its hub credential."""

    registration_id: str
    enrollment: Enrollment | EnrollmentGroup
    credential: DeviceCredential
    token_expiry: int | None


def _attest_token(
    enrollment: Enrollment | None,
    groups: list[EnrollmentGroup],
    registration_id: str,
    token: str,
    resource_uri: str,
    now: float,
) -> AttestedDevice | str:
    candidates: list[tuple[Enrollment | EnrollmentGroup, str, str]] = []
    if enrollment is not None:
        if enrollment.primary_key is None or enrollment.secondary_key is None:
            return f"the enrollment of {registration_id!r} uses X.509, and the device sent a SAS token"
        candidates.append((enrollment, enrollment.primary_key, enrollment.secondary_key))
    else:
        for group in groups:
            if group.primary_key is not None and group.secondary_key is not None:
                primary = derive_device_key(group.primary_key, registration_id)
                candidates.append((group, primary, derive_device_key(group.secondary_key, registration_id)))
    for owner, primary, secondary in candidates:
        for key in (primary, secondary):
            try:
                parsed = verify_sas_token(token, key, resource_uri=resource_uri, now=now)
            except CredentialError as exc:
                failure = str(exc)
                continue
            credential = DeviceCredential("sas", primary_key=primary, secondary_key=secondary)
            return AttestedDevice(registration_id, owner, credential, parsed.expiry)
    if not candidates:
        return f"no enrollment or symmetric-key enrollment group for {registration_id!r}"
    where = "its enrollment" if enrollment is not None else "any enrollment group"
    return f"the SAS token of {registration_id!r} does not verify with the keys of {where} ({failure})"


def _attest_certificate(
    enrollment: Enrollment | None, groups: list[EnrollmentGroup], registration_id: str, der: bytes
) -> AttestedDevice | str:
    try:
        certificate = x509.load_der_x509_certificate(der)
        common_name = certificate_common_name(der)
    except ValueError:
        return "the client certificate cannot be read or has no common name"
    if common_name != registration_id:
        return f"the certificate's common name {common_name!r} is not the registration id {registration_id!r}"
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    if enrollment is not None:
        if enrollment.attestation != "x509":
            return f"the enrollment of {registration_id!r} uses a symmetric key, and the device sent a certificate"
        if enrollment.thumbprints.isdisjoint(certificate_thumbprints(der)):
            return f"the certificate's thumbprint is not the one enrolled for {registration_id!r}"
        return AttestedDevice(registration_id, enrollment, DeviceCredential("x509", certificate_pem=pem), None)
    for group in groups:
        if group.attestation == "x509" and group.issued(certificate):
            return AttestedDevice(registration_id, group, DeviceCredential("x509", certificate_pem=pem), None)
    return f"no enrollment for {registration_id!r} and no X.509 enrollment group whose CA issued its certificate"


def attest(
    enrollment: Enrollment | None,
    groups: list[EnrollmentGroup],
    *,
    id_scope: str,
    registration_id: str,
    password: bytes | None,
    client_certificate_der: bytes | None,
    now: float,
) -> AttestedDevice | str:
    """Check a registration's credential (see the module docstring).

    Returns:
        The attested device, or the reason it is refused.
    """
    if password:
        try:
            token = password.decode("utf-8")
        except UnicodeDecodeError:
            return "the password is not UTF-8"
        resource_uri = dps_resource_uri(id_scope, registration_id)
        return _attest_token(enrollment, groups, registration_id, token, resource_uri, now)
    if client_certificate_der is None:
        return f"{registration_id!r} sent neither a SAS token nor a client certificate"
    return _attest_certificate(enrollment, groups, registration_id, client_certificate_der)
