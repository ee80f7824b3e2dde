"""Where a fleet connects and how each simulated device gets its credentials.

A :class:`FleetEndpoint` is everything a process needs to open a client for any device of the
fleet: the hub's host name and port, the CA to trust (for an emulator), and the *fleet key*. Every
device key is derived from that one key the way the Device Provisioning Service derives device
keys from an enrollment group key (``aioiothub.derive_device_key(fleet_key, device_id)``), so
no process, pod or machine needs a list of keys: the index range it was given is enough. The
endpoint is plain JSON, which is how it reaches worker processes.

With an :attr:`~FleetEndpoint.id_scope`, the devices are not known to a hub yet: each registers
with the Device Provisioning Service first (:meth:`FleetEndpoint.register`), as a member of a
symmetric-key enrollment group whose group key is the fleet key, and then connects to the hub and
device id DPS assigned.
"""

from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass
from typing import Any

from aioiothub import (
    IoTHubDeviceClient,
    Outbox,
    ProvisioningClient,
    ReconnectPolicy,
    RegistrationResult,
    derive_device_key,
)

__all__ = ["FleetEndpoint", "device_ids"]


def device_ids(prefix: str, start_index: int, count: int) -> list[str]:
    """The ids of ``count`` devices from ``start_index``: ``prefix`` followed by the index.

    Example:
        >>> device_ids("sim-", 9, 3)
        ['sim-9', 'sim-10', 'sim-11']
    """
    return [f"{prefix}{index}" for index in range(start_index, start_index + count)]


@dataclass(frozen=True)
class FleetEndpoint:
    """How the devices of a fleet reach their hub.

    Attributes:
        hostname: the hub's host name (in SAS tokens and MQTT usernames); with :attr:`id_scope`,
            the DPS endpoint's host name instead.
        fleet_key: base64 key every device key is derived from (never logged); with
            :attr:`id_scope`, the enrollment group's key.
        port: the MQTT port (8883, or 443 with ``websockets``); ``None`` for the default. With
            :attr:`id_scope`, DPS and the hubs it assigns are reached on this port.
        connect_host: the address to connect to when it is not ``hostname`` (an emulator on
            ``127.0.0.1``, or an IoT Edge gateway); with :attr:`id_scope`, for DPS and the hub.
        ca_pem: a PEM certificate to trust instead of the system store (an emulator's CA).
        websockets: MQTT over WebSocket instead of MQTT over TLS.
        transport: the client transport (``"aiomqtt"`` or ``"native"``); ``None`` for the default.
        keepalive: MQTT keep-alive seconds.
        request_timeout: seconds each operation may take.
        id_scope: register every device with this DPS id scope before it connects (see the
            module docstring); ``None`` when the devices already exist on ``hostname``.
    """

    hostname: str
    fleet_key: str
    port: int | None = None
    connect_host: str | None = None
    ca_pem: str | None = None
    websockets: bool = False
    transport: str | None = None
    keepalive: int = 60
    request_timeout: float = 30.0
    id_scope: str | None = None

    def __repr__(self) -> str:
        scope = "" if self.id_scope is None else f", id_scope={self.id_scope!r}"
        return f"FleetEndpoint(hostname={self.hostname!r}, port={self.port!r}{scope}, fleet_key=<redacted>)"

    @property
    def address(self) -> str:
        """Where the devices connect, as ``host:port`` (for messages and the progress display)."""
        return f"{self.connect_host or self.hostname}:{self.port or (443 if self.websockets else 8883)}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (it holds the fleet key: pass it only to processes of the same run)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetEndpoint:
        """The inverse of :meth:`to_json`."""
        return cls(**data)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context trusting :attr:`ca_pem`, or ``None`` for the client's default (system store)."""
        if self.ca_pem is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The given certificate is the trust anchor even when it is a server certificate.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def _connection_options(self, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
        """The options DPS and hub connections share."""
        options: dict[str, Any] = {
            "keepalive": self.keepalive,
            "request_timeout": self.request_timeout,
            "websockets": self.websockets,
        }
        if self.port is not None:
            options["port"] = self.port
        context = ssl_context or self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.transport is not None:
            options["transport"] = self.transport
        return options

    async def register(self, device_id: str, ssl_context: ssl.SSLContext | None = None) -> RegistrationResult:
        """Register ``device_id`` with DPS (:attr:`id_scope`) as a member of the fleet's enrollment group.

        The registration id is the device id; its key is ``derive_device_key(fleet_key, device_id)``,
        as DPS derives it from the group key.

        Raises:
            ValueError: the endpoint has no :attr:`id_scope`.
            AuthenticationError, ServiceError, TimeoutError: as
                :meth:`aioiothub.ProvisioningClient.register` raises them.
        """
        if self.id_scope is None:
            raise ValueError("this fleet endpoint has no DPS id_scope: its devices exist on the hub already")
        provisioning = ProvisioningClient.from_enrollment_group_key(
            id_scope=self.id_scope,
            registration_id=device_id,
            group_key=self.fleet_key,
            provisioning_host=self.connect_host or self.hostname,
            **self._connection_options(ssl_context),
        )
        async with provisioning:
            return await provisioning.register()

    def client(
        self,
        device_id: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        registration: RegistrationResult | None = None,
        outbox: Outbox | None = None,
    ) -> IoTHubDeviceClient:
        """A (not yet connected) client for one device of the fleet.

        Args:
            device_id: the device (with DPS, its registration id).
            ssl_context: a context to share between the clients of a process (see
                :meth:`ssl_context`); built here when ``None``.
            registration: what :meth:`register` returned for the device: the client connects
                to the hub and device id DPS assigned.
            outbox: the outbox the client's telemetry goes through (``None``: sent live).
        """
        hostname, identity = self.hostname, device_id
        if registration is not None:
            if not registration.assigned_hub or not registration.device_id:
                raise ValueError("registration: DPS named no assigned hub and device id")
            hostname, identity = registration.assigned_hub, registration.device_id
        options = self._connection_options(ssl_context)
        # Thousands of devices that lost the hub together must not come back together.
        options["reconnect"] = ReconnectPolicy(initial_delay=1.0, max_delay=30.0, jitter=0.5)
        if self.connect_host is not None:
            options["gateway_hostname"] = self.connect_host
        if outbox is not None:
            options["outbox"] = outbox
        return IoTHubDeviceClient(
            hostname=hostname,
            device_id=identity,
            # With DPS the key is the registration id's, whatever device id the hub knows it by.
            shared_access_key=derive_device_key(self.fleet_key, device_id),
            **options,
        )
