"""CONNECT decisions: who may connect, as IoT Hub decides it.

Theory of operation
-------------------
:func:`admit` is a pure function of the registry, the CONNECT packet, the client certificate and the
time: it reads the registry and changes nothing but the accepted identity's ``model_id`` and
``product_info``. The checks run in the order IoT Hub applies them, and the first that fails decides
the CONNACK return code:

1. the username parses and names this hub (else 5, not authorized);
2. the client id is the username's ``device[/module]`` (else 2, identifier rejected);
3. the identity is registered (else 5) and its device enabled (else 3, server unavailable);
4. its credential holds: a SAS token signed with the primary or secondary key, unexpired and scoped
   to the identity; or a client certificate with a registered thumbprint (``"x509"``) or issued by
   the hub's CA with the identity's label as common name (``"x509_ca"``) -- else 5.

Injected refusals (:meth:`Hub.refuse_connects <aioiothub.emulator.Hub.refuse_connects>`) come before
all of this and live in :mod:`.faults`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from aioiothub.emulator.certs import certificate_common_name, certificate_thumbprints
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.registry import Registry
from aioiothub.exceptions import CredentialError, ProtocolError
from aioiothub.protocol.connect import (
    CONNACK_ACCEPTED,
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_SERVER_UNAVAILABLE,
    client_id,
    parse_username,
)
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.sas import device_resource_uri, verify_sas_token

__all__ = ["Admission", "admit"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The hub's decision on a CONNECT.

    Attributes:
        return_code: the CONNACK return code; 0 accepts.
        reason: why a connection was refused (for the log), ``""`` when accepted.
        identity: the authenticated identity when accepted.
        token_expiry: the SAS token's expiry in Unix seconds, or ``None`` (X.509).
    """

    return_code: int
    reason: str = ""
    identity: Identity | None = None
    token_expiry: int | None = None


def admit(registry: Registry, connect: Connect, client_certificate_der: bytes | None, *, now: float) -> Admission:
    """Decide on a CONNECT (see the module docstring for the checks and their order).

    Args:
        registry: the identities that may connect.
        connect: the CONNECT packet.
        client_certificate_der: the certificate the client presented during the TLS handshake.
        now: the current time in Unix seconds.

    Returns:
        The decision; on acceptance the identity's ``model_id`` and ``product_info`` are updated.
    """
    if connect.username is None:
        return Admission(CONNACK_NOT_AUTHORIZED, "CONNECT has no username")
    try:
        username = parse_username(connect.username)
    except ProtocolError as exc:
        return Admission(CONNACK_NOT_AUTHORIZED, str(exc))
    if username.hostname.lower() != registry.hostname.lower():
        return Admission(
            CONNACK_NOT_AUTHORIZED,
            f"username host name {username.hostname!r} is not this hub ({registry.hostname!r})",
        )
    expected_client_id = client_id(username.device_id, username.module_id)
    if connect.client_id != expected_client_id:
        return Admission(
            CONNACK_IDENTIFIER_REJECTED,
            f"client id {connect.client_id!r} does not match username {connect.username!r}",
        )
    identity = registry.get(username.device_id, username.module_id)
    if identity is None:
        return Admission(CONNACK_NOT_AUTHORIZED, f"{expected_client_id!r} is not registered")
    if not registry.lookup(username.device_id).enabled:
        return Admission(CONNACK_SERVER_UNAVAILABLE, f"device {username.device_id!r} is disabled")
    if identity.authentication == "sas":
        admission = _admit_sas(registry, identity, connect.password, now)
    else:
        admission = _admit_certificate(registry, identity, connect.password, client_certificate_der)
    if admission.return_code == CONNACK_ACCEPTED:
        identity.model_id = username.model_id
        identity.product_info = username.product_info
    return admission


def _admit_sas(registry: Registry, identity: Identity, password: bytes | None, now: float) -> Admission:
    if not password:
        return Admission(CONNACK_NOT_AUTHORIZED, f"{identity.label!r} sent no SAS token")
    try:
        token = password.decode("utf-8")
    except UnicodeDecodeError:
        return Admission(CONNACK_NOT_AUTHORIZED, "the password is not UTF-8")
    resource_uri = device_resource_uri(registry.hostname, identity.device_id, identity.module_id)
    failures: list[str] = []
    for name, key in (("primary", identity.primary_key), ("secondary", identity.secondary_key)):
        assert key is not None
        try:
            parsed = verify_sas_token(token, key, resource_uri=resource_uri, now=now)
        except CredentialError as exc:
            failures.append(f"{name} key: {exc}")
        else:
            return Admission(CONNACK_ACCEPTED, identity=identity, token_expiry=parsed.expiry)
    return Admission(CONNACK_NOT_AUTHORIZED, f"SAS token refused for {identity.label!r}: {'; '.join(failures)}")


def _admit_certificate(registry: Registry, identity: Identity, password: bytes | None, der: bytes | None) -> Admission:
    label = identity.label
    if password:
        return Admission(CONNACK_NOT_AUTHORIZED, f"X.509 identity {label!r} sent a password")
    if der is None:
        return Admission(CONNACK_NOT_AUTHORIZED, f"X.509 identity {label!r} sent no client certificate")
    if identity.authentication == "x509":
        if identity.thumbprints.isdisjoint(certificate_thumbprints(der)):
            return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate thumbprint is not {label!r}'s")
        return Admission(CONNACK_ACCEPTED, identity=identity)
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.verify_directly_issued_by(registry.ca_certificate())
    except (ValueError, TypeError, InvalidSignature):
        return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate of {label!r} is not issued by the hub CA")
    try:
        common_name = certificate_common_name(der)
    except ValueError:
        common_name = ""
    if common_name != label:
        return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate common name {common_name!r} is not {label!r}")
    return Admission(CONNACK_ACCEPTED, identity=identity)
