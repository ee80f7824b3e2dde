"""Leaks: connect, work, cancel at random and disconnect, many times; nothing may accumulate.

Each cycle opens a client (sometimes cancelling the connect itself), sends, reads the twin, and
cancels one await of a kind chosen at random (a send, a twin read or patch, a method answer, a
wait for the connection, an iteration over cloud messages or desired patches) at a random moment;
then it checks that no twin request is left pending and closes the client. Afterwards file
descriptors, threads and tasks are back at their starting counts, and the growth of resident
memory per cycle is reported. Used by ``tests/reliability/test_leaks.py`` and ``benchmarks/soak.py``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

import aioiothub
from aioiothub.emulator import Emulator, Identity

__all__ = ["LeakReport", "run_leaks"]


@dataclass
class LeakReport:
    """Resource counts before and after, and what was cancelled."""

    cycles: int = 0
    cancelled: Counter[str] = field(default_factory=Counter)
    fds: tuple[int, int] = (0, 0)
    threads: tuple[int, int] = (0, 0)
    tasks: tuple[int, int] = (0, 0)
    rss_kib: tuple[float, float] = (0.0, 0.0)
    pending_requests_seen: int = 0
    seconds: float = 0.0

    @property
    def rss_growth_per_cycle_kib(self) -> float:
        return (self.rss_kib[1] - self.rss_kib[0]) / max(self.cycles, 1)

    def summary(self) -> str:
        kinds = ", ".join(f"{name} {count}" for name, count in sorted(self.cancelled.items()))
        return (
            f"{self.cycles:,} cycles in {self.seconds:.1f} s; cancelled: {kinds}; file descriptors "
            f"{self.fds[0]} -> {self.fds[1]}, threads {self.threads[0]} -> {self.threads[1]}, tasks "
            f"{self.tasks[0]} -> {self.tasks[1]}; RSS {self.rss_kib[0]:,.0f} -> {self.rss_kib[1]:,.0f} KiB "
            f"({self.rss_growth_per_cycle_kib:.2f} KiB per cycle); pending twin requests left: "
            f"{self.pending_requests_seen}"
        )


def _counts() -> tuple[int, int, int, float]:
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return fds, threading.active_count(), len(asyncio.all_tasks()), rss_pages * os.sysconf("SC_PAGE_SIZE") / 1024


async def _first(iterator: AsyncIterator[Any]) -> Any:
    async for item in iterator:
        return item
    return None


Operation = Callable[[aioiothub.IoTHubDeviceClient], Awaitable[Any]]

_OPERATIONS: dict[str, Operation] = {
    "send": lambda client: client.send_message({"x": 1}),
    "twin read": lambda client: client.get_twin(),
    "twin patch": lambda client: client.update_reported_properties({"y": 2}),
    "wait connected": lambda client: client.wait_connected(),
    "cloud messages": lambda client: _first(client.cloud_messages()),
    "desired patches": lambda client: _first(client.desired_property_patches()),
    "method requests": lambda client: _first(client.method_requests()),
}


async def _cycle(hub: Emulator, identity: Identity, transport: str, rng: random.Random, report: LeakReport) -> None:
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), transport=transport
    )
    if rng.random() < 0.1:
        with anyio.move_on_after(rng.uniform(0, 0.003)) as scope:
            async with client:
                pass
        if scope.cancelled_caught:
            report.cancelled["connect"] += 1
            return
    async with client:
        await client.send_message({"cycle": report.cycles})
        await client.get_twin()
        name = rng.choice(sorted(_OPERATIONS))
        with anyio.move_on_after(rng.uniform(0, 0.002)) as scope:
            await _OPERATIONS[name](client)
        if scope.cancelled_caught:
            report.cancelled[name] += 1
        session = client._session
        if session is not None and session.protocol.pending_twin_requests:
            report.pending_requests_seen += 1


async def run_leaks(
    hub: Emulator,
    *,
    cycles: int,
    concurrent_clients: int = 0,
    concurrent_cycles: int = 5,
    seed: int = 1,
    transport: str = "aiomqtt",
) -> LeakReport:
    """``cycles`` cycles one after another, then ``concurrent_clients`` clients x ``concurrent_cycles``."""
    rng = random.Random(seed)
    prefix = f"leak-{os.urandom(3).hex()}"
    single = hub.add_device(prefix)
    many = [hub.add_device(f"{prefix}-{index}") for index in range(concurrent_clients)]
    report = LeakReport()

    async def warm_up() -> None:
        # What lives as long as the process (executor threads, TLS contexts, caches, the allocator's
        # high-water mark for this many connections) is made before counting starts.
        async with anyio.create_task_group() as tasks:
            for identity in [single, *many]:
                tasks.start_soon(_cycle, hub, identity, transport, random.Random(0), LeakReport())
        for identity in [single, *many]:
            await hub.wait_disconnected(identity.device_id, timeout=30)

    await warm_up()
    before = _counts()
    started = time.perf_counter()
    for _ in range(cycles):
        await _cycle(hub, single, transport, rng, report)
        report.cycles += 1

    async def repeat(identity: Identity, own: random.Random) -> None:
        for _ in range(concurrent_cycles):
            await _cycle(hub, identity, transport, own, report)
            report.cycles += 1

    async with anyio.create_task_group() as tasks:
        for identity in many:
            tasks.start_soon(repeat, identity, random.Random(rng.getrandbits(64)))
    # Connections the hub is still closing are not the client's: wait until they are gone.
    for identity in [single, *many]:
        await hub.wait_disconnected(identity.device_id, timeout=30)
    report.seconds = time.perf_counter() - started
    after = _counts()
    report.fds, report.threads, report.tasks = (before[0], after[0]), (before[1], after[1]), (before[2], after[2])
    report.rss_kib = (before[3], after[3])
    return report
