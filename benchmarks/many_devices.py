"""Many devices in one process: thousands of TLS device connections to the emulator.

For each size (300 / 1,000 / 5,000 / 10,000 devices) one fresh process holds every device client of one
library, aioiothub or the official ``azure-iot-device`` 2.x async client. It connects them all
(``--connect-concurrency`` connects in progress at a time), then every device sends
``--messages`` QoS 1 messages in a row, all devices at once, then it disconnects them. Measured:
the connect rate, resident memory per connection (``VmRSS`` growth over the connect phase divided by
the connections), the thread count once connected (and its peak while connecting), the aggregate
telemetry rate, and, for the SDK, where and how it fails. The emulator runs in this process on port
8883 (the only one the SDK can reach), the clients in child processes.

Every SDK client owns threads, and this machine has a fixed number of process ids
(``/proc/sys/kernel/pid_max``): the SDK process stops opening clients at ``--sdk-thread-cap``
threads so that running out of ids cannot take the rest of the machine down; a run that stops there
says so.

Usage::

    python benchmarks/many_devices.py [--smoke] [--json out.json] [--sizes 300,1000,5000,10000]

Prints one row per library and size, then the ratios aioiothub / SDK per size.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import anyio
from _common import AIO_WORKER, SDK_PORT, SDK_WORKER, number, ratio, run_worker, table
from _peer_venv import ensure_peer_python

from aioiothub.emulator import Emulator

LIBRARIES = ("aioiothub", "azure-iot-device")
FULL_SIZES = (300, 1_000, 5_000, 10_000)
"""300 is below the point where azure-iot-device stops connecting, for a side-by-side row."""
SMOKE_SIZES = (10, 20)
FD_MARGIN = 1_000


@dataclass(frozen=True)
class Settings:
    """What one run does."""

    sizes: tuple[int, ...]
    messages: int
    connect_concurrency: int
    sdk_thread_cap: int


def _default_thread_cap() -> int:
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = 32_768
    return max(1_000, pid_max // 2)


async def _run_size(
    library: str, hub: Emulator, devices: list[list[str]], settings: Settings, log_dir: Path, peer_python: Path
) -> dict[str, Any]:
    size = len(devices)
    python, script = (peer_python, SDK_WORKER) if library == "azure-iot-device" else (sys.executable, AIO_WORKER)
    connect_timeout = max(60.0, size / 20)
    telemetry_timeout = max(120.0, size * settings.messages / 200)
    result: dict[str, Any] = {"library": library, "devices": size}
    async with run_worker(f"{library}-{size}", python, script, log_dir) as worker:
        result["limits"] = await worker.call("limits", needed=size + FD_MARGIN)
        connect = await worker.call(
            "many_connect",
            seconds=connect_timeout + 60,
            hostname=hub.hostname,
            port=hub.port,
            ca_pem=hub.ca_pem.decode("ascii"),
            devices=devices,
            connect_concurrency=settings.connect_concurrency,
            connect_timeout=30,
            phase_timeout=connect_timeout,
            thread_cap=settings.sdk_thread_cap,
        )
        result["connect"] = connect
        result["hub_connected"] = sum(hub.is_connected(device_id) for device_id, _ in devices)
        hub.clear_telemetry()
        if connect["connected"]:
            telemetry = await worker.call(
                "many_telemetry",
                seconds=telemetry_timeout + 60,
                messages=settings.messages,
                phase_timeout=telemetry_timeout,
            )
            telemetry["hub_stored"] = len(hub.telemetry())
            result["telemetry"] = telemetry
        hub.clear_telemetry()
        result["close"] = await worker.call("many_close", seconds=300, phase_timeout=240)
    result["log_errors"] = _log_errors(worker.log_path)
    # The next run starts only once the emulator has seen every connection of this one end.
    with anyio.move_on_after(60):
        for device_id, _ in devices:
            await hub.wait_disconnected(device_id, timeout=60)
    return result


def _log_errors(log_path: Path) -> list[str]:
    """The distinct error lines the worker's libraries logged (first few), to say how a run failed."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    seen: dict[str, None] = {}
    for line in lines:
        if ("Error" in line or "Exception" in line) and not line.startswith(("Traceback", " ")):
            seen.setdefault(line.strip()[:300])
            if len(seen) >= 5:
                break
    return list(seen)


def _failure_note(result: dict[str, Any]) -> str:
    connect = result["connect"]
    notes = []
    if connect.get("stopped_at_thread_cap"):
        cap = connect["stopped_at_thread_cap"]
        notes.append(f"stopped at the thread cap: {cap['clients']:,} clients, {cap['threads']:,} threads")
    if connect["timed_out"]:
        after = connect["after"]
        notes.append(
            f"connect phase timed out with {connect['connected']:,} connected; the process then had "
            f"{after['fds']:,} open file descriptors and {after['threads']:,} threads"
        )
    if connect["failed"]:
        notes.append(f"{connect['failed']:,} connects failed: {'; '.join(connect['errors'][:2])}")
    telemetry = result.get("telemetry")
    if telemetry and (telemetry["failed"] or telemetry["timed_out"]):
        notes.append(
            f"telemetry: {telemetry['failed']:,} devices failed"
            + (" (timed out)" if telemetry["timed_out"] else "")
            + (f": {telemetry['errors'][0]}" if telemetry["errors"] else "")
        )
    return " | ".join(notes)


def _note_marker(result: dict[str, Any], notes: list[str]) -> str:
    note = _failure_note(result)
    if not note:
        return "ok"
    if result.get("log_errors"):
        note += "\n    worker log: " + "\n    worker log: ".join(result["log_errors"][:3])
    notes.append(note)
    return f"[{len(notes)}]"


def _complete(result: dict[str, Any]) -> bool:
    connect = result["connect"]
    return connect["connected"] == result["devices"] and not connect["timed_out"]


async def run(settings: Settings) -> dict[str, Any]:
    """Run every size for every library against one emulator."""
    peer_python = ensure_peer_python()
    largest = max(settings.sizes)
    warning = _common.raise_open_files_limit(largest + FD_MARGIN)
    results: dict[str, Any] = {"settings": settings.__dict__, "runs": [], "warnings": [warning] if warning else []}
    with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
        limit = largest * settings.messages + 1_000
        async with Emulator(port=SDK_PORT, websocket_port=None, telemetry_limit=limit) as hub:
            devices = []
            for index in range(largest):
                identity = hub.add_device(f"many-{index:05}")
                assert identity.primary_key is not None
                devices.append([identity.device_id, identity.primary_key])
            for library in LIBRARIES:
                failed_at: int | None = None
                for size in settings.sizes:
                    if failed_at is not None:
                        results["runs"].append(
                            {"library": library, "devices": size, "skipped": f"did not complete {failed_at:,}"}
                        )
                        continue
                    run_result = await _run_size(library, hub, devices[:size], settings, Path(directory), peer_python)
                    results["runs"].append(run_result)
                    if not _complete(run_result):
                        failed_at = size
    return results


def _figures(result: dict[str, Any]) -> dict[str, float | None]:
    connect = result["connect"]
    connected = connect["connected"]
    telemetry = result.get("telemetry") or {}
    return {
        "connect_rate": connected / connect["seconds"] if connected and connect["seconds"] > 0 else None,
        "rss_kib": (connect["after"]["rss_bytes"] - connect["before"]["rss_bytes"]) / connected / 1024
        if connected
        else None,
        "threads": connect["after"]["threads"],
        "peak_threads": max(connect["peak_threads"], telemetry.get("peak_threads", 0)),
        "telemetry_rate": telemetry["sent"] / telemetry["seconds"] if telemetry.get("seconds") else None,
    }


def report(results: dict[str, Any]) -> str:
    """The results tables."""
    settings = results["settings"]
    rows = []
    notes: list[str] = []
    figures: dict[tuple[str, int], dict[str, float | None]] = {}
    for result in results["runs"]:
        library, size = result["library"], result["devices"]
        if "skipped" in result:
            notes.append(f"not run: {result['skipped']}")
            rows.append([library, f"{size:,}", *["-"] * 8, f"[{len(notes)}]"])
            continue
        figure = _figures(result)
        if _complete(result):
            # Ratios compare only runs where every client connected.
            figures[(library, size)] = figure
        connect = result["connect"]
        rows.append(
            [
                library,
                f"{size:,}",
                f"{connect['connected']:,}",
                f"{connect['seconds']:.1f}",
                number(figure["connect_rate"]),
                number(figure["rss_kib"], 1),
                number(figure["threads"]),
                number(figure["peak_threads"]),
                number(connect["after"]["fds"]),
                number(figure["telemetry_rate"]),
                _note_marker(result, notes),
            ]
        )
    title = (
        f"Many TLS device connections in one process, against the emulator ({settings['connect_concurrency']} "
        f"connects in progress at a time; then {settings['messages']} QoS 1 messages per device, all devices at once)"
    )
    headers = [
        "library",
        "devices",
        "connected",
        "connect s",
        "connects/s",
        "RSS KiB/conn",
        "threads",
        "peak threads",
        "open fds",
        "telemetry msg/s",
        "notes",
    ]
    text = table(title, headers, rows)
    text += "".join(f"\n[{index}] {note}" for index, note in enumerate(notes, start=1))
    ratio_rows = []
    for size in settings["sizes"]:
        ours, sdk = figures.get(("aioiothub", size)), figures.get(("azure-iot-device", size))
        if ours is None or sdk is None:
            continue
        ratio_rows.append(
            [
                f"{size:,}",
                ratio(ours["connect_rate"], sdk["connect_rate"]),
                ratio(ours["rss_kib"], sdk["rss_kib"]),
                ratio(ours["threads"], sdk["threads"]),
                ratio(ours["telemetry_rate"], sdk["telemetry_rate"]),
            ]
        )
    if ratio_rows:
        text += "\n\n" + table(
            "aioiothub / azure-iot-device, sizes both completed (connects/s and msg/s: higher is better for "
            "aioiothub; RSS and threads: lower is better)",
            ["devices", "connects/s", "RSS/conn", "threads", "telemetry msg/s"],
            ratio_rows,
        )
    for warning in results["warnings"]:
        text += f"\nwarning: {warning}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    command_line = _common.parser(__doc__.splitlines()[0])
    command_line.add_argument("--sizes", help="comma-separated device counts (default 300,1000,5000,10000)")
    command_line.add_argument("--messages", type=int, help="telemetry messages per device (default 10)")
    command_line.add_argument("--connect-concurrency", type=int, default=100, help="connects in progress at once")
    command_line.add_argument(
        "--sdk-thread-cap", type=int, default=_default_thread_cap(), help="SDK clients stop at this many threads"
    )
    arguments = command_line.parse_args(argv)
    sizes: tuple[int, ...] = SMOKE_SIZES if arguments.smoke else FULL_SIZES
    if arguments.sizes:
        sizes = tuple(int(size) for size in arguments.sizes.split(","))
    messages = arguments.messages or (2 if arguments.smoke else 10)
    settings = Settings(sizes, messages, arguments.connect_concurrency, arguments.sdk_thread_cap)
    results = anyio.run(run, settings, backend="asyncio")
    print(report(results))
    _common.write_json(arguments.json, {"benchmark": "many_devices", **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
