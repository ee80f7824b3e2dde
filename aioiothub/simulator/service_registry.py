"""Devices created through IoT Hub's service REST API: ``aioiothub simulate --service-connection-string``.

:class:`ServiceRegistry` is an identity source (see :mod:`aioiothub.simulator.identities`) for a hub
reached with a shared access policy's connection string -- a real hub's, or the emulator's
``hub.service_connection_string``. Before the run it makes sure every device of the fleet exists
with SAS keys derived from the fleet key: ``PUT /devices/{id}?api-version=2021-04-12``, authorized
by a SAS token signed with the policy's key (the policy needs the ``RegistryWrite`` right, as
``iothubowner`` and ``registryReadWrite`` have). A device that exists already is reused when its key
is the derived one and refused otherwise: the simulator never changes the keys of a device.

Throttled and failed requests (429, 5xx, a dropped connection) are retried with back-off,
honouring ``Retry-After``: a real hub allows about 100 identity operations per minute and unit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import anyio
import httpx

from aioiothub import ConnectError, ConnectionLostError, SharedAccessKeyCredential, derive_device_key
from aioiothub._https.http import raise_for_status, translate_errors
from aioiothub.protocol.connect import API_VERSION
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.simulator.backend import BackendTraffic
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.identities import NO_BACKEND, FleetTarget

__all__ = ["ServicePolicy", "ServiceRegistry"]

logger = logging.getLogger("aioiothub.simulator")

_KEYS: Final = ("HostName", "SharedAccessKeyName", "SharedAccessKey")
_RETRIED_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_ATTEMPTS: Final = 6
_MAX_DELAY: Final = 30.0


@dataclass(frozen=True)
class ServicePolicy:
    """A parsed service connection string: ``HostName=…;SharedAccessKeyName=…;SharedAccessKey=…``.

    Example:
        >>> policy = ServicePolicy.parse(
        ...     "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5a2V5a2V5"
        ... )
        >>> policy.hub_hostname, policy.https_port, policy.policy_name
        ('localhost', 8443, 'iothubowner')
        >>> policy
        ServicePolicy(host='localhost:8443', policy_name='iothubowner', key=<redacted>)

    Attributes:
        host: ``HostName`` as given: the hub's host name, with the HTTPS port when it is not 443
            (the emulator's ``localhost:8443``); also the scope of the SAS tokens.
        policy_name: ``SharedAccessKeyName``.
        key: ``SharedAccessKey`` (never shown in a ``repr``).
    """

    host: str
    policy_name: str
    key: str

    def __repr__(self) -> str:
        return f"ServicePolicy(host={self.host!r}, policy_name={self.policy_name!r}, key=<redacted>)"

    @classmethod
    def parse(cls, text: str) -> ServicePolicy:
        """Parse a shared access policy's connection string.

        Raises:
            ValueError: a segment is not ``Key=Value``, a key is unknown, missing or repeated (the
                message never repeats a value, which may be the key).
        """
        values: dict[str, str] = {}
        for position, segment in enumerate(text.strip().rstrip(";").split(";"), start=1):
            name, equals, value = segment.partition("=")
            if not equals:
                raise ValueError(f"service connection string: segment {position} is not of the form Key=Value")
            if name == "DeviceId":
                raise ValueError("service connection string: DeviceId makes it a device's, not a policy's")
            if name not in _KEYS:
                raise ValueError(f"service connection string: segment {position} has an unknown key")
            if name in values:
                raise ValueError(f"service connection string: {name} is given twice")
            values[name] = value
        for name in _KEYS:
            if not values.get(name):
                raise ValueError(f"service connection string: {name} is missing")
        return cls(values["HostName"], values["SharedAccessKeyName"], values["SharedAccessKey"])

    @property
    def hub_hostname(self) -> str:
        """The hub's host name without a port: what devices put in their SAS tokens and usernames."""
        name, colon, port = self.host.rpartition(":")
        return name if colon and port.isdigit() else self.host

    @property
    def https_port(self) -> int | None:
        """The HTTPS port ``HostName`` names, or ``None`` for the default (443)."""
        _name, colon, port = self.host.rpartition(":")
        return int(port) if colon and port.isdigit() else None


class ServiceRegistry:
    """Creates (or reuses) the fleet's devices through IoT Hub's service REST API, then connects them.

    Example:
        >>> source = ServiceRegistry(hub.service_connection_string, fleet_key, port=hub.port,  # doctest: +SKIP
        ...                          connect_host=hub.host, ca_pem=hub.ca_pem.decode())
        >>> summary = await Simulation(SimulationPlan(devices=100, duration=60), source).run()  # doctest: +SKIP

    Args:
        connection_string: a shared access policy's connection string with the ``RegistryWrite``
            right.
        fleet_key: the key device keys are derived from (``derive_device_key(fleet_key, device_id)``).
        port: the MQTT port devices connect to; 8883 by default, or with ``websockets`` the
            HTTPS port of ``HostName`` (one port serves REST and MQTT over WebSocket, as IoT
            Hub's 443 does).
        connect_host: the address devices connect to when it is not the hub's host name.
        ca_pem: a PEM certificate to trust instead of the system store (an emulator's CA), for
            the REST calls and the devices alike.
        websockets: the devices use MQTT over WebSocket.
        transport: the devices' client transport (``None`` for the default).
        concurrency: registry requests in flight at once.
        request_timeout: seconds each registry request may take.

    Raises:
        ValueError: the connection string is not a shared access policy's.
        CredentialError: its key is not base64.
    """

    def __init__(
        self,
        connection_string: str,
        fleet_key: str,
        *,
        port: int | None = None,
        connect_host: str | None = None,
        ca_pem: str | None = None,
        websockets: bool = False,
        transport: str | None = None,
        concurrency: int = 10,
        request_timeout: float = 30.0,
    ) -> None:
        self.policy = ServicePolicy.parse(connection_string)
        self._credential = SharedAccessKeyCredential(self.policy.key, policy_name=self.policy.policy_name)
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
        if port is None and websockets:
            port = self.policy.https_port
        self.endpoint = FleetEndpoint(
            hostname=self.policy.hub_hostname,
            fleet_key=fleet_key,
            port=port,
            connect_host=connect_host,
            ca_pem=ca_pem,
            websockets=websockets,
            transport=transport,
        )
        self._concurrency = concurrency
        self._timeout = request_timeout
        self.created = 0
        self.reused = 0

    @contextlib.asynccontextmanager
    async def open(self, device_ids: Sequence[str], backend: BackendTraffic) -> AsyncIterator[FleetTarget]:
        if backend.active:
            raise ValueError(NO_BACKEND)
        await self.ensure_devices(device_ids)
        yield FleetTarget(
            self.endpoint, None,
            f"hub {self.endpoint.address}, devices through the service API "
            f"({self.created:,} created, {self.reused:,} reused)",
        )

    async def ensure_devices(self, device_ids: Sequence[str]) -> None:
        """Create every device of ``device_ids`` that does not exist; check the keys of those that do.

        Raises:
            ValueError: a device exists with another key, or is disabled.
            ServiceError: the hub refused a request (401: the policy lacks ``RegistryWrite``).
            ConnectError, ConnectionLostError, TimeoutError: the hub could not be reached, after retries.
        """
        limiter = anyio.CapacityLimiter(self._concurrency)
        verify: Any = self.endpoint.ssl_context() or True
        failures: list[Exception] = []
        async with httpx.AsyncClient(
            base_url=f"https://{self.policy.host}", verify=verify, timeout=self._timeout, trust_env=False,
            limits=httpx.Limits(max_connections=self._concurrency),
        ) as http, anyio.create_task_group() as tasks:

            async def ensure(device_id: str) -> None:
                # After a failure no new request starts; those in flight finish (nothing is cut off
                # mid-request), and the first failure is raised as it is, not in an exception group.
                try:
                    async with limiter:
                        if not failures:
                            await self._ensure_device(http, device_id)
                except Exception as exc:
                    failures.append(exc)
                    return
                done = self.created + self.reused
                if done % 1000 == 0 or done == len(device_ids):
                    logger.info("%d of %d devices ready on %s", done, len(device_ids), self.policy.hub_hostname)

            for device_id in device_ids:
                tasks.start_soon(ensure, device_id, name=f"registry entry of {device_id}")
        if failures:
            raise failures[0]

    async def _ensure_device(self, http: httpx.AsyncClient, device_id: str) -> None:
        key = derive_device_key(self.endpoint.fleet_key, device_id)
        path = f"/devices/{quote(device_id, safe='')}"
        body = {
            "deviceId": device_id,
            "status": "enabled",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
        }
        response = await self._request(http, "PUT", path, body)
        if response.status_code != 409:
            raise_for_status(response, f"creating device {device_id!r}")
            self.created += 1
            return
        response = await self._request(http, "GET", path)
        raise_for_status(response, f"reading device {device_id!r}")
        device = load_json_object(response.content, f"the registry entry of {device_id!r}")
        authentication = device.get("authentication") or {}
        keys = (authentication.get("symmetricKey") or {}) if isinstance(authentication, dict) else {}
        if not isinstance(keys, dict) or key not in (keys.get("primaryKey"), keys.get("secondaryKey")):
            raise ValueError(
                f"device {device_id!r} exists on {self.policy.hub_hostname} with other keys: give the fleet key "
                "it was created with, another --prefix, or delete the device"
            )
        if device.get("status") == "disabled":
            raise ValueError(f"device {device_id!r} exists on {self.policy.hub_hostname} but is disabled")
        self.reused += 1

    async def _request(
        self, http: httpx.AsyncClient, method: str, path: str, body: Any = None
    ) -> httpx.Response:
        what = f"{method} {path} on {self.policy.host}"
        for attempt in range(_ATTEMPTS):
            last = attempt == _ATTEMPTS - 1
            grant = await self._credential.get_token(self.policy.host, time.time())
            try:
                with translate_errors(what, self._timeout):
                    response = await http.request(
                        method, path, params={"api-version": API_VERSION}, json=body,
                        headers={"Authorization": grant.token},
                    )
            except (ConnectError, ConnectionLostError, TimeoutError) as exc:
                if last:
                    raise
                delay = _backoff(attempt)
                logger.info("%s failed (%s); retrying in %.1f s", what, exc, delay)
            else:
                if response.status_code not in _RETRIED_STATUSES or last:
                    return response
                delay = _retry_after(response) or _backoff(attempt)
                logger.info("%s answered %d; retrying in %.1f s", what, response.status_code, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _backoff(attempt: int) -> float:
    return min(_MAX_DELAY, 2.0**attempt) * random.uniform(0.5, 1.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(_MAX_DELAY, max(0.0, float(value)))
    except ValueError:
        return None
