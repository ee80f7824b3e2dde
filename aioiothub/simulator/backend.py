"""Back-end traffic: what a solution does to its devices, played against an emulator.

When the fleet's hub is an emulator the simulator controls (in this process or in its own), the
simulator can also act as the solution's back end: invoke direct methods, write desired
properties and send cloud-to-device messages at given rates, on devices picked at random among
those that have been connected for a few seconds (so a device still subscribing is not counted as
a failure). The devices answer (see :mod:`aioiothub.simulator.device`), which exercises every kind
of traffic a real solution has.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import anyio

from aioiothub.emulator import Hub
from aioiothub.simulator.stats import FleetStats

__all__ = ["BackendTraffic", "drive_backend"]

SETTLE_SECONDS: Final = 5.0
"""How long a device must have been connected before back-end traffic picks it."""

MAX_OUTSTANDING: Final = 1000
"""Method calls waiting for an answer at once; past this a tick is skipped (and counted as failed)."""


@dataclass(frozen=True)
class BackendTraffic:
    """Rates of back-end operations over the whole fleet, per second (0 turns one off).

    Attributes:
        method_rate: direct method calls per second (method ``"ping"``, answered with status 200).
        desired_rate: desired-property writes per second (``{"targetTemperature": …}``).
        c2d_rate: cloud-to-device messages per second.
        method_timeout: seconds a method call waits for the device.
    """

    method_rate: float = 0.0
    desired_rate: float = 0.0
    c2d_rate: float = 0.0
    method_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("method_rate", "desired_rate", "c2d_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 100_000:
                raise ValueError(f"{name} must be a number of operations per second from 0, not {value!r}")
        if not self.method_timeout > 0:
            raise ValueError("method_timeout must be positive")

    @property
    def active(self) -> bool:
        """Whether any back-end operation is asked for."""
        return bool(self.method_rate or self.desired_rate or self.c2d_rate)


class _Settled:
    """Which devices have been connected for at least :data:`SETTLE_SECONDS`, refreshed each second."""

    def __init__(self, hub: Hub, device_ids: Sequence[str]) -> None:
        self._hub = hub
        self._device_ids = device_ids
        self._connected_since: dict[str, float] = {}
        self.ready: list[str] = []

    async def watch(self) -> None:
        while True:
            now = time.monotonic()
            ready = []
            for device_id in self._device_ids:
                if self._hub.is_connected(device_id):
                    since = self._connected_since.setdefault(device_id, now)
                    if now - since >= SETTLE_SECONDS:
                        ready.append(device_id)
                else:
                    self._connected_since.pop(device_id, None)
            self.ready = ready
            await anyio.sleep(1.0)


async def drive_backend(hub: Hub, device_ids: Sequence[str], traffic: BackendTraffic, stats: FleetStats) -> None:
    """Run the back-end operations of ``traffic`` against ``hub`` until cancelled."""
    if not traffic.active:
        return
    settled = _Settled(hub, device_ids)
    outstanding = anyio.CapacityLimiter(MAX_OUTSTANDING)
    generator = random.Random()

    async def call_method(device_id: str, number: int) -> None:
        async with outstanding:
            stats.add("backend_methods")
            try:
                result = await hub.invoke_method(
                    device_id, "ping", {"n": number}, timeout=traffic.method_timeout
                )
            except (ValueError, TypeError, OSError) as exc:
                stats.fail("backend_methods_failed", exc)
                return
            if result.status == 200:
                stats.add("backend_methods_ok")
            else:
                # 404: the device was not listening; 504: it did not answer within the method timeout.
                stats.fail("backend_methods_failed", f"status {result.status}")

    async def write_desired(device_id: str, number: int) -> None:
        await hub.update_desired(device_id, {"targetTemperature": 18 + number % 10})
        stats.add("backend_desired_updates")

    async def send_c2d(device_id: str, number: int) -> None:
        await hub.send_c2d(device_id, f"command {number}".encode(), properties={"n": str(number)})
        stats.add("backend_c2d_sent")

    async def every(rate: float, operation: str) -> None:
        period = 1.0 / rate
        deadline = time.monotonic()
        number = 0
        async with anyio.create_task_group() as calls:
            while True:
                deadline += period
                await anyio.sleep(max(0.0, deadline - time.monotonic()))
                if not settled.ready:
                    continue
                number += 1
                device_id = generator.choice(settled.ready)
                if operation == "method":
                    if outstanding.borrowed_tokens >= MAX_OUTSTANDING:
                        stats.add("backend_methods")
                        stats.fail("backend_methods_failed", f"not called: {MAX_OUTSTANDING} calls already outstanding")
                        continue
                    calls.start_soon(call_method, device_id, number, name=f"method call to {device_id}")
                elif operation == "desired":
                    calls.start_soon(write_desired, device_id, number, name=f"desired write to {device_id}")
                else:
                    calls.start_soon(send_c2d, device_id, number, name=f"C2D message to {device_id}")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(settled.watch, name="settled-device watch")
        for rate, operation in (
            (traffic.method_rate, "method"),
            (traffic.desired_rate, "desired"),
            (traffic.c2d_rate, "c2d"),
        ):
            if rate:
                tasks.start_soon(every, rate, operation, name=f"back-end {operation} traffic")
