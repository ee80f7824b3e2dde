"""Telemetry throughput on one connection: QoS 1, TLS, a small JSON body.

Compares aioiothub, raw aiomqtt ``publish`` (same in-flight window) and the official
``azure-iot-device`` 2.x async client, each in its own process, against two brokers in the same run:
a real mosquitto started here with TLS listeners, then the aioiothub emulator. Each library sends
sequentially (one message in flight) and from N concurrent tasks.

Usage::

    python benchmarks/telemetry_throughput.py [--smoke] [--json out.json]

Prints one table of messages per second (median of the repetitions) with the ratios
aioiothub / aiomqtt and aioiothub / azure-iot-device.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import anyio
from _common import AIO_WORKER, SDK_PORT, SDK_WORKER, median, number, ratio, run_worker, table
from _mosquitto import Mosquitto, free_port, mosquitto_executable
from _peer_venv import ensure_peer_python

from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority

LIBRARIES = ("aioiothub", "aiomqtt", "azure-iot-device")


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
    """Where a library connects: a broker listener and, for the emulator, the device's key."""

    broker: str
    port: int
    device_id: str
    key: str
    ca_pem: str
    hub: Emulator | None = None


async def _measure(library: str, target: Target, sizes: Sizes, log_dir: Path, peer_python: Path) -> dict[str, Any]:
    python, script = (peer_python, SDK_WORKER) if library == "azure-iot-device" else (sys.executable, AIO_WORKER)
    result: dict[str, Any] = {}
    async with run_worker(f"{target.broker}-{library}", python, script, log_dir) as worker:
        await worker.call(
            "connect",
            library=library,
            hostname="localhost",
            port=target.port,
            device_id=target.device_id,
            shared_access_key=target.key,
            ca_pem=target.ca_pem,
            window=sizes.concurrency,
        )
        for mode, count, concurrency in (
            ("sequential", sizes.sequential, 1),
            ("concurrent", sizes.concurrent, sizes.concurrency),
        ):
            timeout = max(120.0, count / 20)
            await worker.call(
                "telemetry", count=sizes.warmup, concurrency=concurrency, timeout=timeout, seconds=timeout + 30
            )
            _settle(target)
            rates = []
            for _ in range(sizes.repetitions):
                answer = await worker.call(
                    "telemetry", count=count, concurrency=concurrency, timeout=timeout, seconds=timeout + 30
                )
                _check_arrived(target, count)
                rates.append(count / answer["seconds"])
            result[mode] = {"rates": rates, "median": median(rates), "count": count, "concurrency": concurrency}
        result["worker"] = worker.hello
    return result


def _settle(target: Target) -> None:
    if target.hub is not None:
        target.hub.clear_telemetry()


def _check_arrived(target: Target, count: int) -> None:
    """On the emulator, every acknowledged message must have been stored (then forget them)."""
    if target.hub is None:
        return
    stored = len(target.hub.telemetry(target.device_id))
    target.hub.clear_telemetry()
    if stored != count:
        raise RuntimeError(f"the emulator stored {stored} messages of the {count} acknowledged")


async def run(sizes: Sizes) -> dict[str, Any]:
    """Run every library against mosquitto, then against the emulator."""
    peer_python = ensure_peer_python()
    executable = mosquitto_executable()
    authority = CertificateAuthority.generate()
    ca_pem = authority.certificate_pem.decode("ascii")
    # mosquitto accepts any credentials; the key only has to be valid base64 for the clients.
    key = base64.b64encode(os.urandom(32)).decode("ascii")
    results: dict[str, Any] = {"sizes": sizes.__dict__, "brokers": {}}
    with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
        log_dir = Path(directory)
        port = free_port()
        # aioiothub and aiomqtt share one listener; the SDK can only reach 8883, a second listener
        # of the same broker process with the same settings.
        with Mosquitto(authority, [port, SDK_PORT], executable) as broker:
            results["mosquitto_version"] = broker.version
            per_library: dict[str, Any] = {}
            for library in LIBRARIES:
                target_port = SDK_PORT if library == "azure-iot-device" else port
                target = Target("mosquitto", target_port, f"bench-{library}", key, ca_pem)
                per_library[library] = await _measure(library, target, sizes, log_dir, peer_python)
            results["brokers"]["mosquitto"] = per_library
        async with Emulator(port=SDK_PORT, websocket_port=None) as hub:
            device = hub.add_device("bench")
            assert device.primary_key is not None
            per_library = {}
            for library in LIBRARIES:
                target = Target("emulator", SDK_PORT, "bench", device.primary_key, hub.ca_pem.decode("ascii"), hub)
                per_library[library] = await _measure(library, target, sizes, log_dir, peer_python)
            results["brokers"]["emulator"] = per_library
    return results


def report(results: dict[str, Any]) -> str:
    """The results table."""
    sizes = results["sizes"]
    rows = []
    for broker, per_library in results["brokers"].items():
        for mode in ("sequential", "concurrent"):
            rates = {library: per_library[library][mode]["median"] for library in LIBRARIES}
            label = "sequential" if mode == "sequential" else f"{sizes['concurrency']} concurrent"
            rows.append(
                [
                    f"{broker} {label}",
                    *(number(rates[library]) for library in LIBRARIES),
                    ratio(rates["aioiothub"], rates["aiomqtt"]),
                    ratio(rates["aioiothub"], rates["azure-iot-device"]),
                ]
            )
    title = (
        f"Telemetry throughput, one TLS connection, QoS 1, small JSON body: messages/s, median of "
        f"{sizes['repetitions']} runs ({sizes['sequential']:,} sequential / {sizes['concurrent']:,} concurrent "
        f"messages per run; in-flight window {sizes['concurrency']} for aioiothub and aiomqtt, paho's fixed 20 "
        "for azure-iot-device)"
    )
    headers = ["broker / mode", *LIBRARIES, "aioiothub/aiomqtt", "aioiothub/SDK"]
    return table(title, headers, rows) + f"\nmosquitto: {results.get('mosquitto_version', '?')}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    arguments = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = SMOKE if arguments.smoke else FULL
    results = anyio.run(run, sizes, backend="asyncio")
    print(report(results))
    _common.write_json(arguments.json, {"benchmark": "telemetry_throughput", **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
