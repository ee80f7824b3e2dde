"""The durable outbox: durable send rate, fsync'd rate, drain after an outage, memory with a large backlog.

The client in this process, on the native transport, a small JSON body, against two brokers in the
same run, each in a process of its own: a real mosquitto started here with a TLS listener, then the
aioiothub emulator (``_outbox_hub.py``); each is stopped and started again on its port for the
outage. Measured:

- live: sends/s from 100 concurrent senders without an outbox (each waits for its PUBACK);
- durable: the same with an outbox at ``durability="normal"`` (each send returns once committed),
  then ``"full"`` (every commit fsynced);
- drain: a backlog written while the broker is down, delivered once it is back (messages/s from the
  reconnect to the acknowledged flush);
- memory: RSS with 10 % of the large backlog pending and with all of it (1,000,000 messages), the
  broker down: messages stream from disk, so it must not grow with the backlog; and the file's size
  per message.

Usage::

    python benchmarks/outbox.py [--quick | --smoke] [--json out.json]

Prints every figure beside its target, met or MISSED.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import anyio
import anyio.abc
from _common import BENCH_DIR, REPO_ROOT, number, ratio, table, verdict
from _mosquitto import Mosquitto, free_port, mosquitto_executable

import aioiothub
from aioiothub.emulator.certs import CertificateAuthority

SENDERS = 100
TARGET_DURABLE = 5_000.0  # msg/s at durability="normal"
TARGET_DURABLE_SHARE = 0.5  # of the same client's rate without an outbox
TARGET_FULL = 1_000.0  # msg/s at durability="full"
TARGET_DRAIN_SHARE = 0.8  # of the live rate
TARGET_RSS_GROWTH_MB = 20.0  # between 10 % and 100 % of the large backlog
HUB = BENCH_DIR / "_outbox_hub.py"
FAST_RECONNECT = aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.2, jitter=0)


@dataclass(frozen=True)
class Sizes:
    live: int  # messages per rate measurement
    backlog: int  # the drain measurement's backlog
    pending: int  # the memory measurement's backlog


FULL = Sizes(live=20_000, backlog=100_000, pending=1_000_000)
QUICK = Sizes(live=5_000, backlog=20_000, pending=100_000)
SMOKE = Sizes(live=1_000, backlog=2_000, pending=5_000)


def rss_mb() -> float:
    """This process's resident memory, in MB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Broker:
    """A broker the benchmark can stop and start again on its port: mosquitto or the emulator."""

    def __init__(
        self, name: str, start: Callable[[], Any], stop: Callable[[], Any], client: Callable[..., Any]
    ) -> None:
        self.name = name
        self.start = start
        self.stop = stop
        self.client = client


@contextlib.asynccontextmanager
async def emulator_broker(directory: Path) -> AsyncIterator[Broker]:
    """The emulator in a child process (``_outbox_hub.py``): stopped by closing its input, started again on its port."""
    authority = CertificateAuthority.generate()
    (directory / "ca.pem").write_bytes(authority.certificate_pem)
    (directory / "ca.key.pem").write_bytes(authority.key_pem)
    context = ssl.create_default_context(cadata=authority.certificate_pem.decode("ascii"))
    key = base64.b64encode(os.urandom(32)).decode("ascii")
    port = free_port()
    process: anyio.abc.Process | None = None
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(HUB), str(port), str(directory), key]

    async def start() -> None:
        nonlocal process
        with anyio.fail_after(30):
            while True:
                process = await anyio.open_process(command, env=environment)
                assert process.stdout is not None
                line = await process.stdout.receive()
                if line.startswith(b"ready"):
                    return
                await process.wait()  # the port is still held by the last run's closing sockets
                await anyio.sleep(0.05)

    async def stop() -> None:
        nonlocal process
        if process is None:
            return
        assert process.stdin is not None
        await process.stdin.aclose()
        with anyio.fail_after(30):
            await process.wait()
        await process.aclose()
        process = None

    def client(**options: Any) -> aioiothub.IoTHubDeviceClient:
        return aioiothub.IoTHubDeviceClient(
            hostname="localhost", device_id="bench", shared_access_key=key, port=port, ssl_context=context, **options
        )

    await start()
    try:
        yield Broker("emulator", start, stop, client)
    finally:
        with anyio.CancelScope(shield=True):
            await stop()


@contextlib.asynccontextmanager
async def mosquitto_broker() -> AsyncIterator[Broker]:
    authority = CertificateAuthority.generate()
    port = free_port()
    broker = Mosquitto(authority, [port], mosquitto_executable())
    context = ssl.create_default_context(cadata=authority.certificate_pem.decode("ascii"))
    key = base64.b64encode(os.urandom(32)).decode("ascii")  # mosquitto accepts any credentials

    async def start() -> None:
        await anyio.to_thread.run_sync(broker.__enter__)

    async def stop() -> None:
        await anyio.to_thread.run_sync(broker.__exit__, None, None, None)

    def client(**options: Any) -> aioiothub.IoTHubDeviceClient:
        return aioiothub.IoTHubDeviceClient(
            hostname="localhost", device_id="bench", shared_access_key=key, port=port, ssl_context=context, **options
        )

    await start()
    try:
        yield Broker("mosquitto", start, stop, client)
    finally:
        await stop()


async def _send_all(client: aioiothub.IoTHubDeviceClient, count: int) -> float:
    """Seconds for ``count`` sends from :data:`SENDERS` concurrent senders."""
    per_sender = count // SENDERS
    body = {"temperature": 21.5, "humidity": 40}

    async def sender() -> None:
        for _ in range(per_sender):
            await client.send_message(body)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return time.perf_counter() - started


async def _rates(broker: Broker, sizes: Sizes, directory: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    async with broker.client(transport="native", reconnect=FAST_RECONNECT) as client:
        await _send_all(client, sizes.live // 5)  # warm up
        results["live"] = sizes.live / await _send_all(client, sizes.live)
    for durability in ("normal", "full"):
        path = directory / f"{broker.name}-{durability}.db"
        outbox = aioiothub.Outbox(path, durability=durability)  # type: ignore[arg-type]
        async with broker.client(transport="native", reconnect=FAST_RECONNECT, outbox=outbox) as client:
            results[durability] = sizes.live / await _send_all(client, sizes.live)
            assert client.outbox is not None
            await client.outbox.flush(timeout=300)
    return results


async def _drain(broker: Broker, sizes: Sizes, directory: Path) -> float:
    outbox = aioiothub.Outbox(directory / f"{broker.name}-drain.db", max_messages=sizes.backlog)
    async with broker.client(transport="native", reconnect=FAST_RECONNECT, outbox=outbox) as client:
        assert client.outbox is not None
        await broker.stop()
        await _send_all(client, sizes.backlog)
        await broker.start()
        await client.wait_connected()
        started = time.perf_counter()
        await client.outbox.flush(timeout=600)
        return sizes.backlog / (time.perf_counter() - started)


async def _memory(broker: Broker, sizes: Sizes, directory: Path) -> dict[str, float]:
    path = directory / "pending.db"
    outbox = aioiothub.Outbox(path, max_messages=sizes.pending)
    async with broker.client(transport="native", reconnect=FAST_RECONNECT, outbox=outbox) as client:
        assert client.outbox is not None
        await broker.stop()
        tenth = sizes.pending // 10
        await _send_all(client, tenth)
        at_tenth = rss_mb()
        await _send_all(client, sizes.pending - tenth)
        at_all = rss_mb()
        pending = client.outbox.statistics().pending
        size = await anyio.to_thread.run_sync(_file_size, directory)
        await broker.start()
    return {"rss_tenth": at_tenth, "rss_all": at_all, "pending": pending, "bytes_per_message": size / pending}


def _file_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("pending.db*") if path.is_file())


async def run(sizes: Sizes) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": sizes.__dict__, "brokers": {}}
    with tempfile.TemporaryDirectory(prefix="aioiothub-outbox-bench-") as name:
        directory = Path(name)
        async with mosquitto_broker() as broker:
            results["brokers"]["mosquitto"] = {**await _rates(broker, sizes, directory)}
            results["brokers"]["mosquitto"]["drain"] = await _drain(broker, sizes, directory)
        async with emulator_broker(directory) as broker:
            results["brokers"]["emulator"] = {**await _rates(broker, sizes, directory)}
            results["brokers"]["emulator"]["drain"] = await _drain(broker, sizes, directory)
            results["memory"] = await _memory(broker, sizes, directory)
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for name, figures in results["brokers"].items():
        live, normal, full, drain = figures["live"], figures["normal"], figures["full"], figures["drain"]
        share = normal / live if live else float("nan")
        drain_share = drain / live if live else float("nan")
        rows += [
            [f"{name}: live, no outbox (msg/s)", number(live), "-", "-", "reference"],
            [f"{name}: durable, normal (msg/s)", number(normal), f">= {number(TARGET_DURABLE)}", "-",
             verdict(normal, TARGET_DURABLE)],
            [f"{name}: durable / live", ratio(normal, live), f">= {TARGET_DURABLE_SHARE:.2f}x", "-",
             verdict(share, TARGET_DURABLE_SHARE)],
            [f"{name}: durable, full (msg/s)", number(full), f">= {number(TARGET_FULL)}", ratio(full, live),
             verdict(full, TARGET_FULL)],
            [f"{name}: drain of {number(results['sizes']['backlog'])} (msg/s)", number(drain),
             f">= {TARGET_DRAIN_SHARE:.2f}x live", ratio(drain, live), verdict(drain_share, TARGET_DRAIN_SHARE)],
        ]
    memory = results["memory"]
    growth = memory["rss_all"] - memory["rss_tenth"]
    pending = number(memory["pending"])
    rows += [
        [f"RSS, {number(memory['pending'] / 10)} pending (MB)", number(memory["rss_tenth"], 1), "-", "-", "reference"],
        [f"RSS, {pending} pending (MB)", number(memory["rss_all"], 1), "-", "-", "-"],
        ["RSS growth with the backlog (MB)", number(growth, 1), f"<= {TARGET_RSS_GROWTH_MB:g}", "-",
         "met" if growth <= TARGET_RSS_GROWTH_MB else "MISSED"],
        ["file size per pending message (bytes)", number(memory["bytes_per_message"]), "-", "-", "reported"],
    ]
    return table(
        f"Durable outbox, {SENDERS} concurrent senders, native transport, TLS",
        ["figure", "measured", "target", "vs live", "verdict"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    return _common.main(
        argv,
        benchmark="outbox",
        description=__doc__,
        settings=lambda arguments: SMOKE if arguments.smoke else QUICK if arguments.quick else FULL,
        run=run,
        report=report,
        options=lambda parser: parser.add_argument("--quick", action="store_true", help="smaller sizes (~1 minute)"),
    )


if __name__ == "__main__":
    sys.exit(main())
