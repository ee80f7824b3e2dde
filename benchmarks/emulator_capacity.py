"""Emulator capacity: telemetry ingest on one TLS connection, concurrent TLS connections, Event Hubs reading.

The emulator runs in this process; the load comes from byte-level clients in a child process
(``_capacity_clients.py``) so that no client library is the bottleneck and the two do not share an
event loop.

* Ingest: one TLS connection sends QoS 1 telemetry (each message with its own ``$.mid``) with 2,000
  unacknowledged messages allowed; the rate runs until the last PUBACK. Every message must be
  stored. Target: at least 15,000 messages/s.
* Connections: N TLS connections with SAS authentication are opened (200 handshakes at a time) and
  held; then every one of them is pinged. Target: at least 5,000.
* Event Hubs: devices (aioiothub's native transport, MQTT over TLS) send to the emulator while a
  reader of its Event Hubs-compatible endpoint reads, on one partition and across four; the
  readers are the official ``azure-eventhub`` consumer (in its own venv, ``.peer-venv-eventhub``)
  and a lean one on proton's engine, each from a backlog and live, with each side's CPU share (see
  ``_eventhub_load.py``). Target: live, a reader keeps at least half the MQTT side's rate.

With ``--state-dir DIR`` the ingest emulator keeps its state, and so the built-in endpoint's events,
in a fresh directory inside ``DIR`` (``Emulator(state_dir=...)``): the rate then includes writing
every message to SQLite in batches, and the number of events on disk after the stop is reported.

The targets are reported as met or missed; missing one does not make the command fail (timed goals
on a shared machine are for reading, not for CI).

Usage::

    python benchmarks/emulator_capacity.py [--smoke] [--json out.json] [--connections 5000] [--state-dir DIR]
                                           [--only ingest,connections,eventhub]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common
import _eventhub_load
import anyio
from _common import BENCH_DIR, REPO_ROOT, number, table
from _worker_base import process_status

from aioiothub.emulator import Emulator
from aioiothub.protocol.connect import username
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token

CLIENTS = BENCH_DIR / "_capacity_clients.py"
INGEST_TARGET = 15_000
CONNECTIONS_TARGET = 5_000
PHASE_TIMEOUT = 300.0
PARTS = ("ingest", "connections", "eventhub")


@dataclass(frozen=True)
class Sizes:
    """How much load to generate."""

    messages: int
    repetitions: int
    connections: int
    eventhub: _eventhub_load.Sizes
    parts: tuple[str, ...] = PARTS
    #: Where the ingest emulator keeps its state (a fresh directory inside it), or ``None``: in memory.
    state_dir: str | None = None


FULL = Sizes(60_000, 3, CONNECTIONS_TARGET, _eventhub_load.Sizes(messages=60_000, warmup=4_000))
SMOKE = Sizes(2_000, 1, 50, _eventhub_load.Sizes(messages=1_000, warmup=100))


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _token(hub: Emulator, device_id: str, key: str | None) -> str:
    assert key is not None
    return generate_sas_token(device_resource_uri(hub.hostname, device_id), key, int(time.time()) + 3600)


async def ingest(sizes: Sizes) -> dict[str, Any]:
    """The flood: messages per second per repetition, each checked against what the emulator stored."""
    rates = []
    state_dir = tempfile.mkdtemp(prefix="capacity-", dir=sizes.state_dir) if sizes.state_dir is not None else None
    async with Emulator(websocket_port=None, telemetry_limit=sizes.messages, state_dir=state_dir) as hub:
        device = hub.add_device("dev1")
        for _ in range(sizes.repetitions):
            hub.clear_telemetry()
            command = [
                sys.executable,
                str(CLIENTS),
                "flood",
                str(hub.port),
                str(hub.ca_file),
                username(hub.hostname, "dev1"),
                _token(hub, "dev1", device.primary_key),
                str(sizes.messages),
            ]
            with anyio.fail_after(PHASE_TIMEOUT):
                result = await anyio.run_process(command, env=_environment(), check=False)
            if result.returncode != 0:
                raise RuntimeError(f"the flood client failed:\n{result.stderr.decode(errors='replace')}")
            records = hub.telemetry("dev1")
            if len(records) != sizes.messages or records[-1].system_properties["$.mid"] != str(sizes.messages - 1):
                raise RuntimeError(f"the emulator stored {len(records)} of {sizes.messages} messages")
            rates.append(float(result.stdout))
    on_disk = None
    if state_dir is not None:
        with sqlite3.connect(os.path.join(state_dir, "events.sqlite3")) as database:
            on_disk = database.execute("SELECT count(*) FROM events").fetchone()[0]
    return {"rates": rates, "median": statistics.median(rates), "messages": sizes.messages, "events_on_disk": on_disk}


async def connections(count: int) -> dict[str, Any]:
    """Open ``count`` connections, count them at the emulator, ping them all."""
    # Each process holds one end of every connection: the limit is per process, and the client inherits it.
    warning = _common.raise_open_files_limit(count + 500)
    async with Emulator(websocket_port=None) as hub:
        credentials: list[str] = []
        for index in range(count):
            device = hub.add_device(f"d{index}")
            credentials += [username(hub.hostname, f"d{index}"), _token(hub, f"d{index}", device.primary_key)]
        before = process_status()
        command = [sys.executable, str(CLIENTS), "many", str(hub.port), str(hub.ca_file), str(count)]
        output = b""
        async with await anyio.open_process(command, env=_environment()) as process:
            assert process.stdin is not None
            assert process.stdout is not None
            await process.stdin.send("".join(f"{line}\n" for line in credentials).encode())
            with anyio.fail_after(PHASE_TIMEOUT):
                async for chunk in process.stdout:
                    output += chunk
                    if b"\n" in output:
                        break
                connected = sum(hub.is_connected(f"d{index}") for index in range(count))
                held = process_status()
                await process.stdin.send(b"go\n")
                async for chunk in process.stdout:
                    output += chunk
                status = await process.wait()
        lines = output.decode(errors="replace").split()
        if status != 0 or len(lines) < 4 or lines[0] != "connected" or lines[2] != "pinged":
            raise RuntimeError(f"the connections client failed (exit status {status}): {output!r}")
        seconds = float(lines[1])
    return {
        "requested": count,
        "connected": connected,
        "pinged": int(lines[3]),
        "connect_seconds": seconds,
        "emulator_rss_growth_bytes": held["rss_bytes"] - before["rss_bytes"],
        "warning": warning,
    }


async def run(sizes: Sizes) -> dict[str, Any]:
    """The measurements asked for."""
    results: dict[str, Any] = {"sizes": {**sizes.__dict__, "eventhub": sizes.eventhub.__dict__}}
    if "ingest" in sizes.parts:
        results["ingest"] = await ingest(sizes)
    if "connections" in sizes.parts:
        results["connections"] = await connections(sizes.connections)
    if "eventhub" in sizes.parts:
        with tempfile.TemporaryDirectory(prefix="aioiothub-bench-") as directory:
            results["eventhub"] = await _eventhub_load.measure(sizes.eventhub, Path(directory))
    return results


def _verdict(all_held: bool, requested: int) -> str:
    if not all_held:
        return "MISSED"
    return "met" if requested >= CONNECTIONS_TARGET else "not tried at this size"


def report(results: dict[str, Any]) -> str:
    """The results tables."""
    rows = []
    if "ingest" in results:
        ingest_result = results["ingest"]
        rate = ingest_result["median"]
        persisted = ", events in state_dir" if results["sizes"]["state_dir"] is not None else ""
        rows.append([
            f"ingest, QoS 1, one TLS connection{persisted} (msg/s, median of {len(ingest_result['rates'])} x "
            f"{ingest_result['messages']:,})",
            number(rate),
            f"{INGEST_TARGET:,}",
            "met" if rate >= INGEST_TARGET else "MISSED",
        ])
        if ingest_result.get("events_on_disk") is not None:
            rows.append(["  events on disk after the stop", f"{ingest_result['events_on_disk']:,}", "", ""])
    held = results.get("connections")
    if held is not None:
        all_held = held["connected"] == held["requested"] == held["pinged"]
        rss_kib = held["emulator_rss_growth_bytes"] / max(1, held["connected"]) / 1024
        rows += [
            [
                f"concurrent TLS connections held and pinged (of {held['requested']:,})",
                f"{min(held['connected'], held['pinged']):,}",
                f"{CONNECTIONS_TARGET:,}",
                _verdict(all_held, held["requested"]),
            ],
            ["  time to open them all (s)", f"{held['connect_seconds']:.1f}", "", ""],
            ["  emulator RSS per connection (KiB)", f"{rss_kib:.1f}", "", ""],
        ]
    title = f"Emulator capacity on this machine ({os.cpu_count()} CPUs)"
    text = table(title, ["measure", "result", "target", ""], rows) if rows else title
    if held is not None and held["warning"]:
        text += f"\nwarning: {held['warning']}"
    if "eventhub" in results:
        eventhub = results["eventhub"]
        title = (
            f"Event Hubs-compatible endpoint: {eventhub['messages']:,} messages per phase from one device per "
            f"partition (aioiothub[native], MQTT over TLS, {eventhub['concurrency']} in flight each) to a reader "
            f"over {'AMQPS' if eventhub['amqps'] else 'plain AMQP (5671 was taken)'}; msg/s, CPU in shares of one CPU"
        )
        headers = ["measure", "msg/s", "x MQTT side", "devices CPU", "reader CPU", "emulator CPU", "limited by",
                   "target", ""]
        text += "\n\n" + table(title, headers, _eventhub_load.rows(eventhub))
    return text


def _settings(arguments: argparse.Namespace) -> Sizes:
    sizes = SMOKE if arguments.smoke else FULL
    parts = tuple(part for part in arguments.only.split(",") if part) if arguments.only else PARTS
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"--only: unknown measurements {sorted(unknown)}; choose from {', '.join(PARTS)}")
    sizes = replace(sizes, parts=parts)
    if arguments.connections:
        sizes = replace(sizes, connections=arguments.connections)
    if arguments.state_dir:
        sizes = replace(sizes, state_dir=arguments.state_dir)
    return sizes


def _options(command_line: argparse.ArgumentParser) -> None:
    command_line.add_argument("--connections", type=int, help=f"connections to hold (default {CONNECTIONS_TARGET})")
    command_line.add_argument(
        "--state-dir", metavar="DIR", help="run the ingest with a state directory (a fresh one inside DIR)"
    )
    command_line.add_argument("--only", help=f"comma-separated measurements to run (default all: {','.join(PARTS)})")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    return _common.main(
        argv,
        benchmark="emulator_capacity",
        description=__doc__,
        settings=_settings,
        run=run,
        report=report,
        options=_options,
    )


if __name__ == "__main__":
    sys.exit(main())
