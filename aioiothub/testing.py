"""pytest fixtures: a running IoT Hub emulator and a connected device, for testing device code offline.

Installed with aioiothub and registered through the ``pytest11`` entry point, so the fixtures are
there in every test session; they are async, so tests run under anyio's pytest plugin::

    import pytest

    pytestmark = pytest.mark.anyio

    async def test_reports_temperature(iothub_emulator, iothub_device):
        await iothub_device.client.send_message({"temperature": 21.5})
        records = await iothub_emulator.wait_for_telemetry(1, device_id=iothub_device.device_id)
        assert records[0].json() == {"temperature": 21.5}

Fixtures:

* ``iothub_emulator`` -- an :class:`~aioiothub.emulator.Emulator` on free ports, started for the test
  and stopped after it; drive it in process (``update_desired``, ``invoke_method``, ``send_c2d``,
  ``telemetry``) or over its service REST API (``service_connection_string``).
* ``iothub_emulator_module`` -- the same, shared by the tests of one module.
* ``iothub_device`` -- a device registered on ``iothub_emulator`` under a fresh id, with an
  :class:`~aioiothub.IoTHubDeviceClient` connected to it (:class:`EmulatedDevice`).
* ``iothub_event_hub_connection_string`` -- the Event Hubs-compatible connection string of
  ``iothub_emulator``, for a back end reading telemetry with ``azure-eventhub``.

Options: the marker ``@pytest.mark.iothub_emulator(**options)`` on a test (or ``pytestmark`` on a
module, for ``iothub_emulator_module``) passes keyword options to the fixture's
:class:`~aioiothub.emulator.Emulator`, for instance the route data sources of the built-in endpoint::

    @pytest.mark.iothub_emulator(event_sources=["DeviceMessages", "TwinChangeEvents"])
    async def test_backend_sees_twin_changes(iothub_emulator, iothub_device): ...

Without sockets: :class:`MemoryNetwork` is a transport factory that connects clients to an
in-process emulator through memory (no socket, no TLS), as httpx's ``MockTransport`` does for HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aioiothub import IoTHubDeviceClient
from aioiothub.emulator import DeviceIdentity, Emulator
from aioiothub.transports.base import Channel, ConnectParameters, MessageHandler, Transport
from aioiothub.transports.memory import memory_pipe
from aioiothub.transports.native import NativeConnection

__all__ = [
    "EmulatedDevice",
    "MemoryNetwork",
    "iothub_device",
    "iothub_emulator",
    "iothub_emulator_module",
]

_MARKER = "iothub_emulator"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``iothub_emulator`` marker (``--strict-markers`` sessions accept it)."""
    config.addinivalue_line(
        "markers", f"{_MARKER}(**options): keyword options for the Emulator of the iothub_emulator fixtures"
    )


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise TypeError(f"@pytest.mark.{_MARKER} takes keyword options only, as Emulator(...) does")
    return dict(marker.kwargs)


class MemoryNetwork:
    """Connects clients to an in-process emulator through memory: pass it as ``transport=``.

    Every connection the client makes (its reconnects too) is an in-memory pipe that the emulator
    serves as it serves a TLS connection; the host, port and TLS options are not used, and
    authentication is by SAS (shared access key or token). Telemetry, the twin, direct methods and
    cloud-to-device messages all work, fast and without a port, so device code can be unit-tested.

    Args:
        emulator: a running :class:`~aioiothub.emulator.Emulator` (inside its ``async with``).

    Example:
        >>> async def test_reports(emulator):
        ...     device = emulator.add_device("dev1")
        ...     network = MemoryNetwork(emulator)
        ...     async with IoTHubDeviceClient.from_connection_string(
        ...         device.connection_string, transport=network
        ...     ) as client:
        ...         await client.send_message({"temperature": 21.5})
    """

    def __init__(self, emulator: Emulator) -> None:
        if not isinstance(emulator, Emulator):
            raise TypeError(f"emulator must be an aioiothub.emulator.Emulator, not {type(emulator).__name__}")
        self._emulator = emulator

    def __repr__(self) -> str:
        return f"<MemoryNetwork to {self._emulator.hostname}>"

    def __call__(self, parameters: ConnectParameters, on_message: MessageHandler) -> Transport:
        """One connection attempt: the native transport's MQTT over an in-memory pipe."""

        def open_channel(
            receive: Callable[[bytes], None], on_lost: Callable[[BaseException | None], None]
        ) -> Channel:
            channel, server_end = memory_pipe(receive, on_lost)
            self._emulator.accept_stream(server_end)
            return channel

        return NativeConnection(parameters, on_message, open_channel=open_channel)


@dataclass(frozen=True, slots=True)
class EmulatedDevice:
    """What the ``iothub_device`` fixture gives a test.

    Attributes:
        device_id: the device's id (fresh for each test).
        identity: its registration on the emulator (keys, connection string).
        client: a connected client of the device.
    """

    device_id: str
    identity: DeviceIdentity
    client: IoTHubDeviceClient


@pytest.fixture
async def iothub_emulator(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """A running emulator for one test: MQTT/TLS, WebSocket and HTTPS (service API) on free ports.

    ``@pytest.mark.iothub_emulator(**options)`` gives it keyword options, e.g. ``event_sources=``.
    """
    async with Emulator(**_options(request)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
async def iothub_emulator_module(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """A running emulator shared by the tests of one module (register distinct ids per test).

    A module's ``pytestmark = pytest.mark.iothub_emulator(**options)`` gives it keyword options.
    """
    async with Emulator(**_options(request)) as emulator:
        yield emulator


@pytest.fixture
def iothub_event_hub_connection_string(iothub_emulator: Emulator) -> str:
    """The Event Hubs-compatible connection string of ``iothub_emulator``, for a back end's reader.

    Example:
        >>> def test_backend_reads(iothub_emulator, iothub_event_hub_connection_string):  # doctest: +SKIP
        ...     consumer = EventHubConsumerClient.from_connection_string(
        ...         iothub_event_hub_connection_string, consumer_group="$Default",
        ...         connection_verify=str(iothub_emulator.ca_file))

    Needs ``aioiothub[amqp]`` and port 5671 free (azure-eventhub uses no other over TLS).
    """
    return iothub_emulator.amqp.event_hub_connection_string()


@pytest.fixture
async def iothub_device(iothub_emulator: Emulator) -> AsyncIterator[EmulatedDevice]:
    """A freshly registered device on ``iothub_emulator`` and a client connected as it."""
    device_id = f"device-{uuid.uuid4().hex[:8]}"
    identity = iothub_emulator.add_device(device_id)
    client = IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=iothub_emulator.port, ssl_context=iothub_emulator.client_ssl_context()
    )
    async with client:
        yield EmulatedDevice(device_id, identity, client)
