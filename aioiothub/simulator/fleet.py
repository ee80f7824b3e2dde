"""A process's share of the fleet: every device of an index range, on one event loop."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import anyio

from aioiothub import Outbox
from aioiothub.simulator.device import SimulatedDevice
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.limits import raise_open_file_limit
from aioiothub.simulator.stats import FleetStats
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings

__all__ = ["outbox_file", "run_devices"]

# Sockets besides the device connections: the event loop, standard streams, a local emulator's listener.
_SPARE_FILES = 200


def outbox_file(directory: str, process: int) -> str:
    """The outbox file of the ``process``-th process of a run with ``--outbox directory``.

    Example:
        >>> outbox_file("/var/lib/sim", 1)
        '/var/lib/sim/outbox-1.db'
    """
    return os.path.join(directory, f"outbox-{process}.db")


async def run_devices(
    endpoint: FleetEndpoint,
    device_ids: Sequence[str],
    traffic: TrafficSettings,
    stats: FleetStats,
    *,
    stop: anyio.Event,
    connect_concurrency: int = 100,
    local_hub: bool = False,
    outbox: str | None = None,
) -> None:
    """Simulate ``device_ids`` until ``stop`` is set, counting into ``stats``.

    Args:
        endpoint: how the devices reach their hub.
        device_ids: the devices this process runs.
        traffic: what they send.
        stats: where they count.
        stop: set it to end the run; the devices disconnect and this returns.
        connect_concurrency: devices connecting at once (the rest wait their turn).
        local_hub: the hub runs in this process too (it needs a file per connection as well).
        outbox: an SQLite file holding every device's outbox queue (their telemetry is committed
            there and delivered in the background), or ``None`` to send live. When the hub cannot
            keep a device's backlog under the bound, its oldest messages are dropped and counted.
    """
    if connect_concurrency < 1:
        raise ValueError(f"connect_concurrency must be at least 1, not {connect_concurrency!r}")
    messages = MessageFactory(traffic)
    raise_open_file_limit(len(device_ids) * (2 if local_hub else 1) + _SPARE_FILES)
    ssl_context = endpoint.ssl_context()
    gate = anyio.Semaphore(connect_concurrency)
    stats.add("devices", len(device_ids))
    async with contextlib.AsyncExitStack() as stack:
        # Opened here once, so that the devices share its file (each client claims its own queue).
        shared = None if outbox is None else await stack.enter_async_context(Outbox(outbox, when_full="drop_oldest"))
        async with anyio.create_task_group() as tasks:
            for device_id in device_ids:
                device = SimulatedDevice(device_id, endpoint, traffic, messages, stats, ssl_context, shared)
                tasks.start_soon(device.run, gate, name=f"simulated device {device_id}")
            await stop.wait()
            tasks.cancel_scope.cancel()
