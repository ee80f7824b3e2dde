"""Who sent an HTTPS request to the hub: the same checks as an MQTT CONNECT, on a request.

A device or module authenticates a REST call with ``Authorization: SharedAccessSignature …``
signed with its primary or secondary key, unexpired and scoped to it, or, for X.509 identities,
with the client certificate of the TLS connection (a registered thumbprint, or issued by the hub's
CA with the identity as common name). Refusals are 401, as IoT Hub answers them.
"""

from __future__ import annotations

import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from aioiothub.emulator.certs import certificate_common_name, certificate_thumbprints
from aioiothub.emulator.hub import Hub, Identity
from aioiothub.emulator.rest.https import HttpError, HttpRequest
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.sas import device_resource_uri, verify_sas_token

__all__ = ["authenticate"]

_UNAUTHORIZED = 401002


def _refuse(message: str) -> HttpError:
    return HttpError(401, message, error_code=_UNAUTHORIZED)


def _check_sas(hub: Hub, identity: Identity, token: str, now: float) -> None:
    resource_uri = device_resource_uri(hub.hostname, identity.device_id, identity.module_id)
    failures: list[str] = []
    for name, key in (("primary", identity.primary_key), ("secondary", identity.secondary_key)):
        if key is None:
            continue
        try:
            verify_sas_token(token, key, resource_uri=resource_uri, now=now)
        except CredentialError as exc:
            failures.append(f"{name} key: {exc}")
        else:
            return
    raise _refuse(f"SAS token refused for {resource_uri!r}: {'; '.join(failures) or 'no key'}")


def _check_certificate(hub: Hub, identity: Identity, der: bytes | None, label: str) -> None:
    if der is None:
        raise _refuse(f"X.509 identity {label!r} sent no client certificate and no SAS token")
    if identity.authentication == "x509":
        if identity.thumbprints.isdisjoint(certificate_thumbprints(der)):
            raise _refuse(f"client certificate thumbprint is not {label!r}'s")
        return
    try:
        certificate = x509.load_der_x509_certificate(der)
        authority = x509.load_pem_x509_certificate(hub.certificate_authority.certificate_pem)
        certificate.verify_directly_issued_by(authority)
        common_name = certificate_common_name(der)
    except (ValueError, TypeError, InvalidSignature):
        raise _refuse(f"client certificate of {label!r} is not issued by the hub CA") from None
    if common_name != label:
        raise _refuse(f"client certificate common name {common_name!r} is not {label!r}")


def authenticate(hub: Hub, request: HttpRequest, device_id: str, module_id: str | None = None) -> Identity:
    """Check that ``request`` comes from the registered, enabled identity ``device_id[/module_id]``.

    Raises:
        HttpError: 401 when the identity is unknown or disabled, or its credentials do not hold.
    """
    label = device_id if module_id is None else f"{device_id}/{module_id}"
    try:
        identity = hub.identity(device_id, module_id)
        device = hub.identity(device_id)
    except ValueError:
        raise _refuse(f"{label!r} is not registered") from None
    if not device.enabled:
        raise _refuse(f"device {device_id!r} is disabled")
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if identity.authentication != "sas":
            raise _refuse(f"X.509 identity {label!r} sent a SAS token")
        _check_sas(hub, identity, authorization, time.time())
    elif identity.authentication == "sas":
        raise _refuse(f"{label!r} sent no Authorization header")
    else:
        der = request.peer.client_certificate_der if request.peer is not None else None
        _check_certificate(hub, identity, der, label)
    return identity
