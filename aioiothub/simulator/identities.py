"""Identity sources: where the fleet's devices come from, and how they reach their hub.

An identity source prepares a run: it makes sure the devices ``prefix+index`` exist (creating them
where it can), and yields a :class:`FleetTarget`: the :class:`~aioiothub.simulator.endpoint.FleetEndpoint`
every process connects through, and, when the source controls the hub, the counters of the
back-end traffic it plays. Each mode is one small class:

- :class:`EmbeddedEmulator`: an emulator in this process, devices registered in it;
- :class:`EmulatorProcess`: an emulator in a process of its own (``python -m
  aioiothub.simulator.host``), so that the hub and the devices do not share a core;
- :class:`ExistingHub`: a hub (real, or an emulator host already running) where the devices
  already exist with keys derived from the fleet key;
- :class:`DpsEnrollmentGroup`: devices that register with the Device Provisioning Service, as
  members of an enrollment group whose key is the fleet key, and connect to the hub it assigns;
- :class:`~aioiothub.simulator.service_registry.ServiceRegistry` (a module of its own): devices
  created through IoT Hub's service REST API with a service connection string.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from aioiothub import derive_device_key
from aioiothub._provisioning.client import GLOBAL_PROVISIONING_HOST
from aioiothub.simulator.backend import BackendTraffic, drive_backend
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.pipes import json_lines, stop_child
from aioiothub.simulator.stats import FleetStats

__all__ = [
    "FLEET_KEY_VARIABLE",
    "DpsEnrollmentGroup",
    "EmbeddedEmulator",
    "EmulatorProcess",
    "ExistingHub",
    "FleetTarget",
    "IdentitySource",
]

FLEET_KEY_VARIABLE = "AIOIOTHUB_FLEET_KEY"
"""The environment variable that carries the fleet key to an emulator host process."""

_HOST_START_TIMEOUT = 600.0

NO_BACKEND = "back-end traffic (methods, desired properties, C2D) needs an emulator the simulator starts"
"""Why a source for the user's own hub refuses back-end traffic."""


@dataclass
class FleetTarget:
    """What an identity source yields for a run.

    Attributes:
        endpoint: how every device connects.
        backend_snapshot: the counters of the back-end traffic, when the source plays it.
        description: one line for the progress display (``"embedded emulator on 127.0.0.1:41234"``).
    """

    endpoint: FleetEndpoint
    backend_snapshot: Callable[[], Mapping[str, Any]] | None = None
    description: str = ""


class IdentitySource(Protocol):
    """Prepares the devices of a run (see the module docstring)."""

    def open(
        self, device_ids: Sequence[str], backend: BackendTraffic
    ) -> contextlib.AbstractAsyncContextManager[FleetTarget]:
        """Make sure ``device_ids`` exist; yield how they connect; clean up on exit."""
        ...


class EmbeddedEmulator:
    """An :class:`~aioiothub.emulator.Emulator` in this process, holding the fleet's devices.

    Args:
        fleet_key: the key device keys are derived from.
        transport: the client transport for the devices (``None`` for the default).
    """

    def __init__(self, fleet_key: str, *, transport: str | None = None) -> None:
        self._fleet_key = fleet_key
        self._transport = transport

    @contextlib.asynccontextmanager
    async def open(self, device_ids: Sequence[str], backend: BackendTraffic) -> AsyncIterator[FleetTarget]:
        from aioiothub.emulator import Emulator

        backend_stats = FleetStats()
        async with Emulator(websocket_port=None) as hub, anyio.create_task_group() as tasks:
            for device_id in device_ids:
                hub.add_device(device_id, primary_key=derive_device_key(self._fleet_key, device_id))
            tasks.start_soon(drive_backend, hub, device_ids, backend, backend_stats, name="back-end traffic")
            endpoint = FleetEndpoint(
                hostname=hub.hostname,
                fleet_key=self._fleet_key,
                port=hub.port,
                connect_host=hub.host,
                ca_pem=hub.ca_pem.decode("ascii"),
                transport=self._transport,
            )
            try:
                yield FleetTarget(endpoint, backend_stats.snapshot, f"embedded emulator on {hub.host}:{hub.port}")
            finally:
                tasks.cancel_scope.cancel()


class EmulatorProcess:
    """An emulator in a child process (:mod:`aioiothub.simulator.host`), holding the fleet's devices.

    The child registers the devices itself from the fleet key (passed in its environment, never on
    its command line), prints how to reach it as one JSON line, then one line of back-end counters
    every half second, and stops when its standard input closes.

    Args:
        fleet_key: the key device keys are derived from.
        transport: the client transport for the devices (``None`` for the default).
        nice: scheduling priority increment for the child (as ``nice``).
    """

    def __init__(self, fleet_key: str, *, transport: str | None = None, nice: int = 0) -> None:
        self._fleet_key = fleet_key
        self._transport = transport
        self._nice = nice

    def command(self, prefix: str, start_index: int, count: int, backend: BackendTraffic) -> list[str]:
        """The child's command line."""
        return [
            sys.executable, "-m", "aioiothub.simulator.host",
            "--prefix", prefix, "--start-index", str(start_index), "--devices", str(count),
            "--method-rate", str(backend.method_rate), "--desired-rate", str(backend.desired_rate),
            "--c2d-rate", str(backend.c2d_rate), "--until-stdin-closes",
        ]

    @contextlib.asynccontextmanager
    async def open(self, device_ids: Sequence[str], backend: BackendTraffic) -> AsyncIterator[FleetTarget]:
        prefix, start_index = _common_range(device_ids)
        environment = {**os.environ, FLEET_KEY_VARIABLE: self._fleet_key}
        command = self.command(prefix, start_index, len(device_ids), backend)
        if self._nice:
            command = ["nice", "-n", str(self._nice), *command]
        latest: dict[str, Any] = {}
        process = await anyio.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=environment,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            async with contextlib.aclosing(json_lines(process.stdout)) as lines:
                with anyio.fail_after(_HOST_START_TIMEOUT):
                    first = await anext(lines, None)
                if first is None or "endpoint" not in first:
                    raise RuntimeError(
                        f"the emulator host process stopped before it was ready (exit code {process.returncode})"
                    )
                endpoint = FleetEndpoint(fleet_key=self._fleet_key, transport=self._transport, **first["endpoint"])

                async def follow() -> None:
                    async for line in lines:
                        if "snapshot" in line:
                            latest.update(line["snapshot"])

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(follow, name="emulator host counters")
                    where = f"{endpoint.connect_host}:{endpoint.port}"
                    yield FleetTarget(endpoint, lambda: latest, f"emulator process {process.pid} on {where}")
                    tasks.cancel_scope.cancel()
        finally:
            await stop_child(process)


class ExistingHub:
    """A hub that already holds the devices, with keys derived from the fleet key.

    That is the case for devices provisioned through a DPS enrollment group whose group key is the
    fleet key, for devices created with ``primary_key=derive_device_key(fleet_key, device_id)``, and
    for an emulator host started with the same fleet key. Nothing is created; no back-end traffic.

    Args:
        endpoint: how to reach the hub.
    """

    def __init__(self, endpoint: FleetEndpoint) -> None:
        self._endpoint = endpoint

    @contextlib.asynccontextmanager
    async def open(self, device_ids: Sequence[str], backend: BackendTraffic) -> AsyncIterator[FleetTarget]:
        if backend.active:
            raise ValueError(NO_BACKEND)
        yield FleetTarget(self._endpoint, None, f"hub {self._endpoint.address}")


class DpsEnrollmentGroup:
    """Devices provisioned through the Device Provisioning Service with an enrollment-group key.

    Each device registers (registration id = its device id) with
    :meth:`aioiothub.ProvisioningClient.from_enrollment_group_key`, the fleet key being the
    group key, then connects to the hub and device id DPS assigned, with the same derived key.
    Nothing is created beforehand: DPS creates the devices on their hubs as they register. No
    back-end traffic (the hubs are DPS's to choose).

    Example:
        >>> group = hub.dps.add_enrollment_group("fleet", primary_key=fleet_key)  # doctest: +SKIP
        >>> source = DpsEnrollmentGroup(hub.dps.id_scope, fleet_key, provisioning_host=hub.hostname,  # doctest: +SKIP
        ...                             port=hub.port, ca_pem=hub.ca_pem.decode())

    Args:
        id_scope: the DPS instance's id scope (``0ne…``).
        group_key: the enrollment group's key, used as the fleet key.
        provisioning_host: the DPS endpoint; the global one by default.
        port: the port of DPS and of the assigned hubs (8883, or 443 with ``websockets``).
        connect_host: the address to connect to when it is not the host name (an emulator).
        ca_pem: a PEM certificate to trust instead of the system store (an emulator's CA).
        websockets: MQTT over WebSocket, to DPS and to the hubs.
        transport: the devices' client transport (``None`` for the default).
    """

    def __init__(
        self,
        id_scope: str,
        group_key: str,
        *,
        provisioning_host: str = GLOBAL_PROVISIONING_HOST,
        port: int | None = None,
        connect_host: str | None = None,
        ca_pem: str | None = None,
        websockets: bool = False,
        transport: str | None = None,
    ) -> None:
        if not isinstance(id_scope, str) or not id_scope:
            raise ValueError("id_scope must be a DPS id scope (0ne…)")
        self.endpoint = FleetEndpoint(
            hostname=provisioning_host,
            fleet_key=group_key,
            port=port,
            connect_host=connect_host,
            ca_pem=ca_pem,
            websockets=websockets,
            transport=transport,
            id_scope=id_scope,
        )

    @contextlib.asynccontextmanager
    async def open(self, device_ids: Sequence[str], backend: BackendTraffic) -> AsyncIterator[FleetTarget]:
        if backend.active:
            raise ValueError(NO_BACKEND)
        where = f"DPS {self.endpoint.address}, id scope {self.endpoint.id_scope}"
        yield FleetTarget(self.endpoint, None, f"devices provisioned through {where}")


def _common_range(device_ids: Sequence[str]) -> tuple[str, int]:
    """The prefix and first index of ids made by :func:`~aioiothub.simulator.endpoint.device_ids`."""
    first = device_ids[0]
    digits = len(first) - len(first.rstrip("0123456789"))
    prefix, start = first[: len(first) - digits], int(first[len(first) - digits :])
    if [f"{prefix}{start + offset}" for offset in range(len(device_ids))] != list(device_ids):
        raise ValueError("an emulator process registers a contiguous range prefix+index")
    return prefix, start
