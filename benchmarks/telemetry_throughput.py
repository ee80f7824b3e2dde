"""Telemetry throughput on one connection: QoS 1, TLS, a small JSON body.

Compares aioiothub on each transport (``aiomqtt`` and ``native``, the latter also on uvloop) with its
peers: raw aiomqtt ``publish`` (same in-flight window), gmqtt (MQTT 3.1.1, each publish awaiting its
PUBACK), the official ``azure-iot-device`` 2.x async client, and a raw ``asyncio.Protocol`` client
with hand-encoded packets (the machine's limit). Each library runs in its own process, against two
brokers in the same run: a real mosquitto started here with TLS listeners, then the aioiothub
emulator. Each library sends sequentially (one message in flight) and from N concurrent tasks; the
repetitions are interleaved (one run of every library, then the next round), so that a change in
the machine's load hits every library alike.

Usage::

    python benchmarks/telemetry_throughput.py [--smoke] [--json out.json]

Prints messages per second per library (median of the repetitions), then the ratios the native
transport is held to, each marked met or MISSED.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import (
    AIOIOTHUB,
    AIOMQTT,
    GMQTT,
    NATIVE,
    NATIVE_UVLOOP,
    RAW,
    SDK,
    SDK_PORT,
    Library,
    Worker,
    library_worker,
    median,
    number,
    ratio,
    table,
    verdict,
)
from _mosquitto import Mosquitto, free_port, mosquitto_executable
from _peer_venv import ensure_peer_python

from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority

LIBRARIES = (AIOIOTHUB, NATIVE, NATIVE_UVLOOP, AIOMQTT, GMQTT, SDK, RAW)
MODES = ("sequential", "concurrent")

#: (what, numerator, denominator, mode, at least): the native transport's targets, on mosquitto.
TARGETS = (
    ("native / aioiothub[aiomqtt], 100 in flight", NATIVE, AIOIOTHUB, "concurrent", 2.5),
    ("native / gmqtt, 100 in flight", NATIVE, GMQTT, "concurrent", 1.2),
    ("native / gmqtt, sequential", NATIVE, GMQTT, "sequential", 1.0),
    ("native / raw asyncio limit, 100 in flight", NATIVE, RAW, "concurrent", 0.4),
)


@dataclass(frozen=True)
class Sizes:
    """How much to send per repetition, and how often."""

    sequential: int
    concurrent: int
    concurrency: int
    repetitions: int
    warmup: int


FULL = Sizes(sequential=2_000, concurrent=10_000, concurrency=100, repetitions=5, warmup=500)
SMOKE = Sizes(sequential=20, concurrent=50, concurrency=10, repetitions=1, warmup=5)


@dataclass
class Target:
    """Where one library connects: a broker listener and, for the emulator, the device's key."""

    port: int
    device_id: str
    key: str
    ca_pem: str
    hub: Emulator | None = None

    def settle(self) -> None:
        if self.hub is not None:
            self.hub.clear_telemetry()

    def check_arrived(self, count: int) -> None:
        """On the emulator, every acknowledged message must have been stored (then forget them)."""
        if self.hub is None:
            return
        stored = len(self.hub.telemetry(self.device_id))
        self.hub.clear_telemetry()
        if stored != count:
            raise RuntimeError(f"the emulator stored {stored} messages of the {count} acknowledged")


async def _connect(worker: Worker, library: Library, target: Target, sizes: Sizes) -> None:
    await worker.call(
        "connect",
        **library.connect_arguments(),
        hostname="localhost",
        port=target.port,
        device_id=target.device_id,
        shared_access_key=target.key,
        ca_pem=target.ca_pem,
        window=sizes.concurrency,
    )


async def _send(worker: Worker, count: int, concurrency: int) -> float:
    timeout = max(120.0, count / 20)
    answer = await worker.call("telemetry", count=count, concurrency=concurrency, timeout=timeout, seconds=timeout + 30)
    return float(answer["seconds"])


async def _measure_broker(
    libraries: list[Library],
    targets: dict[str, Target],
    sizes: Sizes,
    log_dir: Path,
    peer_python: Path | None,
    tag: str,
) -> dict[str, Any]:
    """Every library connected at once, each in its own process; the rounds interleave them."""
    result: dict[str, Any] = {
        library.label: {"worker": None, **{mode: {"rates": []} for mode in MODES}} for library in libraries
    }
    async with contextlib.AsyncExitStack() as stack:
        workers: dict[str, Worker] = {}
        for library in libraries:
            worker = await stack.enter_async_context(library_worker(library, tag, log_dir, peer_python))
            await _connect(worker, library, targets[library.label], sizes)
            workers[library.label] = worker
            result[library.label]["worker"] = worker.hello
        for mode, count, concurrency in (
            ("sequential", sizes.sequential, 1),
            ("concurrent", sizes.concurrent, sizes.concurrency),
        ):
            for library in libraries:
                target = targets[library.label]
                await _send(workers[library.label], sizes.warmup, concurrency)
                target.settle()
            for _ in range(sizes.repetitions):
                for library in libraries:
                    target = targets[library.label]
                    seconds = await _send(workers[library.label], count, concurrency)
                    target.check_arrived(count)
                    result[library.label][mode]["rates"].append(count / seconds)
            for library in libraries:
                entry = result[library.label][mode]
                entry.update(median=median(entry["rates"]), count=count, concurrency=concurrency)
    return result


async def run(sizes: Sizes) -> dict[str, Any]:
    """Run every library against mosquitto, then against the emulator."""
    libraries = [library for library in LIBRARIES if library.available() is None]
    skipped = {library.label: library.available() for library in LIBRARIES if library.available() is not None}
    peer_python = ensure_peer_python() if SDK in libraries else None
    executable = mosquitto_executable()
    authority = CertificateAuthority.generate()
    ca_pem = authority.certificate_pem.decode("ascii")
    # mosquitto accepts any credentials; the key only has to be valid base64 for the clients.
    key = base64.b64encode(os.urandom(32)).decode("ascii")
    results: dict[str, Any] = {"sizes": sizes.__dict__, "brokers": {}, "skipped": skipped}
    with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
        log_dir = Path(directory)
        port = free_port()
        # The SDK can only reach 8883: a second listener of the same broker with the same settings.
        with Mosquitto(authority, [port, SDK_PORT], executable) as broker:
            results["mosquitto_version"] = broker.version
            targets = {
                library.label: Target(SDK_PORT if library.sdk else port, f"bench-{index}", key, ca_pem)
                for index, library in enumerate(libraries)
            }
            results["brokers"]["mosquitto"] = await _measure_broker(
                libraries, targets, sizes, log_dir, peer_python, "mosquitto"
            )
        async with Emulator(port=SDK_PORT, websocket_port=None) as hub:
            hub_ca = hub.ca_pem.decode("ascii")
            targets = {}
            for index, library in enumerate(libraries):
                device = hub.add_device(f"bench-{index}")
                assert device.primary_key is not None
                targets[library.label] = Target(SDK_PORT, device.device_id, device.primary_key, hub_ca, hub)
            results["brokers"]["emulator"] = await _measure_broker(
                libraries, targets, sizes, log_dir, peer_python, "emulator"
            )
    return results


def _rate(results: dict[str, Any], broker: str, library: Library, mode: str) -> float | None:
    entry = results["brokers"].get(broker, {}).get(library.label)
    return None if entry is None else float(entry[mode]["median"])


def report(results: dict[str, Any]) -> str:
    """The results tables."""
    sizes = results["sizes"]
    brokers = list(results["brokers"])
    columns = [(broker, mode) for broker in brokers for mode in MODES]
    headers = [
        "library",
        *(
            f"{broker} {'sequential' if mode == 'sequential' else str(sizes['concurrency']) + ' concurrent'}"
            for broker, mode in columns
        ),
    ]
    rows = []
    for library in LIBRARIES:
        if library.label in results["skipped"]:
            rows.append([library.label, *(["-"] * len(columns))])
            continue
        rows.append([library.label, *(number(_rate(results, broker, library, mode)) for broker, mode in columns)])
    title = (
        f"Telemetry throughput, one TLS connection, QoS 1, small JSON body: messages/s, median of "
        f"{sizes['repetitions']} interleaved runs ({sizes['sequential']:,} sequential / {sizes['concurrent']:,} "
        f"concurrent messages per run; in-flight window {sizes['concurrency']}, paho's fixed 20 for azure-iot-device)"
    )
    text = table(title, headers, rows)
    for label, reason in results["skipped"].items():
        text += f"\nnot run: {label}: {reason}"
    target_rows = []
    for broker in brokers:
        for what, numerator, denominator, mode, at_least in TARGETS:
            top, bottom = _rate(results, broker, numerator, mode), _rate(results, broker, denominator, mode)
            value = top / bottom if top and bottom else None
            target_rows.append([f"{broker}: {what}", ratio(top, bottom), f"{at_least:.2f}x", verdict(value, at_least)])
        for label, library in (("aioiothub[aiomqtt] / aiomqtt", AIOMQTT), ("aioiothub[native] / SDK", SDK)):
            for mode in MODES:
                numerator = AIOIOTHUB if library is AIOMQTT else NATIVE
                target_rows.append(
                    [
                        f"{broker}: {label}, {mode}",
                        ratio(_rate(results, broker, numerator, mode), _rate(results, broker, library, mode)),
                        "",
                        "",
                    ]
                )
    text += "\n\n" + table(
        "Ratios (targets apply on mosquitto; emulator rows for reading)",
        ["ratio", "measured", "target", ""],
        target_rows,
    )
    return text + f"\nmosquitto: {results.get('mosquitto_version', '?')}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    return _common.main(
        argv,
        benchmark="telemetry_throughput",
        description=__doc__,
        settings=lambda arguments: SMOKE if arguments.smoke else FULL,
        run=run,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
