"""``--processes N``: the fleet spread over worker processes, each a contiguous index range.

The parent starts ``python -m aioiothub.simulator.worker`` N times (see that module for what a
worker does) and keeps each one's latest snapshot.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.abc

from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.fleet import outbox_file
from aioiothub.simulator.pipes import json_lines, stop_child
from aioiothub.simulator.traffic import TrafficSettings

__all__ = ["WorkerPool", "split_range"]


def split_range(count: int, parts: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of ``parts`` contiguous slices of ``count`` items, sizes differing by at most one.

    Example:
        >>> split_range(10, 3)
        [(0, 4), (4, 3), (7, 3)]
    """
    base, extra = divmod(count, parts)
    slices, offset = [], 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        slices.append((offset, size))
        offset += size
    return slices


class WorkerPool:
    """The worker processes of one run, as seen from the parent.

    Args:
        endpoint: how devices reach the hub.
        shares: the device ids of each worker.
        traffic: what the devices send.
        connect_concurrency: connects in progress at once, per worker.
        outbox: the directory of the workers' outbox files (one each), or ``None``.
    """

    def __init__(
        self,
        endpoint: FleetEndpoint,
        shares: Sequence[Sequence[str]],
        traffic: TrafficSettings,
        *,
        connect_concurrency: int,
        outbox: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._shares = shares
        self._traffic = traffic
        self._connect_concurrency = connect_concurrency
        self._outbox = outbox
        self.snapshots: list[dict[str, Any]] = [{} for _ in shares]
        self._processes: list[anyio.abc.Process] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerPool]:
        """Start every worker; on exit, stop them and collect their final snapshots."""
        async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as readers:
            for index, share in enumerate(self._shares):
                process = await anyio.open_process(
                    [sys.executable, "-m", "aioiothub.simulator.worker"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, start_new_session=True,
                )
                stack.push_async_callback(stop_child, process)
                self._processes.append(process)
                assert process.stdin is not None
                setup = {
                    "endpoint": self._endpoint.to_json(),
                    "device_ids": list(share),
                    "traffic": self._traffic.to_json(),
                    "connect_concurrency": self._connect_concurrency,
                    "outbox": None if self._outbox is None else outbox_file(self._outbox, index),
                }
                await process.stdin.send(json.dumps(setup).encode() + b"\n")
                readers.start_soon(self._follow, index, process, name=f"worker {index} snapshots")
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()
                    with anyio.move_on_after(120):
                        for process in self._processes:
                            await process.wait()

    async def _follow(self, index: int, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        async with contextlib.aclosing(json_lines(process.stdout)) as lines:
            async for line in lines:
                if "snapshot" in line:
                    self.snapshots[index] = line["snapshot"]

    async def stop(self) -> None:
        """Ask every worker to stop (they answer with a final snapshot and exit)."""
        for process in self._processes:
            if process.stdin is not None and process.returncode is None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.send(b"stop\n")

    @property
    def exited(self) -> list[int | None]:
        """Each worker's exit code (``None`` while it runs)."""
        return [process.returncode for process in self._processes]
