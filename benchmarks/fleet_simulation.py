"""Fleet simulation: ``aioiothub simulate`` at scale, the emulator in its own process.

Two measurements, each a run of the real command line (``python -m aioiothub simulate --json``):

1. **Sustained**: 10,000 devices, each sending one QoS 1 message every 10 s (±10 %), a reported
   property every 120 s, while the back end (in the emulator's process) calls a direct method
   20 times a second, writes a desired property 10 times a second (each acknowledged by its device
   the Plug and Play way) and sends 10 cloud-to-device messages a second, held for 300 s after the
   last device connected (``--hold``). Printed: when the fleet was all connected, how long it was held, messages
   acknowledged and failed, the send latency p50/p99/max, the method, twin and C2D counts, the
   reconnects, and each process's peak memory.
2. **Largest fleet**: growing fleets (``--sizes``), with one device process and with
   ``--processes 2``, each held for 60 s after the last device connected; a size is *held* when
   every device connected within the time allowed (30 s + ``size / 15`` seconds), and then no message
   failed and no device was lost for 60 s. Stops at the first size not held.

Usage::

    python benchmarks/fleet_simulation.py [--smoke] [--json out.json] [--devices 10000] [--hold 300]
        [--sizes 10000,15000,19500] [--skip-largest] [--transport native]

``--transport`` picks the devices' client transport (``aiomqtt``, the client's default, or
``native``); the tables say which one ran.

Every process of a fleet holds one socket per device, so the open-file limit (``ulimit -n``)
bounds a process's fleet; the script prints it with the results, and the machine's load average
before and after each run (on a shared machine, other work takes CPU time from the fleet).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SUSTAINED_DEVICES = 10_000
HOLD_SECONDS = 300.0
LARGEST_HOLD = 60.0
SIZES = (2_000, 5_000, 10_000, 15_000, 19_500)
CONNECTS_PER_SECOND_ALLOWANCE = 15.0
"""Time allowed for the whole fleet to connect: devices / this many seconds."""


def simulate(arguments: list[str], timeout: float) -> dict[str, Any]:
    """Run ``aioiothub simulate --json`` with ``arguments``; return its summary."""
    command = [sys.executable, "-m", "aioiothub", "simulate", "--json", *arguments]
    print("$", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    load_before = os.getloadavg()
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"aioiothub simulate printed no summary (exit {completed.returncode}):\n{completed.stderr}")
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["exit_code"] = completed.returncode
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(completed.stderr.strip(), flush=True)
    return summary


def fleet_arguments(
    devices: int, *, processes: int, hold: float, interval: float, backend: bool, transport: str | None = None
) -> list[str]:
    # Time for the processes to start and the devices to connect, then the hold.
    cap = 30 + devices / CONNECTS_PER_SECOND_ALLOWANCE + hold
    arguments = [
        "--devices", str(devices), "--processes", str(processes), "--emulator", "process",
        "--interval", str(interval), "--jitter", "0.1", "--hold", str(hold), "--duration", str(cap),
    ]
    if transport is not None:
        arguments += ["--transport", transport]
    if backend:
        arguments += [
            "--report-interval", str(12 * interval),
            "--method-rate", "20", "--desired-rate", "10", "--c2d-rate", "10",
        ]
    return arguments


def held_for(summary: dict[str, Any]) -> float | None:
    connected_after = summary["all_connected_after_s"]
    return None if connected_after is None else summary["elapsed_s"] - connected_after


def holds(summary: dict[str, Any], devices: int) -> bool:
    counters = summary["counters"]
    return (
        summary["stopped_by"] == "hold"
        and counters["connected"] == devices
        and counters["failed"] == 0
        and counters["devices_lost"] == 0
    )


def number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def sustained_table(summary: dict[str, Any]) -> str:
    counters, latency = summary["counters"], summary["send_latency_ms"]
    steady = summary["steady_send_latency_ms"]
    rows = [
        ["devices", number(counters["devices"])],
        ["client transport", transport_of(summary)],
        ["processes (devices) + emulator process", f"{summary['processes']} + 1"],
        ["all connected after", f"{number(summary['all_connected_after_s'], 1)} s"],
        ["held afterwards", f"{number(held_for(summary), 1)} s"],
        ["messages acknowledged / sent", f"{number(counters['acknowledged'])} / {number(counters['sent'])}"],
        ["failed sends", number(counters["failed"])],
        ["messages/s (whole run)", number(summary["messages_per_s"], 1)],
        ["send latency p50 / p99 / max, whole run", f"{latency['p50']} / {latency['p99']} / {latency['max']} ms"],
        ["send latency p50 / p99 / max, once all connected",
         f"{steady['p50']} / {steady['p99']} / {steady['max']} ms ({number(steady['count'])} messages)"],
        ["direct methods: returned 200 / called", f"{number(counters['backend_methods_ok'])} / "
         f"{number(counters['backend_methods'])}"],
        ["desired writes / acknowledged by the devices", f"{number(counters['backend_desired_updates'])} / "
         f"{number(counters['desired_acknowledged'])}"],
        ["reported-property updates", number(counters["reported_updates"])],
        ["C2D sent / received", f"{number(counters['backend_c2d_sent'])} / {number(counters['c2d_received'])}"],
        ["twin or method-response failures", number(counters["twin_failures"])],
        ["reconnects / devices lost", f"{number(counters['reconnects'])} / {number(counters['devices_lost'])}"],
        ["peak RSS of the largest device process", f"{summary['peak_rss_bytes'] / 2**20:,.0f} MiB"],
        ["machine load average (1 min) before / after", " / ".join(map(str, summary["load_average_before_after"]))],
    ]
    return table(["measure", "value"], rows)


def transport_of(summary: dict[str, Any]) -> str:
    return str(summary["settings"].get("transport") or "aiomqtt (default)")


def largest_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        summary = result["summary"]
        latency = summary["steady_send_latency_ms"]
        rows.append([
            str(result["processes"]), number(result["devices"]), "yes" if result["held"] else "**no**",
            number(summary["all_connected_after_s"], 1), number(held_for(summary), 1),
            number(summary["counters"]["failed"]), number(summary["counters"]["devices_lost"]),
            number(summary["messages_per_s"], 1), f"{latency['p50']}", f"{latency['p99']}",
            f"{summary['peak_rss_bytes'] / 2**20:,.0f}",
            " / ".join(map(str, summary["load_average_before_after"])),
        ])
    return table(
        ["device processes", "devices", "held", "all connected after (s)", "held for (s)", "failed", "lost",
         "msg/s", "p50 ms once up", "p99 ms once up", "peak RSS MiB", "load before / after"],
        rows,
    )


def machine() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range")
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "open_file_limit": [soft, hard],
        "local_port_range": ports.read_text().split() if ports.exists() else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--devices", type=int, default=SUSTAINED_DEVICES, help="devices of the sustained run")
    parser.add_argument("--hold", type=float, default=HOLD_SECONDS, help="seconds the sustained fleet is held")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes tried for the largest fleet")
    parser.add_argument("--skip-sustained", action="store_true", help="only the largest-fleet runs")
    parser.add_argument("--skip-largest", action="store_true", help="only the sustained run")
    parser.add_argument(
        "--transport", choices=("aiomqtt", "native"), help="the devices' client transport (default: the client's)"
    )
    arguments = parser.parse_args()
    if arguments.smoke:
        devices, hold, sizes, interval, largest_hold = 30, 8.0, [20, 40], 1.0, 3.0
    else:
        devices, hold, interval, largest_hold = arguments.devices, arguments.hold, 10.0, LARGEST_HOLD
        sizes = [int(size) for size in arguments.sizes.split(",")]
    results: dict[str, Any] = {
        "benchmark": "fleet_simulation", "machine": machine(), "transport": arguments.transport or "aiomqtt (default)",
    }
    print(f"Fleet simulation on this machine: {results['machine']}\n", flush=True)

    if not arguments.skip_sustained:
        summary = simulate(
            fleet_arguments(
                devices, processes=1, hold=hold, interval=interval, backend=True, transport=arguments.transport
            ),
            timeout=devices / CONNECTS_PER_SECOND_ALLOWANCE + hold + 600,
        )
        results["sustained"] = summary
        print(f"\nSustained fleet: {devices:,} devices, one message every {interval:g} s each, "
              f"with direct methods, desired properties and C2D from the back end, held {hold:g} s\n")
        print(sustained_table(summary) + "\n", flush=True)

    if not arguments.skip_largest:
        largest: list[dict[str, Any]] = []
        for processes in (1, 2):
            for size in sizes:
                summary = simulate(
                    fleet_arguments(
                        size, processes=processes, hold=largest_hold, interval=interval, backend=False,
                        transport=arguments.transport,
                    ),
                    timeout=size / CONNECTS_PER_SECOND_ALLOWANCE + largest_hold + 600,
                )
                held = holds(summary, size)
                largest.append({"processes": processes, "devices": size, "held": held, "summary": summary})
                if not held:
                    break
        results["largest"] = largest
        print(f"\nLargest fleet (one message every {interval:g} s per device, held {largest_hold:g} s after "
              f"the last device connected; transport: {results['transport']})\n")
        print(largest_table(largest) + "\n", flush=True)

    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
