"""What the outbox tests share: an emulator that can be stopped and started again on its port, and clients."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc

import aioiothub
from aioiothub.emulator import Emulator

#: Fast reconnects, so that a test waits for the hub's return, not for the back-off.
FAST_RECONNECT = aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.2, jitter=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RestartableHub:
    """An emulator on a fixed port that keeps its identities and telemetry while it is stopped."""

    def __init__(self) -> None:
        self.port = free_port()
        self.emulator = Emulator(port=self.port, websocket_port=None)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def start(self) -> None:
        """Serve again (in a task of its own, so that the test's clients nest in no emulator scope)."""
        assert self._tasks is not None, "use 'async with hub.running():'"
        with anyio.fail_after(10):
            while True:
                try:
                    await self._tasks.start(self._serve)
                    return
                except OSError:  # the port is still held by the last run's closing sockets
                    await anyio.sleep(0.05)

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        try:
            async with self.emulator:
                task_status.started()
                await self._stop.wait()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop serving: every connection is closed, the port is free; identities and telemetry stay."""
        self._stop.set()
        await self._stopped.wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RestartableHub]:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            await self.start()
            try:
                yield self
            finally:
                await self.stop()
                self._tasks = None

    @contextlib.asynccontextmanager
    async def stopped(self) -> AsyncIterator[None]:
        await self.stop()
        try:
            yield
        finally:
            await self.start()

    def client(self, device_id: str, outbox: Any, **options: Any) -> aioiothub.IoTHubDeviceClient:
        options.setdefault("reconnect", FAST_RECONNECT)
        options.setdefault("request_timeout", 1.0)
        return aioiothub.IoTHubDeviceClient.from_connection_string(
            self.emulator.identity(device_id).connection_string,
            port=self.port,
            ssl_context=self.emulator.client_ssl_context(),
            outbox=outbox,
            **options,
        )

    def bodies(self, device_id: str) -> list[Any]:
        return [json.loads(record.body) for record in self.emulator.telemetry(device_id)]
