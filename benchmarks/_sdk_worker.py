"""Benchmark worker holding official ``azure-iot-device`` 2.x async clients.

Runs under the peer virtual environment's interpreter (``.peer-venv``, where the SDK and its
``paho-mqtt<2`` live), so it imports nothing from ``aioiothub``. It answers the same commands as
``_aio_worker.py`` (see ``_worker_base`` for the wire format).

The SDK cannot be told a port: its MQTT transport always connects to 8883, so the benchmarks run
the broker there for this worker. It cannot be told an in-flight window either (paho's default of
20 unacknowledged messages applies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from importlib import metadata
from typing import Any

import _worker_base
from _worker_base import DEVICE_CLIENT_COMMANDS, ThreadSampler, WorkerBase, describe, process_status

PAYLOAD = {"temperature": 21.5, "humidity": 40}
"""The small JSON telemetry body every library sends."""


def _connection_string(hostname: str, device_id: str, key: str) -> str:
    return f"HostName={hostname};DeviceId={device_id};SharedAccessKey={key}"


class Worker(WorkerBase):
    """Holds the SDK clients of one benchmark run and answers its commands."""

    extra_commands = DEVICE_CLIENT_COMMANDS

    def __init__(self, sdk: Any) -> None:
        super().__init__()
        self.sdk = sdk
        self.client: Any = None
        self.c2d_latencies: list[float] = []
        self.many: list[Any] = []
        self.background_errors: list[str] = []

    def _message(self) -> Any:
        return self.sdk.Message(json.dumps(PAYLOAD), content_encoding="utf-8", content_type="application/json")

    def _create(self, command: dict[str, Any], device_id: str, key: str) -> Any:
        client = self.sdk.aio.IoTHubDeviceClient.create_from_connection_string(
            _connection_string(command["hostname"], device_id, key), server_verification_cert=command["ca_pem"]
        )

        def on_background_exception(error: Exception) -> None:
            self.background_errors.append(describe(error))

        client.on_background_exception = on_background_exception
        return client

    # -------------------------------------------------------- one connection

    async def connect(self, command: dict[str, Any]) -> Any:
        """Connect one client (``port`` must be 8883: the SDK has no way to use another)."""
        if int(command["port"]) != 8883:
            raise ValueError(f"azure-iot-device always connects to port 8883, not {command['port']}")
        client = self._create(command, command["device_id"], command["shared_access_key"])
        self.client = client
        await asyncio.wait_for(client.connect(), 60)
        for kind in command.get("handlers", []):
            # The setters block until the SUBSCRIBE is acknowledged.
            await asyncio.to_thread(self._install_handler, kind)
        return {"library": "azure-iot-device"}

    def _install_handler(self, kind: str) -> None:
        client = self.client
        if kind == "method":

            async def on_method(request: Any) -> None:
                response = self.sdk.MethodResponse.create_from_method_request(request, 200, {"ok": True})
                await client.send_method_response(response)

            client.on_method_request_received = on_method
        elif kind == "c2d":

            async def on_message(message: Any) -> None:
                arrived = time.perf_counter()
                body = json.loads(message.data)
                self.c2d_latencies.append(arrived - body["sent"])
                await client.send_message(json.dumps({"echo": body["index"]}))

            client.on_message_received = on_message
        else:
            raise ValueError(f"unknown handler kind {kind!r}")

    async def send_one(self) -> None:
        """One message; the SDK's ``send_message`` returns once it is acknowledged."""
        await self.client.send_message(self._message())

    async def twin_get(self, command: dict[str, Any]) -> Any:
        """Read the twin ``count`` times in a row; the seconds each took."""
        samples = []
        for _ in range(int(command["count"])):
            started = time.perf_counter()
            await asyncio.wait_for(self.client.get_twin(), 30)
            samples.append(time.perf_counter() - started)
        return {"samples": samples}

    async def patch_reported(self, command: dict[str, Any]) -> Any:
        """Send ``count`` reported-property patches in a row; the seconds each took."""
        samples = []
        for index in range(int(command["count"])):
            started = time.perf_counter()
            await asyncio.wait_for(self.client.patch_twin_reported_properties({"sequence": index}), 30)
            samples.append(time.perf_counter() - started)
        return {"samples": samples}

    async def c2d_samples(self, command: dict[str, Any]) -> Any:
        """The C2D delivery latencies measured so far (and forget them)."""
        samples, self.c2d_latencies = self.c2d_latencies, []
        return {"samples": samples}

    # ---------------------------------------------------------- many devices

    async def many_connect(self, command: dict[str, Any]) -> Any:
        """Connect one client per ``devices`` entry, ``connect_concurrency`` at a time.

        Stops starting new clients once the process has ``thread_cap`` threads: every SDK client
        owns threads, and running the machine out of process ids would take everything else on it
        down too.
        """
        devices: list[list[str]] = command["devices"]
        limit = asyncio.Semaphore(int(command["connect_concurrency"]))
        thread_cap = int(command["thread_cap"])
        connect_timeout = float(command["connect_timeout"])
        connected: list[Any] = []
        errors: list[str] = []
        stopped_at_cap: dict[str, int] = {}
        last_connected = 0.0

        async def one(device_id: str, key: str) -> None:
            nonlocal last_connected
            async with limit:
                if stopped_at_cap:
                    return
                threads = process_status()["threads"]
                if threads >= thread_cap:
                    stopped_at_cap.update(clients=len(connected), threads=threads)
                    return
                client = self._create(command, device_id, key)
                try:
                    await asyncio.wait_for(client.connect(), connect_timeout)
                except Exception as exc:
                    errors.append(describe(exc))
                    # A client left to retry in the background would skew every later figure.
                    asyncio.get_running_loop().create_task(self._shutdown_quietly(client))
                    return
                connected.append(client)
                last_connected = time.perf_counter()

        before = process_status()
        sampler = ThreadSampler()
        sampler.start()
        started = time.perf_counter()
        tasks = [asyncio.create_task(one(device_id, key)) for device_id, key in devices]
        _, pending = await asyncio.wait(tasks, timeout=float(command["phase_timeout"])) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        peak = await sampler.stop()
        self.many = list(connected)
        return {
            "requested": len(devices),
            "connected": len(connected),
            "failed": len(errors),
            "timed_out": bool(pending),
            "errors": sorted(set(errors))[:5],
            "stopped_at_thread_cap": stopped_at_cap or None,
            "background_errors": sorted(set(self.background_errors))[:5],
            "seconds": (last_connected or time.perf_counter()) - started,
            "before": before,
            "after": process_status(),
            "peak_threads": peak,
        }

    async def _shutdown_quietly(self, client: Any) -> None:
        try:
            await asyncio.wait_for(client.shutdown(), 30)
        except Exception as exc:
            self.background_errors.append(f"shutdown after a failed connect: {describe(exc)}")

    async def many_telemetry(self, command: dict[str, Any]) -> Any:
        """Every connected client sends ``messages`` messages in a row, then reads its twin; all at once."""
        messages = int(command["messages"])
        sent = twins = 0
        errors: list[str] = []

        async def device(client: Any) -> None:
            nonlocal sent, twins
            try:
                for _ in range(messages):
                    await client.send_message(self._message())
                    sent += 1
                await asyncio.wait_for(client.get_twin(), 30)
                twins += 1
            except Exception as exc:
                errors.append(describe(exc))

        sampler = ThreadSampler()
        sampler.start()
        started = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(
                asyncio.gather(*(device(client) for client in self.many)), float(command["phase_timeout"])
            )
        except TimeoutError:
            timed_out = True
        seconds = time.perf_counter() - started
        return {
            "sent": sent,
            "twins": twins,
            "failed": len(errors),
            "errors": sorted(set(errors))[:5],
            "timed_out": timed_out,
            "seconds": seconds,
            "peak_threads": await sampler.stop(),
            "after": process_status(),
            "background_errors": sorted(set(self.background_errors))[:5],
        }

    async def many_close(self, command: dict[str, Any]) -> Any:
        """Shut every client down; the seconds it took."""
        started = time.perf_counter()
        clients, self.many = self.many, []
        tasks = [asyncio.create_task(client.shutdown()) for client in clients]
        done, pending = await asyncio.wait(tasks, timeout=float(command["phase_timeout"])) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        return {"seconds": time.perf_counter() - started, "closed": len(done), "abandoned": len(pending)}

    # --------------------------------------------------------------- the end

    async def close(self) -> None:
        """Shut the clients down (bounded: a stuck SDK must not keep the worker alive)."""
        if self.client is not None:
            client, self.client = self.client, None
            try:
                await asyncio.wait_for(client.shutdown(), 20)
            except Exception as exc:
                print(f"shutdown failed: {describe(exc)}", file=sys.stderr)
        if self.many:
            await self.many_close({"phase_timeout": 60})


def _make_worker() -> Worker:
    # Imported only now, after stdout has been claimed.
    import azure.iot.device.aio  # type: ignore[import-not-found]  # lives in the peer venv only

    return Worker(azure.iot.device)


def _hello() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "azure-iot-device": metadata.version("azure-iot-device"),
        "paho-mqtt": metadata.version("paho-mqtt"),
        "threads_at_start": threading.active_count(),
    }


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _worker_base.run(_make_worker, _hello)
