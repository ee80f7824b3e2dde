"""Run the IoT Hub emulator standalone: ``aioiothub-emulator --device dev1`` (or ``python -m aioiothub.emulator``).

It listens on port 8883 (MQTT over TLS) and 443 (MQTT over WebSocket, HTTPS and IoT Hub's service
REST API) when those are free, or on free ports otherwise, registers the devices and modules named on
the command line or in ``--config`` (and DPS enrollment groups), prints their connection strings, the
service connection string, the DPS id scope and group keys, the ports and the CA file devices must
trust, and runs until Ctrl-C or SIGTERM.

Unless ``--generate-keys`` is given, the shared access policies have fixed, published development keys
and devices named here get keys derived from the owner key and their id, so the same command gives
the same credentials every time -- insecure by design, like Azurite's account key.

With ``--state-dir`` the configuration file seeds a new state directory; once it holds identities,
it is what the emulator starts from (an identity deleted over REST stays deleted). The built-in
endpoint's events are kept there too; SIGINT and SIGTERM stop after writing the last of them.

``--route-source NAME`` (repeatable) names the route data sources sent to the Event Hubs-compatible
endpoint -- ``DeviceMessages``, ``TwinChangeEvents``, ``DeviceLifecycleEvents`` -- in place of the
default, device messages only; the banner prints what is routed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from aioiothub.emulator.amqp.surface import AMQPS_PORT
from aioiothub.emulator.config import ConfigError, EmulatorConfig, load_config
from aioiothub.emulator.hub.dps_enrollments import EnrollmentGroup
from aioiothub.emulator.hub.notifications import DEFAULT_EVENT_SOURCES, ROUTE_SOURCES
from aioiothub.emulator.server import Emulator
from aioiothub.emulator.service_api import SharedAccessPolicy, development_policies, generated_policies
from aioiothub.protocol.connect import MQTT_PORT, WEBSOCKET_PATH, WEBSOCKET_PORT
from aioiothub.protocol.sas import derive_device_key

__all__ = ["main"]

DEFAULT_PORT = MQTT_PORT
DEFAULT_WEBSOCKET_PORT = WEBSOCKET_PORT
_MAX_LISTED = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioiothub-emulator",
        description="Run a local Azure IoT Hub: MQTT over TLS and WebSocket, HTTPS, and IoT Hub's service REST API.",
        epilog=(
            "example: aioiothub-emulator --config hub.toml --state-dir .iothub --log-traffic\n"
            "then drive it with the printed service connection string (azure-iot-hub, azure-iothub, curl)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--config", metavar="FILE", help="devices, modules, twins, policies and enrollments (TOML or JSON)"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="keep identities, twins, queued messages and the CA here across restarts"
    )
    parser.add_argument(
        "--generate-keys",
        action="store_true",
        help="random policy and device keys instead of the well-known development ones",
    )
    parser.add_argument("--log-traffic", action="store_true", help="print one line per MQTT or HTTP operation")
    parser.add_argument(
        "--amqp-port",
        type=_amqp_port,
        default="auto",
        help=f"AMQPS port of the Event Hubs-compatible endpoint; 0 picks a free one (default: {AMQPS_PORT} if free)",
    )
    parser.add_argument(
        "--amqp-plain-port", type=_amqp_port, default=None, help="also serve AMQP without TLS on this port (0: free)"
    )
    parser.add_argument("--no-amqp", action="store_true", help="do not serve the AMQP endpoint")
    parser.add_argument(
        "--route-source",
        action="append",
        choices=ROUTE_SOURCES,
        default=None,
        metavar="NAME",
        help="a route data source sent to the Event Hubs-compatible endpoint, repeatable: "
        f"{', '.join(ROUTE_SOURCES)} (default: DeviceMessages only, as a hub without routes; "
        "list DeviceMessages too to keep telemetry there)",
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


def _amqp_port(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port")
    return port


def _print_line(line: str) -> None:
    print(line, flush=True)


def _choose_port(requested: int | None, default: int, host: str, what: str) -> int:
    if requested is not None:
        return requested
    problem = _port_is_free(host, default)
    if problem is None:
        return default
    reason = "in use" if problem.errno == errno.EADDRINUSE else (problem.strerror or str(problem))
    print(f"{what} port {default} is not available ({reason}); using a free port instead", flush=True)
    return 0


def _register(
    hub: Emulator, devices: Sequence[str], modules: Sequence[str], key_source: str | None
) -> list[tuple[str, str]]:
    """Register the identities the hub does not know yet; return (label, connection string) pairs in order.

    With ``key_source`` (the owner's development key) each new identity's keys derive from it and
    the identity's id, so that they are the same at every start.
    """
    registered: list[tuple[str, str]] = []

    def keys(label: str) -> dict[str, Any]:
        if key_source is None:
            return {}
        return {
            "primary_key": derive_device_key(key_source, label),
            "secondary_key": derive_device_key(key_source, f"{label}/secondary"),
        }

    def known(device_id: str, module_id: str | None = None) -> bool:
        return any(identity.key == (device_id, module_id) for identity in hub.identities())

    for device_id in dict.fromkeys(devices):
        if not known(device_id):
            hub.add_device(device_id, **keys(device_id))
        registered.append((f"device {device_id}", hub.identity(device_id).connection_string))
    for name in dict.fromkeys(modules):
        device_id, separator, module_id = name.partition("/")
        if not separator:
            raise ValueError(f"--module needs DEVICE/MODULE, got {name!r}")
        if not known(device_id):
            hub.add_device(device_id, **keys(device_id))
            registered.append((f"device {device_id}", hub.identity(device_id).connection_string))
        if not known(device_id, module_id):
            hub.add_module(device_id, module_id, **keys(name))
        registered.append((f"module {name}", hub.identity(device_id, module_id).connection_string))
    return registered


def _policies(arguments: argparse.Namespace, config: EmulatorConfig) -> list[SharedAccessPolicy]:
    standard = generated_policies() if arguments.generate_keys else development_policies()
    extra = {policy.name: policy for policy in config.policies}
    return [extra.pop(policy.name, policy) for policy in standard] + list(extra.values())


def _amqp_lines(hub: Emulator) -> list[str]:
    amqp = hub.amqp
    if amqp.unavailable is not None:
        return [f"  AMQP:           off ({amqp.unavailable})"]
    lines = []
    if amqp.tls_port is not None:
        taken = f"; {AMQPS_PORT} was taken, and azure-eventhub and uamqp use no other"
        note = "" if amqp.tls_port == AMQPS_PORT else taken
        served = "Event Hubs-compatible endpoint, service C2D and feedback"
        lines.append(f"  AMQPS port:     {amqp.tls_port} ({served}{note})")
    if amqp.plain_port is not None:
        lines.append(f"  AMQP port:      {amqp.plain_port} (plain, for UseDevelopmentEmulator=true)")
    if amqp.tls_port == AMQPS_PORT:
        lines.append(f"  Event Hubs-compatible connection string: {amqp.event_hub_connection_string()}")
    if amqp.plain_port is not None:
        lines.append(f"    plain AMQP: {amqp.event_hub_connection_string(plain=True)}")
    routed = [source for source in ROUTE_SOURCES if source in hub.core.event_sources]
    lines.append(f"  routed there:   {', '.join(routed) or 'nothing'} (--route-source)")
    return lines


def _banner(
    hub: Emulator, arguments: argparse.Namespace, registered: list[tuple[str, str]], groups: list[EnrollmentGroup]
) -> str:
    lines = [
        "aioiothub IoT Hub emulator running",
        f"  hostname:       {hub.hostname}",
        f"  port:           {hub.port} (MQTT over TLS on {arguments.host})",
    ]
    if hub.websocket_port is not None:
        lines.append(f"  websocket port: {hub.websocket_port} (MQTT over WebSocket, path {WEBSOCKET_PATH}; HTTPS)")
    lines.extend(_amqp_lines(hub))
    lines.append(f"  CA file:        {hub.ca_file}")
    if arguments.state_dir:
        lines.append(f"  state dir:      {Path(arguments.state_dir).resolve()}")
    if hub.websocket_port is not None:
        lines.append(f"  service connection string: {hub.service_connection_string}")
        if not arguments.generate_keys:
            lines.append("    (well-known development keys: insecure by design; --generate-keys for random ones)")
        lines.append("  shared access policies:")
        width = max(len(policy.name) for policy in hub.policies)
        lines.extend(
            f"    {policy.name:<{width}}  {','.join(sorted(policy.rights)):<52} key {policy.primary_key}"
            for policy in hub.policies
        )
    shown = dict(registered)
    for identity in hub.identities():
        kind = "device" if identity.module_id is None else "module"
        shown.setdefault(f"{kind} {identity.label}", identity.connection_string)
    labels = list(shown)
    lines.extend(f"  {label}: {shown[label]}" for label in labels[:_MAX_LISTED])
    if len(labels) > _MAX_LISTED:
        lines.append(f"  … and {len(labels) - _MAX_LISTED} more identities (GET /devices lists them)")
    if groups:
        lines.append(f"  DPS id scope:   {hub.dps.id_scope} (provisioning host {hub.hostname}, port {hub.port})")
        lines.extend(f"  enrollment group {group.name}: key {group.primary_key}" for group in groups)
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


async def _run(arguments: argparse.Namespace) -> None:
    config = load_config(arguments.config) if arguments.config else EmulatorConfig()
    port = _choose_port(arguments.port, DEFAULT_PORT, arguments.host, "MQTT")
    websocket_port: int | None = None
    if not arguments.no_websocket:
        websocket_port = _choose_port(arguments.websocket_port, DEFAULT_WEBSOCKET_PORT, arguments.host, "WebSocket")
    policies = _policies(arguments, config)
    hub = Emulator(
        hostname=config.hostname or arguments.hostname,
        host=arguments.host,
        port=port,
        websocket_port=websocket_port,
        policies=policies,
        state_dir=arguments.state_dir,
        log_traffic=_print_line if arguments.log_traffic else None,
        amqp_port=None if arguments.no_amqp else arguments.amqp_port,
        amqp_plain_port=arguments.amqp_plain_port,
        event_sources=arguments.route_source or DEFAULT_EVENT_SOURCES,
    )
    # A state directory that holds identities is the truth: the config's identities seed only a new one.
    await config.apply(hub, identities=not hub.identities())
    owner_key = None if arguments.generate_keys else policies[0].primary_key
    registered = _register(hub, arguments.device, arguments.module, owner_key)
    if arguments.id_scope is not None:
        hub.dps.id_scope = arguments.id_scope
    groups = [hub.dps.add_enrollment_group(name) for name in dict.fromkeys(arguments.enrollment_group)]
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with hub:
            print(_banner(hub, arguments, registered, groups), flush=True)
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
        The process exit code: 0 after a clean stop, 1 when it cannot start (a busy port, an
        unusable state directory), 2 for bad arguments or configuration.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        anyio.run(_run, arguments)
    except ConfigError as exc:
        print(f"aioiothub-emulator: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ValueError as exc:
        parser.error(str(exc))
    except sqlite3.DatabaseError as exc:
        print(f"cannot use the state directory {arguments.state_dir}: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"cannot start the emulator: a port is already in use ({exc.strerror}); "
                "stop what uses it, or choose others with --port / --websocket-port (0 picks free ones)",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"cannot start the emulator: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
        with contextlib.suppress(BrokenPipeError):
            print("interrupted; stopping", flush=True)
    return 0


def main_exit() -> None:
    """The ``aioiothub-emulator`` console script: :func:`main`, exiting with its code."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
