"""Benchmark worker holding the emulator, so that a large run's hub has a process (and CPU) of its own.

Started by ``many_devices.py`` as ``python _hub_worker.py`` and driven over JSON lines (see
``_worker_base``). The devices are ``many-00000``, ``many-00001``, ...: ``add_devices`` registers
the first ``count`` of them and returns their keys.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import _worker_base
from _worker_base import WorkerBase

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


def device_id(index: int) -> str:
    """The id of device number ``index``."""
    return f"many-{index:05}"


class HubWorker(WorkerBase):
    """Runs one emulator and answers questions about it."""

    extra_commands = ("start", "add_devices", "connected", "telemetry_count", "clear_telemetry", "wait_disconnected")

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.AsyncExitStack()
        self.hub: Any = None
        self.devices: list[list[str]] = []

    async def start(self, command: dict[str, Any]) -> Any:
        """Start the emulator on ``port`` (TLS only); its host name and CA."""
        from aioiothub.emulator import Emulator

        _worker_base.raise_open_files_limit(int(command["needed"]))
        self.hub = await self.stack.enter_async_context(
            Emulator(port=int(command["port"]), websocket_port=None, telemetry_limit=int(command["telemetry_limit"]))
        )
        return {"hostname": self.hub.hostname, "port": self.hub.port, "ca_pem": self.hub.ca_pem.decode("ascii")}

    async def add_devices(self, command: dict[str, Any]) -> Any:
        """Register devices up to ``count``; ``[[device id, key], ...]`` for all of them."""
        for index in range(len(self.devices), int(command["count"])):
            identity = self.hub.add_device(device_id(index))
            self.devices.append([identity.device_id, identity.primary_key])
        return self.devices[: int(command["count"])]

    async def connected(self, command: dict[str, Any]) -> Any:
        """How many of the first ``count`` devices the hub sees connected."""
        return sum(self.hub.is_connected(device_id(index)) for index in range(int(command["count"])))

    async def telemetry_count(self, command: dict[str, Any]) -> Any:
        """How many telemetry messages the hub has stored."""
        return len(self.hub.telemetry())

    async def clear_telemetry(self, command: dict[str, Any]) -> Any:
        """Forget the stored telemetry."""
        self.hub.clear_telemetry()
        return None

    async def wait_disconnected(self, command: dict[str, Any]) -> Any:
        """Wait until none of the first ``count`` devices is connected (bounded by ``timeout``)."""
        import anyio

        with anyio.move_on_after(float(command["timeout"])), contextlib.suppress(TimeoutError):
            for index in range(int(command["count"])):
                await self.hub.wait_disconnected(device_id(index), timeout=float(command["timeout"]))
        return None

    async def close(self) -> None:
        """Stop the emulator."""
        await self.stack.aclose()


if __name__ == "__main__":
    _worker_base.run(HubWorker, lambda: {"python": sys.version.split()[0]})
