"""Provision, then connect: the provider of a device client whose hub and identity come from DPS.

:meth:`IoTHubDeviceClient.from_provisioning <aioiothub.IoTHubDeviceClient.from_provisioning>`
registers through a :class:`~aioiothub.ProvisioningClient` and gives an ordinary device client a
:class:`ProvisionedIdentity` for the assigned hub and device id, authenticating with the same
credential the device showed DPS (its symmetric key -- for an enrollment group, the derived one --
or its certificate), which is the credential DPS gives the device on its hub.

With ``reprovision=True``, a hub that refuses that credential when the client connects (CONNACK 4
or 5: the device was moved to another hub, deleted, or its key changed) makes the client register
again and connect to wherever DPS now assigns it, once per ``async with``.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from aioiothub._client.settings import build_settings
from aioiothub._provisioning.client import ProvisioningClient
from aioiothub._provisioning.registration import RegistrationResult
from aioiothub._session.session import SessionSettings
from aioiothub.exceptions import AuthenticationError
from aioiothub.options import ClientOptions

__all__ = ["ProvisionedIdentity", "hub_settings", "provision"]

_log = logging.getLogger("aioiothub")

# Options of the provisioning connection that the hub connection uses too unless told otherwise:
# a real DPS and a real hub listen on the same ports, and the emulator serves both on one listener.
_INHERITED = ("port", "websockets", "proxy", "ssl_context", "product_info", "model_id", "keepalive",
              "request_timeout", "sas_ttl", "transport")


def hub_settings(
    provisioning: ProvisioningClient, result: RegistrationResult, options: ClientOptions
) -> SessionSettings:
    if not result.assigned_hub or not result.device_id:
        raise ValueError("the registration result names no assigned hub and device id")
    inherited = provisioning.options
    merged: dict[str, Any] = {name: inherited[name] for name in _INHERITED if name in inherited}
    merged.update(options)
    return build_settings(
        hostname=result.assigned_hub,
        device_id=result.device_id,
        module_id=None,
        shared_access_key=provisioning.device_key,
        sas_token=None,
        renew_sas_token=None,
        x509=provisioning.x509,
        options=ClientOptions(**merged),  # type: ignore[typeddict-item]
    )


async def _register(provisioning: ProvisioningClient, payload: Any, deadline: float) -> RegistrationResult:
    if provisioning.connected:
        return await provisioning.register(payload, timeout=deadline)
    async with provisioning:
        return await provisioning.register(payload, timeout=deadline)


class ProvisionedIdentity:
    """The hub, device id and credential DPS assigned: the provider a provisioned client is given.

    It implements :class:`~aioiothub._client.hub_client.IdentityProvider`: the client takes its
    settings from the current registration each time it is entered, and with ``reprovision`` a
    refused credential makes it register again, once per entry, and connect where DPS now says.

    Attributes:
        registration: the registration result the client connects with.
    """

    def __init__(
        self,
        provisioning: ProvisioningClient,
        registration: RegistrationResult,
        *,
        payload: Any,
        register_timeout: float,
        reprovision: bool,
        options: ClientOptions,
    ) -> None:
        self._provisioning = provisioning
        self._payload = payload
        self._register_timeout = register_timeout
        self._reprovision = reprovision
        self._hub_options = MappingProxyType(dict(options))
        self.registration = registration

    def settings(self) -> SessionSettings:
        """The settings for the hub and device id of the current registration."""
        return hub_settings(self._provisioning, self.registration, ClientOptions(**self._hub_options))  # type: ignore[typeddict-item]

    async def refused(self, error: AuthenticationError) -> bool:
        """The hub refused the credential: register again when ``reprovision`` allows it."""
        if not self._reprovision:
            return False
        _log.warning(
            "hub %s refused device %r (%s); registering with DPS again",
            self.registration.assigned_hub,
            self.registration.device_id,
            error,
        )
        self.registration = await _register(self._provisioning, self._payload, self._register_timeout)
        return True


async def provision(
    provisioning: ProvisioningClient,
    *,
    payload: Any,
    register_timeout: float,
    reprovision: bool,
    options: ClientOptions,
) -> ProvisionedIdentity:
    """Register through ``provisioning``; the provider of the assigned identity, for a client to be given."""
    if not isinstance(provisioning, ProvisioningClient):
        raise TypeError(f"provisioning must be an aioiothub.ProvisioningClient, not {type(provisioning).__name__}")
    if not isinstance(reprovision, bool):
        raise TypeError("reprovision must be True or False")
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token", "x509"):
        if name in options:
            raise TypeError(f"{name} comes from the registration; do not pass it")
    # Checked before anything is sent.
    hub_settings(provisioning, RegistrationResult("assigned", "check", "check.invalid"), options)
    registration = await _register(provisioning, payload, register_timeout)
    return ProvisionedIdentity(
        provisioning,
        registration,
        payload=payload,
        register_timeout=register_timeout,
        reprovision=reprovision,
        options=options,
    )
