"""``aioiothub simulate`` and ``aioiothub merge-summaries``: the fleet simulator's command line."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import anyio
from rich.console import Console

from aioiothub import IoTHubError
from aioiothub._provisioning.client import GLOBAL_PROVISIONING_HOST
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.sas import decode_key
from aioiothub.simulator.backend import BackendTraffic
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.identities import (
    FLEET_KEY_VARIABLE,
    DpsEnrollmentGroup,
    EmbeddedEmulator,
    EmulatorProcess,
    ExistingHub,
    IdentitySource,
)
from aioiothub.simulator.limits import size_connect_threads
from aioiothub.simulator.progress import LiveProgress, format_summary
from aioiothub.simulator.runner import Simulation, SimulationPlan
from aioiothub.simulator.service_registry import ServiceRegistry
from aioiothub.simulator.stats import SUMMARY_MARKER, merge_summaries
from aioiothub.simulator.template import DEFAULT_TEMPLATE, DEFAULT_VARIABLES
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings

__all__ = ["add_merge_arguments", "add_simulate_arguments", "merge_main", "simulate_main"]

_REFRESH = 0.5

# What preparing a fleet (its identity source) may fail with, reported in one line.
_PREPARATION_ERRORS = (IoTHubError, ValueError, OSError, TimeoutError)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``aioiothub simulate``."""
    fleet = parser.add_argument_group("devices")
    fleet.add_argument("--devices", type=int, default=100, help="devices to simulate (default: %(default)s)")
    fleet.add_argument("--prefix", default="sim-", help="device id prefix (default: %(default)s)")
    fleet.add_argument("--start-index", type=int, default=0, help="index of the first device (default: 0)")
    fleet.add_argument(
        "--shard-index", default="0", metavar="N|env:NAME",
        help="this shard's number: the devices are the N-th block of --devices after --start-index; "
        "env:NAME reads it from an environment variable, e.g. env:JOB_COMPLETION_INDEX (default: 0)",
    )
    fleet.add_argument("--processes", type=int, default=1, help="processes to spread the devices over (default: 1)")
    fleet.add_argument(
        "--connect-concurrency", type=int, default=100, help="connects in progress at once, per process (default: 100)"
    )
    target = parser.add_argument_group("hub (default: an emulator started for the run)")
    target.add_argument(
        "--emulator", choices=("embedded", "process"),
        help="where the emulator runs: in this process (default with --processes 1) or in its own",
    )
    target.add_argument("--hub", metavar="HOSTNAME", help="an existing hub whose devices have fleet-key-derived keys")
    target.add_argument(
        "--service-connection-string", metavar="CS|env:NAME",
        help="create (or reuse) the devices, with fleet-key-derived keys, through IoT Hub's service REST API with "
        "this shared access policy connection string (RegistryWrite; a real hub's or the emulator's); env:NAME "
        "reads it from an environment variable",
    )
    target.add_argument(
        "--dps-id-scope", metavar="ID_SCOPE",
        help="provision every device through DPS (registration id = device id) as a member of a symmetric-key "
        "enrollment group whose key is the fleet key, then connect to the hub DPS assigns",
    )
    target.add_argument(
        "--dps-host", default=GLOBAL_PROVISIONING_HOST, help="DPS endpoint of --dps-id-scope (default: %(default)s)"
    )
    target.add_argument(
        "--port", type=int,
        help="the MQTT port of the hub (and of DPS) (default: 8883, or 443 with --websockets; with "
        "--service-connection-string --websockets, the port in its HostName)",
    )
    target.add_argument(
        "--connect-host", help="address to connect to when it is not the host name (a gateway, an emulator)"
    )
    target.add_argument("--ca-file", type=Path, help="PEM certificate to trust instead of the system store")
    target.add_argument("--websockets", action="store_true", help="MQTT over WebSocket")
    target.add_argument(
        "--fleet-key", help=f"base64 key device keys are derived from (default: ${FLEET_KEY_VARIABLE}, or a random "
        "one with an emulator); devices use derive_device_key(fleet_key, device_id)",
    )
    target.add_argument("--transport", choices=("aiomqtt", "native"), help="the client transport")
    traffic = parser.add_argument_group("telemetry")
    traffic.add_argument("--interval", type=float, default=10.0, help="seconds between messages (default: 10)")
    traffic.add_argument("--jitter", type=float, default=0.1, help="fraction each interval varies by (default: 0.1)")
    traffic.add_argument("--messages", type=int, help="messages per device (default: until the run stops)")
    traffic.add_argument("--duration", type=float, help="seconds to run (default: until every message is sent)")
    traffic.add_argument(
        "--hold", type=float, metavar="SECONDS",
        help="stop SECONDS after every device was connected at once (--duration then caps the whole run)",
    )
    traffic.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of telemetry (default: 1)")
    traffic.add_argument(
        "--template", default=DEFAULT_TEMPLATE, metavar="TEXT|@FILE",
        help="payload template with $.DeviceId, $.Time, $.Counter, $.Random, $.Epoch, $.Guid and declared variables",
    )
    traffic.add_argument(
        "--variables", metavar="JSON|@FILE",
        help='template variables: [{"name": "T", "random": true, "min": 1, "max": 9}, {"name": "S", "min": 0, '
        '"max": 100, "step": 5}, {"name": "E", "values": ["on", "off"]}]',
    )
    traffic.add_argument("--payload-size", type=int, metavar="BYTES", help="fixed-size binary payloads instead")
    traffic.add_argument(
        "--property", action="append", default=[], metavar="NAME=VALUE",
        help="application property of every message; the value may use template variables (repeatable)",
    )
    traffic.add_argument("--report-interval", type=float, help="seconds between reported-property updates per device")
    traffic.add_argument("--seed", type=int, help="seed for random payload values")
    traffic.add_argument(
        "--outbox", metavar="DIR", type=Path,
        help="store and forward: every device sends through a durable outbox, one SQLite file per process in DIR "
        "(created if missing), so telemetry sent while the hub is away is delivered once it is back; "
        "the live view shows the backlog, the summary what was delivered, expired and dropped (QoS 1 only)",
    )
    backend = parser.add_argument_group("back-end traffic (emulator targets only)")
    backend.add_argument("--method-rate", type=float, default=0.0, help="direct method calls per second, fleet-wide")
    backend.add_argument("--desired-rate", type=float, default=0.0, help="desired-property writes per second")
    backend.add_argument("--c2d-rate", type=float, default=0.0, help="cloud-to-device messages per second")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the summary as one JSON line on stdout")
    output.add_argument("--no-progress", action="store_true", help="no live display, even on a terminal")
    output.add_argument("-v", "--verbose", action="store_true", help="log every connect retry and failed send")


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``aioiothub merge-summaries``."""
    parser.add_argument(
        "files", nargs="*", type=Path,
        help="files holding summaries printed by 'aioiothub simulate --json' (default: standard input); "
        "lines that are not summaries are skipped, so whole logs can be given",
    )
    parser.add_argument("--json", action="store_true", help="print the merged summary as JSON")


def _text_or_file(value: str) -> str:
    return Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value


def _shard_index(value: str) -> int:
    text = value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"--shard-index: the environment variable {name} is not set")
        text = os.environ[name]
    try:
        index = int(text)
    except ValueError:
        raise ValueError(f"--shard-index must be an integer or env:NAME, not {text!r}") from None
    if index < 0:
        raise ValueError(f"--shard-index must not be negative, not {index}")
    return index


def _properties(pairs: Iterable[str]) -> dict[str, str]:
    properties = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise ValueError(f"--property must be NAME=VALUE, not {pair!r}")
        properties[name] = value
    return properties


def _fleet_key(arguments: argparse.Namespace, *, required: bool, option: str = "") -> str:
    key = arguments.fleet_key or os.environ.get(FLEET_KEY_VARIABLE) or None
    if key is None:
        if required:
            raise ValueError(f"{option} needs the fleet key: --fleet-key or ${FLEET_KEY_VARIABLE}")
        return base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    try:
        decode_key(key)
    except CredentialError:
        raise ValueError("the fleet key must be a non-empty base64 key") from None
    return key


def build_plan(arguments: argparse.Namespace) -> SimulationPlan:
    """The :class:`SimulationPlan` the options describe; ``ValueError`` for a bad option."""
    variables = _text_or_file(arguments.variables) if arguments.variables is not None else (
        DEFAULT_VARIABLES if arguments.template == DEFAULT_TEMPLATE else "[]"
    )
    traffic = TrafficSettings(
        interval=arguments.interval,
        jitter=arguments.jitter,
        messages=arguments.messages,
        qos=arguments.qos,
        template=_text_or_file(arguments.template),
        variables=variables,
        payload_size=arguments.payload_size,
        properties=_properties(arguments.property),
        report_interval=arguments.report_interval,
        seed=arguments.seed,
    )
    MessageFactory(traffic)  # refuses a bad template or an oversized message now, not in every device
    if arguments.devices < 1:
        raise ValueError(f"--devices must be at least 1, not {arguments.devices}")
    outbox = None
    if arguments.outbox is not None:
        if arguments.qos != 1:
            raise ValueError("--outbox needs --qos 1 (QoS 0 messages are sent live, never stored)")
        arguments.outbox.mkdir(parents=True, exist_ok=True)
        outbox = str(arguments.outbox)
    return SimulationPlan(
        devices=arguments.devices,
        prefix=arguments.prefix,
        start_index=arguments.start_index + _shard_index(arguments.shard_index) * arguments.devices,
        processes=arguments.processes,
        duration=arguments.duration,
        hold=arguments.hold,
        connect_concurrency=arguments.connect_concurrency,
        traffic=traffic,
        backend=BackendTraffic(arguments.method_rate, arguments.desired_rate, arguments.c2d_rate),
        outbox=outbox,
    )


def _check_transport(transport: str | None) -> None:
    """Refuse a ``--transport`` the installed client does not offer, before any device starts."""
    if transport is None:
        return
    probe = FleetEndpoint(hostname="probe.invalid", fleet_key=base64.b64encode(bytes(32)).decode(), transport=transport)
    try:
        probe.client("probe")
    except TypeError:
        raise ValueError(f"--transport {transport}: this aioiothub's client has no transport option") from None


def _secret_option(value: str, option: str) -> str:
    """``value``, or with ``env:NAME`` the environment variable it names (secrets stay out of process lists)."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if not os.environ.get(name):
        raise ValueError(f"{option}: the environment variable {name} is not set")
    return os.environ[name]


_HUB_OPTIONS = ("hub", "service_connection_string", "dps_id_scope")
"""The options that name a hub of the user's instead of an emulator started for the run."""


def build_source(arguments: argparse.Namespace) -> tuple[IdentitySource, bool]:
    """The identity source the options name, and whether its hub runs in this process."""
    _check_transport(arguments.transport)
    given = [f"--{name.replace('_', '-')}" for name in _HUB_OPTIONS if getattr(arguments, name) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of {', '.join(given)}, not several")
    if given and arguments.emulator is not None:
        raise ValueError(f"give {given[0]} or --emulator, not both")
    if given and (arguments.method_rate or arguments.desired_rate or arguments.c2d_rate):
        raise ValueError(
            f"back-end traffic (--method-rate, --desired-rate, --c2d-rate) needs an emulator started for the run, "
            f"not {given[0]}"
        )
    if given:
        fleet_key = _fleet_key(arguments, required=True, option=given[0])
        connection = {
            "port": arguments.port,
            "connect_host": arguments.connect_host,
            "ca_pem": arguments.ca_file.read_text(encoding="ascii") if arguments.ca_file else None,
            "websockets": arguments.websockets,
            "transport": arguments.transport,
        }
    if arguments.hub is not None:
        return ExistingHub(FleetEndpoint(hostname=arguments.hub, fleet_key=fleet_key, **connection)), False
    if arguments.service_connection_string is not None:
        connection_string = _secret_option(arguments.service_connection_string, "--service-connection-string")
        return ServiceRegistry(connection_string, fleet_key, **connection), False
    if arguments.dps_id_scope is not None:
        return DpsEnrollmentGroup(
            arguments.dps_id_scope, fleet_key, provisioning_host=arguments.dps_host, **connection
        ), False
    for option in ("port", "connect_host", "ca_file"):
        if getattr(arguments, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} is for --hub, --service-connection-string, --dps-id-scope")
    if arguments.websockets:
        raise ValueError(
            "--websockets is for --hub, --service-connection-string or --dps-id-scope "
            "(the simulator's emulators listen on MQTT over TLS)"
        )
    mode = arguments.emulator or ("embedded" if arguments.processes == 1 else "process")
    key = _fleet_key(arguments, required=False)
    if mode == "embedded":
        return EmbeddedEmulator(key, transport=arguments.transport), arguments.processes == 1
    return EmulatorProcess(key, transport=arguments.transport), False


async def _simulate(arguments: argparse.Namespace, plan: SimulationPlan, source: IdentitySource,
                    local_hub: bool, console: Console | None) -> dict[str, Any]:
    size_connect_threads(plan.connect_concurrency)
    simulation = Simulation(plan, source, local_hub=local_hub)
    first = plan.start_index
    title = (
        f"aioiothub simulate: {plan.devices:,} devices ({plan.prefix}{first} … {plan.prefix}{first + plan.devices - 1})"
    )
    summary: dict[str, Any] = {}
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:

        async def handle_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _signal in signals:
                    if simulation.stopping:
                        # A second Ctrl-C: stop waiting for the devices to disconnect.
                        tasks.cancel_scope.cancel()
                        return
                    simulation.request_stop("interrupted")

        async def show_progress(console: Console) -> None:
            with LiveProgress(
                console, title=lambda: f"{title} — {simulation.description}", target=plan.devices,
                duration=plan.duration, backend=plan.backend.active, outbox=plan.outbox is not None,
            ) as live:
                while True:
                    live.update(simulation.snapshot(), simulation.elapsed, stopping=simulation.stopping)
                    await anyio.sleep(_REFRESH)

        tasks.start_soon(handle_signals, name="signals")
        if console is not None:
            tasks.start_soon(show_progress, console, name="progress display")
        try:
            summary = await simulation.run()
        except _PREPARATION_ERRORS as exc:
            # The fleet could not be prepared (a registry refusal, a device with other keys, a hub
            # out of reach): said in one line, outside the task group so that it is not wrapped.
            failure = exc
        tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return summary


def simulate_main(arguments: argparse.Namespace) -> int:
    """Run ``aioiothub simulate``; returns the exit status (1 when a message failed or a device was lost)."""
    logging.basicConfig(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        plan = build_plan(arguments)
        source, local_hub = build_source(arguments)
    except (ValueError, TypeError, OSError) as exc:
        print(f"aioiothub simulate: error: {exc}", file=sys.stderr)
        return 2
    # With --json, stdout carries only the summary; the display and the text go to stderr.
    text_stream: TextIO = sys.stderr if arguments.json else sys.stdout
    console = Console(file=text_stream)
    live_console = console if console.is_terminal and not arguments.no_progress else None
    try:
        summary = anyio.run(_simulate, arguments, plan, source, local_hub, live_console, backend="asyncio")
    except KeyboardInterrupt:
        print("aioiothub simulate: stopped", file=sys.stderr)
        return 130
    except _PREPARATION_ERRORS as exc:
        print(f"aioiothub simulate: error: {exc}", file=sys.stderr)
        return 2
    if not summary:
        print("aioiothub simulate: stopped before the run ended", file=sys.stderr)
        return 130
    print(format_summary(summary), file=text_stream, flush=True)
    if arguments.json:
        print(json.dumps(summary, separators=(",", ":")), flush=True)
    return _exit_status(summary)


def _exit_status(summary: dict[str, Any]) -> int:
    """1 when a message failed, a device was lost or a worker crashed (so that CI notices), else 0."""
    counters = summary["counters"]
    crashed = "a worker process exited" in str(summary.get("stopped_by", ""))
    return 1 if counters["failed"] or counters["devices_lost"] or crashed else 0


def read_summaries(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The simulator summaries among ``lines`` (each a JSON object on one line)."""
    summaries = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and value.get("kind") == SUMMARY_MARKER:
                summaries.append(value)
    return summaries


def merge_main(arguments: argparse.Namespace) -> int:
    """Run ``aioiothub merge-summaries``."""
    if arguments.files:
        lines: list[str] = []
        for path in arguments.files:
            lines.extend(path.read_text(encoding="utf-8").splitlines())
    else:
        lines = sys.stdin.read().splitlines()
    summaries = read_summaries(lines)
    if not summaries:
        print("aioiothub merge-summaries: no simulator summaries found", file=sys.stderr)
        return 2
    merged = merge_summaries(summaries)
    if arguments.json:
        print(json.dumps(merged, separators=(",", ":")))
    else:
        print(f"{len(summaries)} shards")
        print(format_summary(merged))
    return _exit_status(merged)
