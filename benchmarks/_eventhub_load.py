"""The Event Hubs row of ``emulator_capacity.py``: devices over MQTT to a reader of the Event Hubs-compatible endpoint.

For one partition (one device) and for four (one device on each), with the emulator in this
process and every other party in a process of its own:

* devices: aioiothub's native transport, MQTT over TLS, 100 messages in flight per device
  (``_aio_worker.py``, ``many_send``); first alone, which gives the MQTT side's rate;
* readers: the official ``azure-eventhub`` consumer (``_eventhub_sdk_consumer.py``, in its own
  venv) and a lean one on proton's engine (``_eventhub_consumer.py``), each once from the backlog
  the devices left (the reader's own rate, first event to last) and once live, attached before the
  devices send (devices' first send to the reader's last event).

Each reader reports its CPU seconds over its reading, the devices' process over its sending; the
emulator's are sampled here. The busiest of them is named the limit, unless none uses even
:data:`BUSY` of a CPU (then the parties wait on each other: round trips). The target: live, the
reader keeps up with the devices within a factor of two, at least half the MQTT side's rate
measured alone in the same run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from _common import BENCH_DIR, NATIVE, Worker, library_worker
from _peer_venv import ensure_eventhub_python
from anyio.streams.buffered import BufferedByteReceiveStream

from aioiothub.emulator import Emulator
from aioiothub.emulator.amqp.surface import AMQPS_PORT

LEAN = BENCH_DIR / "_eventhub_consumer.py"
SDK = BENCH_DIR / "_eventhub_sdk_consumer.py"
TARGET = 0.5
"""Live, a reader keeps up with at least this share of the MQTT side's rate."""
CONCURRENCY = 100
BUSY = 0.6
"""Below this share of a CPU, the busiest party is not taken to be the limit."""
READERS = ("lean (proton engine)", "azure-eventhub")
PHASE_TIMEOUT = 600.0


@dataclass(frozen=True)
class Sizes:
    """Messages per phase (all devices together), and the warm-up before the first."""

    messages: int
    warmup: int


class CpuSampler:
    """This process's CPU time, sampled often, to read its share of a CPU over any window afterwards."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), time.process_time()))
            await anyio.sleep(0.02)

    def share(self, start: float, end: float) -> float | None:
        """CPU seconds per second between ``start`` and ``end`` (``time.monotonic()``)."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _devices(hub: Emulator, partitions: int) -> list[list[str]]:
    """One device for each of the first ``partitions`` partitions: ``[device id, key]``."""
    log = hub.core.events
    wanted = [partition.identifier for partition in log.partitions[:partitions]]
    found: dict[str, list[str]] = {}
    index = 0
    while len(found) < len(wanted):
        device_id = f"eh-{index}"
        index += 1
        partition = log.partition_for(device_id).identifier
        if partition in wanted and partition not in found:
            device = hub.add_device(device_id)
            assert device.primary_key is not None
            found[partition] = [device_id, device.primary_key]
    return [found[partition] for partition in wanted]


def _starts(hub: Emulator, partitions: int) -> dict[str, int]:
    return {p.identifier: p.next_sequence_number for p in hub.core.events.partitions[:partitions]}


def _command(reader: str, hub: Emulator, eventhub_python: Path, starts: dict[str, int], count: int) -> list[str]:
    """The command line of ``reader``, reading ``count`` events from each partition of ``starts``."""
    tls = hub.amqp.tls_port == AMQPS_PORT
    if reader == READERS[1]:
        connection_string = hub.amqp.event_hub_connection_string(plain=not tls)
        ca = str(hub.ca_file) if tls else "-"
        return [str(eventhub_python), str(SDK), connection_string, ca, str(count),
                *(f"{p}:{s}" for p, s in starts.items())]
    port = hub.amqp.tls_port if tls else hub.amqp.plain_port
    key = next(policy.primary_key for policy in hub.policies if policy.name == "service")
    command = [sys.executable, str(LEAN), "--port", str(port), "--hostname", hub.hostname,
               "--event-hub", hub.amqp.event_hub_name, "--key", key, "--count", str(count)]
    command += ["--ca", str(hub.ca_file)] if tls else []
    for partition, sequence in starts.items():
        command += ["--start", f"{partition}:{sequence}"]
    return command


@asynccontextmanager
async def _reader(command: list[str], log: Path) -> AsyncIterator[BufferedByteReceiveStream]:
    with log.open("ab") as errors:
        process = await anyio.open_process(command, stderr=errors)
    assert process.stdout is not None
    try:
        yield BufferedByteReceiveStream(process.stdout)
    finally:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(30):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def _line(stream: BufferedByteReceiveStream, log: Path) -> dict[str, Any]:
    try:
        with anyio.fail_after(PHASE_TIMEOUT):
            line = await stream.receive_until(b"\n", 1 << 20)
    except (TimeoutError, anyio.IncompleteRead, anyio.EndOfStream) as exc:
        raise RuntimeError(f"the reader stopped ({type(exc).__name__}):\n{_tail(log)}") from None
    answer: dict[str, Any] = json.loads(line)
    return answer


def _check(result: dict[str, Any], starts: dict[str, int], per_partition: int) -> int:
    """How many events the reader read, once checked: every partition's, in order, none missing."""
    for partition, start in starts.items():
        received, last = result["received"].get(partition, 0), result["last_sequence"].get(partition)
        if received < per_partition or last != start + received - 1:
            raise RuntimeError(f"partition {partition}: read {received} events up to {last}, "
                               f"expected {per_partition} from {start}")
    return sum(result["received"].values())


async def _send(worker: Worker, per_device: int) -> dict[str, Any]:
    timeout = max(120.0, per_device / 100)
    result: dict[str, Any] = await worker.call(
        "many_send", count=per_device, concurrency=CONCURRENCY, timeout=timeout, seconds=timeout + 30
    )
    return result


async def _scenario(
    hub: Emulator, partitions: int, sizes: Sizes, eventhub_python: Path, log_dir: Path, sampler: CpuSampler
) -> dict[str, Any]:
    devices = _devices(hub, partitions)
    per_device = sizes.messages // partitions
    total = per_device * partitions
    out: dict[str, Any] = {"devices": len(devices), "messages": total}
    async with library_worker(NATIVE, f"eventhub-{partitions}", log_dir, None) as worker:
        await worker.call(
            "many_connect", hostname="localhost", port=hub.port, ca_pem=hub.ca_pem.decode("ascii"),
            devices=devices, transport="native", connect_concurrency=10, connect_timeout=30,
            phase_timeout=120, seconds=150,
        )
        await _send(worker, max(1, sizes.warmup // partitions))
        backlog = _starts(hub, partitions)
        sent = await _send(worker, per_device)
        out["mqtt"] = {"rate": total / sent["seconds"], "devices_cpu": sent["cpu"] / sent["seconds"],
                       "emulator_cpu": sampler.share(sent["began"], sent["began"] + sent["seconds"])}
        # Both backlog reads first: a reader handed events in batches may read past its count, and
        # must then find nothing there yet.
        for reader in READERS:
            log = log_dir / f"eventhub-{partitions}-{reader.split()[0]}.log"
            async with _reader(_command(reader, hub, eventhub_python, backlog, per_device), log) as stream:
                await _line(stream, log)
                result = await _line(stream, log)
            read = _check(result, backlog, per_device)
            seconds = result["last"] - result["first"]
            out.setdefault(reader, {})["backlog"] = {
                "rate": read / seconds, "reader_cpu": result["cpu"] / seconds,
                "emulator_cpu": sampler.share(result["first"], result["last"]),
            }
        for reader in READERS:
            log = log_dir / f"eventhub-{partitions}-{reader.split()[0]}.log"
            live = _starts(hub, partitions)
            async with _reader(_command(reader, hub, eventhub_python, live, per_device), log) as stream:
                await _line(stream, log)
                await anyio.sleep(0.5)  # the SDK says it is ready a little before its links are attached
                sent = await _send(worker, per_device)
                result = await _line(stream, log)
            read = _check(result, live, per_device)
            out[reader]["live"] = {
                "rate": read / (result["last"] - sent["began"]),
                "reader_cpu": result["cpu"] / (result["last"] - result["first"]),
                "emulator_cpu": sampler.share(sent["began"], result["last"]),
                "devices_cpu": sent["cpu"] / sent["seconds"],
                "mqtt_rate": total / sent["seconds"],
            }
    return out


async def measure(sizes: Sizes, log_dir: Path) -> dict[str, Any]:
    """Both scenarios (one partition, four), each on an emulator of its own."""
    eventhub_python = await anyio.to_thread.run_sync(ensure_eventhub_python)
    results: dict[str, Any] = {"messages": sizes.messages, "concurrency": CONCURRENCY, "scenarios": {}}
    sampler = CpuSampler()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sampler.run)
        for partitions in (1, 4):
            async with Emulator(websocket_port=None, amqp_plain_port=0, telemetry_limit=1_000) as hub:
                results["amqps"] = hub.amqp.tls_port == AMQPS_PORT
                results["scenarios"][str(partitions)] = await _scenario(
                    hub, partitions, sizes, eventhub_python, log_dir, sampler
                )
        tasks.cancel_scope.cancel()
    return results


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _limit(shares: dict[str, float | None]) -> str:
    busiest = max(shares, key=lambda name: shares[name] or 0.0)
    return busiest if (shares[busiest] or 0.0) >= BUSY else "round trips"


def rows(results: dict[str, Any]) -> list[list[str]]:
    """Table rows: measure, msg/s, x MQTT, devices, reader and emulator CPU, limited by, target, verdict."""
    table: list[list[str]] = []
    for partitions, scenario in results["scenarios"].items():
        where = f"{partitions} partition{'s' if partitions != '1' else ''}"
        mqtt = scenario["mqtt"]
        shares = {"devices": mqtt["devices_cpu"], "emulator": mqtt["emulator_cpu"]}
        table.append([f"{where}: devices to the emulator alone (MQTT side)", f"{mqtt['rate']:,.0f}", "1.00x",
                      _share(mqtt["devices_cpu"]), "-", _share(mqtt["emulator_cpu"]), _limit(shares), "", ""])
        for reader in READERS:
            for mode in ("backlog", "live"):
                entry = scenario[reader][mode]
                ratio = entry["rate"] / mqtt["rate"]
                shares = {"devices": entry.get("devices_cpu"), "reader": entry["reader_cpu"],
                          "emulator": entry["emulator_cpu"]}
                target = f">= {TARGET:.2f}x" if mode == "live" else ""
                verdict = ("met" if ratio >= TARGET else "MISSED") if mode == "live" else ""
                label = f"{where}: {reader}, {'from the backlog' if mode == 'backlog' else 'live, with the devices'}"
                table.append([label, f"{entry['rate']:,.0f}", f"{ratio:.2f}x", _share(entry.get("devices_cpu")),
                              _share(entry["reader_cpu"]), _share(entry["emulator_cpu"]), _limit(shares), target,
                              verdict])
    return table
