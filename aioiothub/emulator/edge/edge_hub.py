"""The emulator playing an IoT Edge device: edgeHub's routes, the workload API, module environments.

Theory of operation
-------------------
Each Edge device gets one workload API socket (:class:`~aioiothub.emulator.edge.workload.WorkloadApi`)
and one route table. :meth:`EdgeDevice.environment` registers a module with a fresh generation id
and returns the variables the Edge runtime would give its container. Modules then connect to the
emulator as edgeHub (the gateway host name) with tokens the workload API signed.

Routing follows edgeHub's syntax, in a subset: ``FROM <source> [WHERE …] INTO <sink>`` where the
source is ``/messages/*``, ``/messages/modules/*``, ``/messages/modules/{m}/*``,
``/messages/modules/{m}/outputs/*`` or ``/messages/modules/{m}/outputs/{o}``, and the sink is
``BrokeredEndpoint("/modules/{m}/inputs/{i}")`` or ``$upstream``. ``WHERE`` conditions are refused
(not emulated). A router task follows the device's telemetry (:meth:`Hub.telemetry_stream`) and
sends each module output message matching a route to the target input with
:meth:`Hub.send_to_input`. Every message also stays in the hub's telemetry, as if each output were
routed ``$upstream`` too.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio.abc

from aioiothub.emulator.edge.workload import WorkloadApi
from aioiothub.emulator.hub import Hub, TelemetryRecord
from aioiothub.exceptions import ServiceError

__all__ = ["WORKLOAD_API_VERSION", "EdgeDevice", "EdgeEnvironment", "EdgeRoute", "parse_route"]

logger = logging.getLogger("aioiothub.emulator")

WORKLOAD_API_VERSION: Final = "2019-01-30"
"""The ``IOTEDGE_APIVERSION`` the environment announces."""

_ROUTE = re.compile(
    r"^\s*FROM\s+(?P<source>\S+)(?:\s+WHERE\s+(?P<where>.+?))?\s+INTO\s+(?P<sink>.+?)\s*$", re.IGNORECASE | re.DOTALL
)
_SOURCE = re.compile(r"^/messages/(?:\*|modules/(?:\*|(?P<module>[^/*]+)/(?:\*|outputs/(?:\*|(?P<output>[^/*]+)))))$")
_BROKERED = re.compile(r'^BrokeredEndpoint\(\s*"/modules/(?P<module>[^/"]+)/inputs/(?P<input>[^/"]+)"\s*\)$')


@dataclass(frozen=True, slots=True)
class EdgeRoute:
    """One parsed route.

    Attributes:
        text: the route as written.
        module_id: the source module, or ``None`` for any.
        output_name: the source output, or ``None`` for any.
        target_module: the module whose input receives the message, or ``None`` for ``$upstream``.
        target_input: that input's name.
    """

    text: str
    module_id: str | None
    output_name: str | None
    target_module: str | None
    target_input: str | None

    def matches(self, module_id: str, output_name: str) -> bool:
        """Whether a message sent by ``module_id`` on ``output_name`` takes this route."""
        return self.module_id in (None, module_id) and self.output_name in (None, output_name)


def parse_route(text: str) -> EdgeRoute:
    """Parse one route in edgeHub's syntax (the subset above).

    Example:
        >>> parse_route('FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")')
        EdgeRoute(text='FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")', \
module_id='filter', output_name='out1', target_module='sink', target_input='in1')

    Raises:
        ValueError: the route is not in the supported subset.
    """
    if not isinstance(text, str):
        raise TypeError(f"a route must be a str, not {type(text).__name__}")
    match = _ROUTE.match(text)
    if match is None:
        raise ValueError(f"route {text!r} is not 'FROM <source> INTO <sink>'")
    if match.group("where"):
        raise ValueError(f"route {text!r}: WHERE conditions are not emulated")
    source = _SOURCE.match(match.group("source"))
    if source is None:
        raise ValueError(f"route {text!r}: unsupported source {match.group('source')!r}")
    sink_text = match.group("sink")
    if sink_text == "$upstream":
        target_module = target_input = None
    else:
        sink = _BROKERED.match(sink_text)
        if sink is None:
            raise ValueError(f"route {text!r}: the sink must be $upstream or BrokeredEndpoint(\"/modules/m/inputs/i\")")
        target_module, target_input = sink.group("module"), sink.group("input")
    return EdgeRoute(text, source.group("module"), source.group("output"), target_module, target_input)


@dataclass(frozen=True, slots=True)
class EdgeEnvironment:
    """What the Edge runtime gives a module's container.

    Attributes:
        device_id: the Edge device.
        module_id: the module.
        generation_id: the module's generation id (the workload API signs only for it).
        workload_socket: the workload API's Unix socket.
        variables: the ``IOTEDGE_*`` environment variables, ready for ``os.environ`` or a subprocess.
        debug_variables: the local-debug alternative: ``EdgeHubConnectionString`` (with the module's
            key and ``GatewayHostName``) and ``EdgeModuleCACertificateFile``.
    """

    device_id: str
    module_id: str
    generation_id: str
    workload_socket: Path
    variables: dict[str, str]
    debug_variables: dict[str, str]

    def __repr__(self) -> str:
        return (
            f"EdgeEnvironment(device_id={self.device_id!r}, module_id={self.module_id!r}, "
            f"workload_socket={str(self.workload_socket)!r})"
        )


class EdgeDevice:
    """One emulated Edge device: its workload socket, its modules and its routes.

    Args:
        hub: the hub the modules belong to.
        device_id: the Edge device.
        socket_path: where the workload API listens.
        trust_bundle: the PEM modules must trust for edgeHub (the emulator's CA).
    """

    def __init__(self, hub: Hub, device_id: str, socket_path: Path, trust_bundle: bytes) -> None:
        self._hub = hub
        self.device_id = device_id
        self.socket_path = socket_path
        self.routes: list[EdgeRoute] = []
        self.workload = WorkloadApi(trust_bundle, self._module_key)

    def _module_key(self, module_id: str, key_id: str) -> str | None:
        try:
            identity = self._hub.identity(self.device_id, module_id)
        except ValueError:
            return None
        return identity.primary_key if key_id == "primary" else identity.secondary_key

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Serve the workload API and run the router in ``task_group``."""
        await task_group.start(self.workload.serve, self.socket_path, name=f"workload API of {self.device_id}")
        task_group.start_soon(self._route_messages, name=f"edgeHub routes of {self.device_id}")

    def add_routes(self, routes: list[str]) -> None:
        """Parse and add routes (all or none)."""
        self.routes.extend([parse_route(text) for text in routes])

    def environment(
        self, module_id: str, *, hub_hostname: str, gateway_hostname: str, debug_variables: dict[str, str]
    ) -> EdgeEnvironment:
        """Register ``module_id`` with a new generation id and describe its environment."""
        generation_id = secrets.token_hex(16)
        self.workload.register(module_id, generation_id)
        variables = {
            "IOTEDGE_IOTHUBHOSTNAME": hub_hostname,
            "IOTEDGE_DEVICEID": self.device_id,
            "IOTEDGE_MODULEID": module_id,
            "IOTEDGE_GATEWAYHOSTNAME": gateway_hostname,
            "IOTEDGE_MODULEGENERATIONID": generation_id,
            "IOTEDGE_WORKLOADURI": f"unix://{self.socket_path}",
            "IOTEDGE_APIVERSION": WORKLOAD_API_VERSION,
            "IOTEDGE_AUTHSCHEME": "sasToken",
        }
        return EdgeEnvironment(self.device_id, module_id, generation_id, self.socket_path, variables, debug_variables)

    async def _route_messages(self) -> None:
        async for record in self._hub.telemetry_stream(self.device_id):
            output = record.system_properties.get("$.on")
            if record.module_id is None or output is None:
                continue
            for route in self.routes:
                if route.target_module is not None and route.matches(record.module_id, output):
                    await self._deliver(record, route)

    async def _deliver(self, record: TelemetryRecord, route: EdgeRoute) -> None:
        assert route.target_module is not None
        assert route.target_input is not None
        properties = {name: value for name, value in record.properties.items() if value is not None}
        try:
            await self._hub.send_to_input(
                self.device_id,
                route.target_module,
                route.target_input,
                record.body,
                properties=properties,
                message_id=record.system_properties.get("$.mid"),
            )
        except (ValueError, ServiceError) as exc:
            logger.warning("route %r could not deliver a message from %s: %s", route.text, record.module_id, exc)
