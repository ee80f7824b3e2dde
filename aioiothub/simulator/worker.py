"""A worker process of ``aioiothub simulate --processes N``: ``python -m aioiothub.simulator.worker``.

It reads one JSON line on standard input (the endpoint, its device ids, the traffic), runs its
devices, and writes ``{"snapshot": …}`` lines every half second. A ``stop`` line, or its standard
input closing, ends it: it disconnects its devices, writes a last snapshot marked ``"final"`` and
exits. It is not imported by the package, so that ``-m`` runs it fresh.
"""

from __future__ import annotations

import json
import logging
import sys

import anyio

from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.fleet import run_devices
from aioiothub.simulator.limits import size_connect_threads
from aioiothub.simulator.pipes import emit, stdin_reader
from aioiothub.simulator.stats import FleetStats
from aioiothub.simulator.traffic import TrafficSettings

__all__ = ["main"]

_SNAPSHOT_PERIOD = 0.5


async def _work() -> None:
    stats = FleetStats()
    stop = anyio.Event()
    async with stdin_reader() as reader:
        setup = json.loads(await reader.readline())
        endpoint = FleetEndpoint.from_json(setup["endpoint"])
        size_connect_threads(setup["connect_concurrency"])
        traffic = TrafficSettings.from_json(setup["traffic"])

        async def report() -> None:
            while True:
                await anyio.sleep(_SNAPSHOT_PERIOD)
                emit({"snapshot": stats.snapshot()})

        async def listen() -> None:
            # Any line (normally "stop") or the end of input ends the run.
            await reader.readline()
            stop.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(report, name="snapshots")
            tasks.start_soon(listen, name="parent")
            await run_devices(
                endpoint, setup["device_ids"], traffic, stats, stop=stop,
                connect_concurrency=setup["connect_concurrency"], outbox=setup.get("outbox"),
            )
            tasks.cancel_scope.cancel()
    emit({"snapshot": stats.snapshot(), "final": True})


def main() -> int:
    """Entry point of a worker process."""
    logging.basicConfig(level=logging.WARNING, format="worker: %(levelname)s %(name)s: %(message)s")
    anyio.run(_work, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
