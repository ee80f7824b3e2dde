"""Where a fleet connects and how each simulated device gets its credentials.

A :class:`FleetEndpoint` is everything a process needs to open a client for any device of the
fleet: the hub's host name and port, the CA to trust (for an emulator), and the *fleet key*. Every
device key is derived from that one key the way the Device Provisioning Service derives device
keys from an enrollment group key (``aioiothub.derive_device_key(fleet_key, device_id)``), so
no process, pod or machine needs a list of keys: the index range it was given is enough. The
endpoint is plain JSON, which is how it reaches worker processes.
"""

from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass
from typing import Any

from aioiothub import IoTHubDeviceClient, ReconnectPolicy, derive_device_key

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
        hostname: the hub's host name (in SAS tokens and MQTT usernames).
        fleet_key: base64 key every device key is derived from (never logged).
        port: the MQTT port (8883, or 443 with ``websockets``); ``None`` for the default.
        connect_host: the address to connect to when it is not ``hostname`` (an emulator on
            ``127.0.0.1``, or an IoT Edge gateway).
        ca_pem: a PEM certificate to trust instead of the system store (an emulator's CA).
        websockets: MQTT over WebSocket instead of MQTT over TLS.
        transport: the client transport (``"aiomqtt"`` or ``"native"``); ``None`` for the default.
        keepalive: MQTT keep-alive seconds.
        request_timeout: seconds each operation may take.
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

    def __repr__(self) -> str:
        return f"FleetEndpoint(hostname={self.hostname!r}, port={self.port!r}, fleet_key=<redacted>)"

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

    def client(self, device_id: str, ssl_context: ssl.SSLContext | None = None) -> IoTHubDeviceClient:
        """A (not yet connected) client for one device of the fleet.

        Args:
            device_id: the device.
            ssl_context: a context to share between the clients of a process (see
                :meth:`ssl_context`); built here when ``None``.
        """
        options: dict[str, Any] = {
            "hostname": self.hostname,
            "device_id": device_id,
            "shared_access_key": derive_device_key(self.fleet_key, device_id),
            "keepalive": self.keepalive,
            "request_timeout": self.request_timeout,
            "websockets": self.websockets,
            # Thousands of devices that lost the hub together must not come back together.
            "reconnect": ReconnectPolicy(initial_delay=1.0, max_delay=30.0, jitter=0.5),
        }
        if self.port is not None:
            options["port"] = self.port
        if self.connect_host is not None:
            options["gateway_hostname"] = self.connect_host
        context = ssl_context or self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.transport is not None:
            options["transport"] = self.transport
        return IoTHubDeviceClient(**options)
