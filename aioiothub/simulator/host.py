"""An emulator host for fleets: ``python -m aioiothub.simulator.host --devices 10000``.

Starts an :class:`~aioiothub.emulator.Emulator`, registers the devices ``prefix+index`` with keys
derived from the fleet key (read from the ``AIOIOTHUB_FLEET_KEY`` environment variable, never from
the command line, where other users could read it), and prints, as one JSON line on standard
output, how devices reach it::

    {"endpoint": {"hostname": "localhost", "port": 41234, "connect_host": "127.0.0.1", "ca_pem": "-----BEGIN…"}}

Then, with back-end rates given, it plays the solution's back end against the fleet (direct
methods, desired properties, cloud-to-device messages) and prints its counters as
``{"snapshot": …}`` every half second. It runs until SIGINT or SIGTERM, or, with
``--until-stdin-closes``, until its standard input closes (how ``aioiothub simulate`` stops it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from aioiothub import derive_device_key
from aioiothub.simulator.backend import BackendTraffic, drive_backend
from aioiothub.simulator.endpoint import device_ids
from aioiothub.simulator.identities import FLEET_KEY_VARIABLE
from aioiothub.simulator.limits import raise_open_file_limit
from aioiothub.simulator.pipes import emit, stdin_reader
from aioiothub.simulator.stats import FleetStats

__all__ = ["main"]

_SNAPSHOT_PERIOD = 0.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aioiothub.simulator.host",
        description="Run an IoT Hub emulator holding a simulated fleet (fleet key in $AIOIOTHUB_FLEET_KEY).",
    )
    parser.add_argument("--devices", type=int, required=True, help="how many devices to register")
    parser.add_argument("--prefix", default="sim-", help="device id prefix (default: %(default)s)")
    parser.add_argument("--start-index", type=int, default=0, help="index of the first device (default: 0)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="MQTT-over-TLS port; 0 picks a free one (default)")
    parser.add_argument("--hostname", default="localhost", help="the hub's host name (default: %(default)s)")
    parser.add_argument("--certfile", help="PEM server certificate to use instead of an ephemeral CA")
    parser.add_argument("--keyfile", help="private key of --certfile")
    parser.add_argument("--method-rate", type=float, default=0.0, help="direct method calls per second")
    parser.add_argument("--desired-rate", type=float, default=0.0, help="desired-property writes per second")
    parser.add_argument("--c2d-rate", type=float, default=0.0, help="cloud-to-device messages per second")
    parser.add_argument("--until-stdin-closes", action="store_true", help="stop when standard input closes")
    return parser


async def serve(arguments: argparse.Namespace, fleet_key: str) -> None:
    """Run the emulator until told to stop (see the module docstring)."""
    from aioiothub.emulator import Emulator

    backend = BackendTraffic(arguments.method_rate, arguments.desired_rate, arguments.c2d_rate)
    ids = device_ids(arguments.prefix, arguments.start_index, arguments.devices)
    stats = FleetStats()
    emulator = Emulator(
        hostname=arguments.hostname, host=arguments.host, port=arguments.port, websocket_port=None,
        certfile=arguments.certfile, keyfile=arguments.keyfile,
        # Telemetry is counted by the devices; the hub keeps only a little of it.
        telemetry_limit=1000,
    )
    for device_id in ids:
        emulator.add_device(device_id, primary_key=derive_device_key(fleet_key, device_id))
    async with emulator as hub, anyio.create_task_group() as tasks:
        connect_host = arguments.host if arguments.host not in ("0.0.0.0", "::") else arguments.hostname
        emit({"endpoint": {
            "hostname": hub.hostname, "port": hub.port, "connect_host": connect_host,
            "ca_pem": hub.ca_pem.decode("ascii"),
        }})
        tasks.start_soon(drive_backend, hub, ids, backend, stats, name="back-end traffic")

        async def report() -> None:
            while True:
                await anyio.sleep(_SNAPSHOT_PERIOD)
                emit({"snapshot": stats.snapshot()})

        async def until_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _signal in signals:
                    return

        async def until_stdin_closes() -> None:
            async with stdin_reader() as reader:
                while await reader.read(65536):
                    pass

        async def stop_after(waiter: Any) -> None:
            await waiter()
            tasks.cancel_scope.cancel()

        tasks.start_soon(report, name="counters")
        tasks.start_soon(stop_after, until_signal, name="signals")
        if arguments.until_stdin_closes:
            tasks.start_soon(stop_after, until_stdin_closes, name="stdin")
    emit({"snapshot": stats.snapshot(), "final": True})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aioiothub.simulator.host``."""
    arguments = _parser().parse_args(argv)
    fleet_key = os.environ.get(FLEET_KEY_VARIABLE)
    if not fleet_key:
        print(f"set {FLEET_KEY_VARIABLE} to the fleet key (base64)", file=sys.stderr)
        return 2
    if arguments.devices < 1:
        print("--devices must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="emulator host: %(levelname)s %(name)s: %(message)s")
    raise_open_file_limit(arguments.devices + 100)
    anyio.run(serve, arguments, fleet_key, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
