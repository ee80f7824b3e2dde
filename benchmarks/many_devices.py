"""Many devices in one process: thousands of TLS device connections to the emulator.

For each size (300 / 1,000 / 5,000 / 10,000 devices, or ``--devices 50000``) one fresh process holds
every device client of one library: aioiothub on its ``aiomqtt`` transport, aioiothub on its
``native`` transport, or the official ``azure-iot-device`` 2.x async client. It connects them all
(``--connect-concurrency`` connects in progress at a time), then every device sends ``--messages``
QoS 1 messages in a row and reads its twin, all devices at once, then it disconnects them.
Measured: the connect rate, resident memory per connection (``VmRSS`` growth over the connect phase
divided by the connections), the thread count once connected (and its peak while connecting), the
aggregate telemetry rate, the twin round trips completed, and, for the SDK, where and how it fails.
The emulator runs in a process of its own (``_hub_worker.py``) on port 8883 (the only one the SDK
can reach); every process raises its own open-files limit (the hard limit too, when run as root).

One loopback address pair offers as many connections as the ephemeral port range
(``net.ipv4.ip_local_port_range``, 28,232 by default): 50,000 devices need a wider range, which a
network namespace of the run's own can have without touching the machine's
(``ip netns exec NAME sysctl -w net.ipv4.ip_local_port_range="1024 65535"``).

Every SDK client owns threads, and this machine has a fixed number of process ids
(``/proc/sys/kernel/pid_max``): the SDK process stops opening clients at ``--sdk-thread-cap``
threads so that running out of ids cannot take the rest of the machine down; a run that stops there
says so.

Usage::

    python benchmarks/many_devices.py [--smoke] [--json out.json] [--sizes 300,1000,5000,10000]
    python benchmarks/many_devices.py --devices 50000 --libraries native

Prints one row per library and size, then the ratios per size and the targets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import (
    AIOIOTHUB,
    HUB_WORKER,
    NATIVE,
    SDK,
    SDK_PORT,
    Library,
    Worker,
    library_worker,
    number,
    ratio,
    run_worker,
    table,
    verdict,
)
from _peer_venv import ensure_peer_python

LIBRARIES = (AIOIOTHUB, NATIVE, SDK)
BY_NAME = {"aiomqtt": AIOIOTHUB, "native": NATIVE, "sdk": SDK}
FULL_SIZES = (300, 1_000, 5_000, 10_000)
"""300 is below the point where azure-iot-device stops connecting, for a side-by-side row."""
SMOKE_SIZES = (10, 20)
FD_MARGIN = 1_000
#: The native transport's targets: connects/s against the aiomqtt transport, and memory per connection.
CONNECT_RATE_TARGET = 1.5
RSS_TARGET_KIB = 40.0


@dataclass(frozen=True)
class Settings:
    """What one run does."""

    sizes: tuple[int, ...]
    messages: int
    connect_concurrency: int
    sdk_thread_cap: int
    libraries: tuple[str, ...]


def _default_thread_cap() -> int:
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = 32_768
    return max(1_000, pid_max // 2)


async def _run_size(
    library: Library, hub: Worker, settings: Settings, log_dir: Path, peer_python: Path | None, size: int
) -> dict[str, Any]:
    connect_timeout = max(60.0, size / 20)
    telemetry_timeout = max(120.0, size * settings.messages / 200)
    devices = await hub.call("add_devices", count=size, seconds=600)
    result: dict[str, Any] = {"library": library.label, "devices": size}
    async with library_worker(library, str(size), log_dir, peer_python) as worker:
        result["limits"] = await worker.call("limits", needed=size + FD_MARGIN)
        connect = await worker.call(
            "many_connect",
            seconds=connect_timeout + 60,
            **library.connect_arguments(),
            hostname=hub.hello["hub"]["hostname"],
            port=hub.hello["hub"]["port"],
            ca_pem=hub.hello["hub"]["ca_pem"],
            devices=devices,
            connect_concurrency=settings.connect_concurrency,
            # Also each message's deadline: thousands of devices sending at once queue at the hub.
            connect_timeout=120,
            phase_timeout=connect_timeout,
            thread_cap=settings.sdk_thread_cap,
        )
        result["connect"] = connect
        result["hub_connected"] = await hub.call("connected", count=size, seconds=300)
        await hub.call("clear_telemetry")
        if connect["connected"]:
            telemetry = await worker.call(
                "many_telemetry",
                seconds=telemetry_timeout + 60,
                messages=settings.messages,
                phase_timeout=telemetry_timeout,
            )
            telemetry["hub_stored"] = await hub.call("telemetry_count")
            result["telemetry"] = telemetry
        await hub.call("clear_telemetry")
        result["close"] = await worker.call("many_close", seconds=300, phase_timeout=240)
    result["log_errors"] = _log_errors(worker.log_path)
    # The next run starts only once the emulator has seen every connection of this one end.
    await hub.call("wait_disconnected", count=size, timeout=120, seconds=180)
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


def _ephemeral_ports() -> int:
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 28_232
    return high - low + 1


async def run(settings: Settings) -> dict[str, Any]:
    """Run every size for every library against one emulator in its own process."""
    libraries = [BY_NAME[name] for name in settings.libraries]
    peer_python = ensure_peer_python() if SDK in libraries else None
    largest = max(settings.sizes)
    warnings = [_common.raise_open_files_limit(largest + FD_MARGIN)]
    if largest > _ephemeral_ports() - 500:
        warnings.append(
            f"{largest:,} connections to one address need more ephemeral ports than the {_ephemeral_ports():,} of "
            "net.ipv4.ip_local_port_range: run in a network namespace with a wider range (see the docstring)"
        )
    results: dict[str, Any] = {
        "settings": settings.__dict__,
        "runs": [],
        "warnings": [warning for warning in warnings if warning],
    }
    with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
        log_dir = Path(directory)
        async with run_worker("emulator", sys.executable, HUB_WORKER, log_dir) as hub:
            hub.hello["hub"] = await hub.call(
                "start", port=SDK_PORT, telemetry_limit=largest * settings.messages + 1_000, needed=largest + FD_MARGIN
            )
            # Size by size, every library in turn: no library always follows another's largest run.
            failed_at: dict[str, int] = {}
            for size in settings.sizes:
                for library in libraries:
                    if library.label in failed_at:
                        skipped = f"did not complete {failed_at[library.label]:,}"
                        results["runs"].append({"library": library.label, "devices": size, "skipped": skipped})
                        continue
                    run_result = await _run_size(library, hub, settings, log_dir, peer_python, size)
                    results["runs"].append(run_result)
                    if not _complete(run_result):
                        failed_at[library.label] = size
    results["runs"].sort(key=lambda run: [library.label for library in libraries].index(run["library"]))
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
        "twins": telemetry.get("twins"),
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
            rows.append([library, f"{size:,}", *["-"] * 9, f"[{len(notes)}]"])
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
                number(figure["twins"]),
                _note_marker(result, notes),
            ]
        )
    title = (
        f"Many TLS device connections in one process, against the emulator ({settings['connect_concurrency']} "
        f"connects in progress at a time; then {settings['messages']} QoS 1 messages and a twin read per device, "
        "all devices at once)"
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
        "twin reads",
        "notes",
    ]
    text = table(title, headers, rows)
    text += "".join(f"\n[{index}] {note}" for index, note in enumerate(notes, start=1))
    ratio_rows = []
    target_rows = []
    for size in settings["sizes"]:
        ours, native, sdk = (figures.get((library.label, size)) for library in (AIOIOTHUB, NATIVE, SDK))
        if native is not None and ours is not None:
            rate = (
                native["connect_rate"] / ours["connect_rate"]
                if native["connect_rate"] and ours["connect_rate"]
                else None
            )
            target_rows.append(
                [
                    f"{size:,}: native / aiomqtt transport connects/s",
                    ratio(native["connect_rate"], ours["connect_rate"]),
                    f"{CONNECT_RATE_TARGET:.1f}x",
                    verdict(rate, CONNECT_RATE_TARGET),
                ]
            )
        if native is not None and native["rss_kib"] is not None:
            target_rows.append(
                [
                    f"{size:,}: native RSS per connection (KiB)",
                    number(native["rss_kib"], 1),
                    f"<= {RSS_TARGET_KIB:.0f}",
                    verdict(RSS_TARGET_KIB - native["rss_kib"], 0.0),
                ]
            )
            target_rows.append(
                [f"{size:,}: native threads once connected", number(native["threads"]), "1 + resolver", ""]
            )
        for label, mine in (("aiomqtt transport", ours), ("native", native)):
            if mine is None or sdk is None:
                continue
            ratio_rows.append(
                [
                    f"{size:,} {label}",
                    ratio(mine["connect_rate"], sdk["connect_rate"]),
                    ratio(mine["rss_kib"], sdk["rss_kib"]),
                    ratio(mine["threads"], sdk["threads"]),
                    ratio(mine["telemetry_rate"], sdk["telemetry_rate"]),
                ]
            )
    if ratio_rows:
        text += "\n\n" + table(
            "aioiothub / azure-iot-device, sizes both completed (connects/s and msg/s: higher is better for "
            "aioiothub; RSS and threads: lower is better)",
            ["devices", "connects/s", "RSS/conn", "threads", "telemetry msg/s"],
            ratio_rows,
        )
    if target_rows:
        text += "\n\n" + table("The native transport's targets", ["measure", "measured", "target", ""], target_rows)
    for warning in results["warnings"]:
        text += f"\nwarning: {warning}"
    return text


def _options(command_line: argparse.ArgumentParser) -> None:
    command_line.add_argument("--sizes", help="comma-separated device counts (default 300,1000,5000,10000)")
    command_line.add_argument("--devices", type=int, help="one size only (such as 50000)")
    command_line.add_argument("--libraries", default="aiomqtt,native,sdk", help="of aiomqtt, native, sdk")
    command_line.add_argument("--messages", type=int, help="telemetry messages per device (default 10)")
    command_line.add_argument("--connect-concurrency", type=int, default=100, help="connects in progress at once")
    command_line.add_argument(
        "--sdk-thread-cap", type=int, default=_default_thread_cap(), help="SDK clients stop at this many threads"
    )


def _settings(arguments: argparse.Namespace) -> Settings:
    sizes: tuple[int, ...] = SMOKE_SIZES if arguments.smoke else FULL_SIZES
    if arguments.sizes:
        sizes = tuple(int(size) for size in arguments.sizes.split(","))
    if arguments.devices:
        sizes = (arguments.devices,)
    libraries = tuple(name.strip() for name in arguments.libraries.split(",") if name.strip())
    unknown = sorted(set(libraries) - set(BY_NAME))
    if unknown or not libraries:
        raise SystemExit(f"--libraries takes some of {', '.join(BY_NAME)}, not {arguments.libraries!r}")
    messages = arguments.messages or (2 if arguments.smoke else 10)
    return Settings(sizes, messages, arguments.connect_concurrency, arguments.sdk_thread_cap, libraries)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    return _common.main(
        argv,
        benchmark="many_devices",
        description=__doc__,
        settings=_settings,
        run=run,
        report=report,
        options=_options,
    )


if __name__ == "__main__":
    sys.exit(main())
