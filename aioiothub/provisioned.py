"""Provision, then connect: a device client whose hub and identity come from DPS.

:meth:`IoTHubDeviceClient.from_provisioning <aioiothub.IoTHubDeviceClient.from_provisioning>`
registers through a :class:`~aioiothub.ProvisioningClient` and returns a
:class:`ProvisionedDeviceClient` for the assigned hub and device id, authenticating with the same
credential the device showed DPS (its symmetric key -- for an enrollment group, the derived one --
or its certificate), which is the credential DPS gives the device on its hub.

With ``reprovision=True``, a hub that refuses that credential when the client connects (CONNACK 4
or 5: the device was moved to another hub, deleted, or its key changed) makes the client register
again and connect to wherever DPS now assigns it, once per ``async with``.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Self

from aioiothub.client import IoTHubDeviceClient
from aioiothub.exceptions import AuthenticationError
from aioiothub.options import ClientOptions
from aioiothub.provisioning import ProvisioningClient
from aioiothub.registration import RegistrationResult
from aioiothub.session import SessionSettings
from aioiothub.settings import build_settings

__all__ = ["ProvisionedDeviceClient", "provision_device_client"]

_log = logging.getLogger("aioiothub")

# Options of the provisioning connection that the hub connection uses too unless told otherwise:
# a real DPS and a real hub listen on the same ports, and the emulator serves both on one listener.
_INHERITED = ("port", "websockets", "proxy", "ssl_context", "product_info", "model_id", "keepalive",
              "request_timeout", "sas_ttl", "transport")


def _hub_settings(
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


class ProvisionedDeviceClient(IoTHubDeviceClient):
    """An :class:`~aioiothub.IoTHubDeviceClient` for the hub DPS assigned (see :mod:`aioiothub.provisioned`).

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
        # The device constructor's checks would repeat what _hub_settings did: skip to the base.
        super(IoTHubDeviceClient, self).__init__(_hub_settings(provisioning, registration, options))

    async def __aenter__(self) -> Self:
        try:
            return await super().__aenter__()
        except AuthenticationError as exc:
            if not self._reprovision:
                raise
            _log.warning(
                "hub %s refused device %r (%s); registering with DPS again",
                self.registration.assigned_hub,
                self.registration.device_id,
                exc,
            )
        registration = await _register(self._provisioning, self._payload, self._register_timeout)
        self._settings = _hub_settings(self._provisioning, registration, ClientOptions(**self._hub_options))  # type: ignore[typeddict-item]
        self.registration = registration
        return await super().__aenter__()


async def provision_device_client(
    provisioning: ProvisioningClient,
    *,
    payload: Any,
    register_timeout: float,
    reprovision: bool,
    options: ClientOptions,
) -> ProvisionedDeviceClient:
    """Register through ``provisioning`` and build the client for the assigned hub (not yet open)."""
    if not isinstance(provisioning, ProvisioningClient):
        raise TypeError(f"provisioning must be an aioiothub.ProvisioningClient, not {type(provisioning).__name__}")
    if not isinstance(reprovision, bool):
        raise TypeError("reprovision must be True or False")
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token", "x509"):
        if name in options:
            raise TypeError(f"{name} comes from the registration; do not pass it")
    # Checked before anything is sent.
    _hub_settings(provisioning, RegistrationResult("assigned", "check", "check.invalid"), options)
    registration = await _register(provisioning, payload, register_timeout)
    return ProvisionedDeviceClient(
        provisioning,
        registration,
        payload=payload,
        register_timeout=register_timeout,
        reprovision=reprovision,
        options=options,
    )
