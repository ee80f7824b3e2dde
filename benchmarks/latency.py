"""Round-trip latency against the emulator: twin GET, reported patch, direct method, C2D delivery.

aioiothub (on its ``aiomqtt`` and on its ``native`` transport) and the official ``azure-iot-device``
2.x async client, each in its own process, one request at a time against the same emulator listener
(port 8883, the only one the SDK can reach):

* twin GET and reported-properties patch: measured in the device process, call to result;
* direct method: measured at the hub, ``invoke_method`` call to result (hub -> device handler ->
  response -> hub); the device handler answers 200 at once;
* C2D delivery: the hub puts ``time.perf_counter()`` in the body, the device reads the clock when
  its handler gets the message (both processes read the same system-wide monotonic clock); the
  device then sends a telemetry echo and the hub waits for it before the next message, untimed.

Usage::

    python benchmarks/latency.py [--smoke] [--json out.json]

Prints p50 and p99 in milliseconds per operation and library, and the ratios to the SDK
(below 1 means aioiothub is faster).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import anyio
from _common import AIOIOTHUB, NATIVE, SDK, SDK_PORT, Library, Worker, library_worker, percentile, ratio, table
from _peer_venv import ensure_peer_python

from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, c2d_subscription

LIBRARIES = (AIOIOTHUB, NATIVE, SDK)
OPERATIONS = ("twin GET", "reported patch", "direct method", "C2D delivery")
SUBSCRIBE_TIMEOUT = 30.0
STEP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Sizes:
    """Samples per operation, after a warm-up."""

    samples: int
    warmup: int


FULL = Sizes(samples=1_000, warmup=50)
SMOKE = Sizes(samples=10, warmup=2)


async def _wait_subscribed(hub: Emulator, device_id: str, filters: list[str]) -> None:
    # The emulator has no "subscribed" event to wait on; a bounded poll is fine outside a test.
    with anyio.fail_after(SUBSCRIBE_TIMEOUT):
        while True:
            connection = hub.connection(device_id)
            if connection is not None and all(connection.is_subscribed(name) for name in filters):
                return
            await anyio.sleep(0.02)


async def _methods(hub: Emulator, device_id: str, count: int) -> list[float]:
    samples = []
    for index in range(count):
        started = time.perf_counter()
        result = await hub.invoke_method(device_id, "bench", {"index": index}, timeout=STEP_TIMEOUT)
        samples.append(time.perf_counter() - started)
        if result.status != 200:
            raise RuntimeError(f"direct method answered {result.status}: {result.payload!r}")
    return samples


async def _c2d(hub: Emulator, worker: Worker, device_id: str, count: int) -> list[float]:
    hub.clear_telemetry()
    for index in range(count):
        body = json.dumps({"sent": time.perf_counter(), "index": index})
        await hub.send_c2d(device_id, body)
        await hub.wait_for_telemetry(index + 1, device_id=device_id, timeout=STEP_TIMEOUT)
    hub.clear_telemetry()
    samples: list[float] = (await worker.call("c2d_samples"))["samples"]
    if len(samples) != count:
        raise RuntimeError(f"the device measured {len(samples)} C2D deliveries of {count}")
    return samples


async def _measure(
    library: Library, index: int, hub: Emulator, sizes: Sizes, log_dir: Path, peer_python: Path
) -> dict[str, Any]:
    device_id = f"latency-{index}"
    device = hub.add_device(device_id)
    async with library_worker(library, "latency", log_dir, peer_python) as worker:
        await worker.call(
            "connect",
            **library.connect_arguments(),
            hostname=hub.hostname,
            port=hub.port,
            device_id=device_id,
            shared_access_key=device.primary_key,
            ca_pem=hub.ca_pem.decode("ascii"),
            handlers=["method", "c2d"],
        )
        await _wait_subscribed(hub, device_id, [METHODS_SUBSCRIPTION, c2d_subscription(device_id)])
        samples: dict[str, list[float]] = {}
        for phase, count in (("warmup", sizes.warmup), ("measure", sizes.samples)):
            timeout = 60 + count * 0.2
            twin = (await worker.call("twin_get", count=count, seconds=timeout))["samples"]
            patch = (await worker.call("patch_reported", count=count, seconds=timeout))["samples"]
            methods = await _methods(hub, device_id, count)
            c2d = await _c2d(hub, worker, device_id, count)
            if phase == "measure":
                samples = dict(zip(OPERATIONS, (twin, patch, methods, c2d), strict=True))
        result: dict[str, Any] = {"worker": worker.hello}
        for operation, values in samples.items():
            result[operation] = {
                "p50_ms": percentile(values, 0.50) * 1000,
                "p99_ms": percentile(values, 0.99) * 1000,
                "samples_ms": [value * 1000 for value in values],
            }
        return result


async def run(sizes: Sizes) -> dict[str, Any]:
    """Measure every library against one emulator."""
    peer_python = ensure_peer_python()
    results: dict[str, Any] = {"sizes": sizes.__dict__, "libraries": {}}
    with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
        async with Emulator(port=SDK_PORT, websocket_port=None) as hub:
            for index, library in enumerate(LIBRARIES):
                results["libraries"][library.label] = await _measure(
                    library, index, hub, sizes, Path(directory), peer_python
                )
    return results


def report(results: dict[str, Any]) -> str:
    """The results table."""
    libraries = results["libraries"]
    ours, native, sdk = (libraries[library.label] for library in LIBRARIES)
    rows = []
    for operation in OPERATIONS:
        rows.append(
            [
                operation,
                *(f"{entry[operation][key]:.2f}" for entry in (ours, native, sdk) for key in ("p50_ms", "p99_ms")),
                ratio(ours[operation]["p50_ms"], sdk[operation]["p50_ms"]),
                ratio(native[operation]["p50_ms"], sdk[operation]["p50_ms"]),
                ratio(native[operation]["p50_ms"], ours[operation]["p50_ms"]),
            ]
        )
    title = (
        f"Round-trip latency against the emulator (TLS, one request at a time, {results['sizes']['samples']:,} "
        "samples each): milliseconds"
    )
    headers = [
        "operation",
        "aiomqtt transport p50",
        "p99",
        "native p50",
        "p99",
        "SDK p50",
        "p99",
        "aiomqtt/SDK p50",
        "native/SDK p50",
        "native/aiomqtt p50",
    ]
    return table(title, headers, rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    return _common.main(
        argv,
        benchmark="latency",
        description=__doc__,
        settings=lambda arguments: SMOKE if arguments.smoke else FULL,
        run=run,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
