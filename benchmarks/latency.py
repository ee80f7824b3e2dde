"""Round-trip latency against the emulator: twin GET, reported patch, direct method, C2D delivery.

aioiothub and the official ``azure-iot-device`` 2.x async client, each in its own process, one
request at a time against the same emulator listener (port 8883, the only one the SDK can reach):

* twin GET and reported-properties patch: measured in the device process, call to result;
* direct method: measured at the hub, ``invoke_method`` call to result (hub -> device handler ->
  response -> hub); the device handler answers 200 at once;
* C2D delivery: the hub puts ``time.perf_counter()`` in the body, the device reads the clock when
  its handler gets the message (both processes read the same system-wide monotonic clock); the
  device then sends a telemetry echo and the hub waits for it before the next message, untimed.

Usage::

    python benchmarks/latency.py [--smoke] [--json out.json]

Prints p50 and p99 in milliseconds per operation and library, and the ratio aioiothub / SDK
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
from _common import AIO_WORKER, SDK_PORT, SDK_WORKER, Worker, percentile, ratio, run_worker, table
from _peer_venv import ensure_peer_python

from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, c2d_subscription

LIBRARIES = ("aioiothub", "azure-iot-device")
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


async def _measure(library: str, hub: Emulator, sizes: Sizes, log_dir: Path, peer_python: Path) -> dict[str, Any]:
    python, script = (peer_python, SDK_WORKER) if library == "azure-iot-device" else (sys.executable, AIO_WORKER)
    device_id = f"latency-{library}"
    device = hub.add_device(device_id)
    async with run_worker(library, python, script, log_dir) as worker:
        await worker.call(
            "connect",
            library=library,
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
            for library in LIBRARIES:
                results["libraries"][library] = await _measure(library, hub, sizes, Path(directory), peer_python)
    return results


def report(results: dict[str, Any]) -> str:
    """The results table."""
    libraries = results["libraries"]
    ours, sdk = libraries["aioiothub"], libraries["azure-iot-device"]
    rows = []
    for operation in OPERATIONS:
        rows.append(
            [
                operation,
                f"{ours[operation]['p50_ms']:.2f}",
                f"{ours[operation]['p99_ms']:.2f}",
                f"{sdk[operation]['p50_ms']:.2f}",
                f"{sdk[operation]['p99_ms']:.2f}",
                ratio(ours[operation]["p50_ms"], sdk[operation]["p50_ms"]),
                ratio(ours[operation]["p99_ms"], sdk[operation]["p99_ms"]),
            ]
        )
    title = (
        f"Round-trip latency against the emulator (TLS, one request at a time, {results['sizes']['samples']:,} "
        "samples each): milliseconds"
    )
    headers = [
        "operation",
        "aioiothub p50",
        "aioiothub p99",
        "SDK p50",
        "SDK p99",
        "aioiothub/SDK p50",
        "aioiothub/SDK p99",
    ]
    return table(title, headers, rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    arguments = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = SMOKE if arguments.smoke else FULL
    results = anyio.run(run, sizes, backend="asyncio")
    print(report(results))
    _common.write_json(arguments.json, {"benchmark": "latency", **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
