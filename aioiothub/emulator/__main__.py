"""Run the IoT Hub emulator standalone: ``python -m aioiothub.emulator --device dev1``.

It listens on port 8883 (MQTT over TLS) and 443 (MQTT over WebSocket) when those are free, or on free
ports otherwise, registers the devices and modules named on the command line (and DPS enrollment
groups), prints their connection strings (and the id scope and group keys), the ports and the CA file
devices must trust, and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Sequence

import anyio

from aioiothub.emulator.server import Emulator
from aioiothub.protocol.connect import MQTT_PORT, WEBSOCKET_PATH, WEBSOCKET_PORT

__all__ = ["main"]

DEFAULT_PORT = MQTT_PORT
DEFAULT_WEBSOCKET_PORT = WEBSOCKET_PORT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aioiothub.emulator",
        description="Run a local Azure IoT Hub emulator (MQTT over TLS and WebSocket).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"MQTT-over-TLS port; 0 picks a free one (default: {DEFAULT_PORT} if free)",
    )
    parser.add_argument(
        "--websocket-port",
        type=int,
        default=None,
        help=f"MQTT-over-WebSocket port; 0 picks a free one (default: {DEFAULT_WEBSOCKET_PORT} if free)",
    )
    parser.add_argument("--no-websocket", action="store_true", help="do not listen for WebSocket connections")
    parser.add_argument(
        "--hostname", default="localhost", help="the hub's host name in connection strings (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="register a device (repeatable)",
    )
    parser.add_argument(
        "--module",
        action="extend",
        nargs="+",
        default=[],
        metavar="DEVICE/MODULE",
        help="register a module, and its device if needed (repeatable)",
    )
    parser.add_argument(
        "--enrollment-group",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="create a symmetric-key DPS enrollment group and print its key (repeatable)",
    )
    parser.add_argument("--id-scope", default=None, help="the DPS id scope (default: 0ne00000000)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections and refusals")
    return parser


def _port_is_free(host: str, port: int) -> OSError | None:
    """Try to bind ``host:port`` the way the listener will; the error if that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


def _choose_port(requested: int | None, default: int, host: str, what: str) -> int:
    if requested is not None:
        return requested
    problem = _port_is_free(host, default)
    if problem is None:
        return default
    reason = "in use" if problem.errno == errno.EADDRINUSE else (problem.strerror or str(problem))
    print(f"{what} port {default} is not available ({reason}); using a free port instead", flush=True)
    return 0


def _register(hub: Emulator, devices: Sequence[str], modules: Sequence[str]) -> list[tuple[str, str]]:
    """Register the identities; return (label, connection string) pairs in order."""
    registered: list[tuple[str, str]] = []
    for device_id in dict.fromkeys(devices):
        registered.append((f"device {device_id}", hub.add_device(device_id).connection_string))
    for name in dict.fromkeys(modules):
        device_id, separator, module_id = name.partition("/")
        if not separator:
            raise ValueError(f"--module needs DEVICE/MODULE, got {name!r}")
        if not any(identity.device_id == device_id and identity.module_id is None for identity in hub.identities()):
            registered.append((f"device {device_id}", hub.add_device(device_id).connection_string))
        registered.append((f"module {name}", hub.add_module(device_id, module_id).connection_string))
    return registered


async def _run(arguments: argparse.Namespace) -> None:
    port = _choose_port(arguments.port, DEFAULT_PORT, arguments.host, "MQTT")
    websocket_port: int | None = None
    if not arguments.no_websocket:
        websocket_port = _choose_port(arguments.websocket_port, DEFAULT_WEBSOCKET_PORT, arguments.host, "WebSocket")
    hub = Emulator(hostname=arguments.hostname, host=arguments.host, port=port, websocket_port=websocket_port)
    registered = _register(hub, arguments.device, arguments.module)
    if arguments.id_scope is not None:
        hub.dps.id_scope = arguments.id_scope
    groups = [hub.dps.add_enrollment_group(name) for name in dict.fromkeys(arguments.enrollment_group)]
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with hub:
            lines = [
                "aioiothub IoT Hub emulator running",
                f"  hostname:       {hub.hostname}",
                f"  port:           {hub.port} (MQTT over TLS on {arguments.host})",
            ]
            if hub.websocket_port is not None:
                lines.append(f"  websocket port: {hub.websocket_port} (MQTT over WebSocket, path {WEBSOCKET_PATH})")
            lines.append(f"  CA file:        {hub.ca_file}")
            lines.extend(f"  {label}: {connection_string}" for label, connection_string in registered)
            if groups:
                where = f"provisioning host {hub.hostname}, port {hub.port}"
                lines.append(f"  DPS id scope:   {hub.dps.id_scope} ({where})")
                lines.extend(f"  enrollment group {group.name}: key {group.primary_key}" for group in groups)
            lines.append("Press Ctrl-C to stop.")
            print("\n".join(lines), flush=True)
            async for signum in signals:
                print(f"{signal.Signals(signum).name} received; stopping", flush=True)
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until interrupted.

    Example:
        >>> main(["--port", "0", "--websocket-port", "0", "--device", "dev1"])  # doctest: +SKIP

    Args:
        argv: the command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 after a clean stop, 2 for bad arguments.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        anyio.run(_run, arguments)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"cannot start the emulator: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
        with contextlib.suppress(BrokenPipeError):
            print("interrupted; stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
