"""A process's share of the fleet: every device of an index range, on one event loop."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from aioiothub.simulator.device import SimulatedDevice
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.limits import raise_open_file_limit
from aioiothub.simulator.stats import FleetStats
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings

__all__ = ["run_devices"]

# Sockets besides the device connections: the event loop, standard streams, a local emulator's listener.
_SPARE_FILES = 200


async def run_devices(
    endpoint: FleetEndpoint,
    device_ids: Sequence[str],
    traffic: TrafficSettings,
    stats: FleetStats,
    *,
    stop: anyio.Event,
    connect_concurrency: int = 100,
    local_hub: bool = False,
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
    """
    if connect_concurrency < 1:
        raise ValueError(f"connect_concurrency must be at least 1, not {connect_concurrency!r}")
    messages = MessageFactory(traffic)
    raise_open_file_limit(len(device_ids) * (2 if local_hub else 1) + _SPARE_FILES)
    ssl_context = endpoint.ssl_context()
    gate = anyio.Semaphore(connect_concurrency)
    stats.add("devices", len(device_ids))
    async with anyio.create_task_group() as tasks:
        for device_id in device_ids:
            device = SimulatedDevice(device_id, endpoint, traffic, messages, stats, ssl_context)
            tasks.start_soon(device.run, gate, name=f"simulated device {device_id}")
        await stop.wait()
        tasks.cancel_scope.cancel()
