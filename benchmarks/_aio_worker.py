"""Benchmark worker holding ``aioiothub`` clients (or, for the baseline, raw ``aiomqtt`` clients).

Started by the benchmarks as ``python _aio_worker.py`` with the project's interpreter and driven over
JSON lines (see ``_worker_base``). ``_sdk_worker.py`` answers the same commands with the official
``azure-iot-device`` SDK, so the benchmarks drive both the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import _worker_base
from _worker_base import ThreadSampler, describe, process_status

# The worker is started as a script from benchmarks/; the package lives one level up.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

PAYLOAD = {"temperature": 21.5, "humidity": 40}
"""The small JSON telemetry body every library sends."""


def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Worker:
    """Holds the clients of one benchmark run and answers its commands."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.library = ""
        self.client: Any = None
        self.raw_topic = ""
        self.background: list[asyncio.Task[None]] = []
        self.c2d_latencies: list[float] = []
        self.many: list[Any] = []
        self.many_tasks: list[asyncio.Task[None]] = []
        self.many_stop = asyncio.Event()
        self.commands: dict[str, _worker_base.Handler] = {
            "status": self.status,
            "limits": self.limits,
            "connect": self.connect,
            "telemetry": self.telemetry,
            "twin_get": self.twin_get,
            "patch_reported": self.patch_reported,
            "c2d_samples": self.c2d_samples,
            "many_connect": self.many_connect,
            "many_telemetry": self.many_telemetry,
            "many_close": self.many_close,
            "shutdown": self.shutdown,
        }

    # ----------------------------------------------------------------- process

    async def status(self, command: dict[str, Any]) -> Any:
        """RSS and thread count of this process."""
        return process_status()

    async def limits(self, command: dict[str, Any]) -> Any:
        """Raise the open-files limit for ``connections`` sockets."""
        return _worker_base.raise_open_files_limit(int(command["needed"]))

    # -------------------------------------------------------- one connection

    async def connect(self, command: dict[str, Any]) -> Any:
        """Connect one client: ``library`` is ``"aioiothub"`` or ``"aiomqtt"``."""
        self.library = command["library"]
        context = _ssl_context(command["ca_pem"])
        device_id = command["device_id"]
        window = int(command.get("window", 128))
        if self.library == "aioiothub":
            import aioiothub

            self.client = await self.stack.enter_async_context(
                aioiothub.IoTHubDeviceClient(
                    hostname=command["hostname"],
                    device_id=device_id,
                    shared_access_key=command["shared_access_key"],
                    port=int(command["port"]),
                    ssl_context=context,
                    max_in_flight=window,
                )
            )
            handlers = command.get("handlers", [])
            if "method" in handlers:
                self.background.append(asyncio.create_task(self._answer_methods()))
            if "c2d" in handlers:
                self.background.append(asyncio.create_task(self._receive_c2d()))
        elif self.library == "aiomqtt":
            import aiomqtt

            from aioiothub import Message, generate_sas_token
            from aioiothub.protocol.connect import username
            from aioiothub.protocol.sas import device_resource_uri
            from aioiothub.protocol.topics import telemetry_topic

            hostname = command["hostname"]
            token = generate_sas_token(
                device_resource_uri(hostname, device_id), command["shared_access_key"], int(time.time()) + 3600
            )
            self.client = await self.stack.enter_async_context(
                aiomqtt.Client(
                    hostname,
                    int(command["port"]),
                    identifier=device_id,
                    username=username(hostname, device_id),
                    password=token,
                    tls_context=context,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                    max_inflight_messages=window,
                )
            )
            # The same topic aioiothub builds for a dict body: content type and encoding in the bag.
            self.raw_topic = telemetry_topic(device_id, None, Message.json(PAYLOAD).wire_properties())
        else:
            raise ValueError(f"unknown library {self.library!r}")
        return {"library": self.library}

    async def _answer_methods(self) -> None:
        async for request in self.client.method_requests():
            await request.respond(200, {"ok": True})

    async def _receive_c2d(self) -> None:
        async for message in self.client.cloud_messages():
            arrived = time.perf_counter()
            body = json.loads(message.body)
            self.c2d_latencies.append(arrived - body["sent"])
            await self.client.send_message({"echo": body["index"]})

    async def _send_one(self) -> None:
        if self.library == "aioiothub":
            await self.client.send_message(PAYLOAD)
        else:
            await self.client.publish(self.raw_topic, json.dumps(PAYLOAD).encode(), qos=1)

    async def telemetry(self, command: dict[str, Any]) -> Any:
        """Send ``count`` QoS 1 messages from ``concurrency`` tasks; the time until the last PUBACK."""
        count, concurrency = int(command["count"]), int(command["concurrency"])
        shares = [count // concurrency + (1 if index < count % concurrency else 0) for index in range(concurrency)]

        async def sender(share: int) -> None:
            for _ in range(share):
                await self._send_one()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(sender(share) for share in shares)), float(command["timeout"]))
        return {"seconds": time.perf_counter() - started, "sent": count}

    async def twin_get(self, command: dict[str, Any]) -> Any:
        """Read the twin ``count`` times in a row; the seconds each took."""
        samples = []
        for _ in range(int(command["count"])):
            started = time.perf_counter()
            await self.client.get_twin()
            samples.append(time.perf_counter() - started)
        return {"samples": samples}

    async def patch_reported(self, command: dict[str, Any]) -> Any:
        """Send ``count`` reported-property patches in a row; the seconds each took."""
        samples = []
        for index in range(int(command["count"])):
            started = time.perf_counter()
            await self.client.update_reported_properties({"sequence": index})
            samples.append(time.perf_counter() - started)
        return {"samples": samples}

    async def c2d_samples(self, command: dict[str, Any]) -> Any:
        """The C2D delivery latencies measured so far (and forget them)."""
        samples, self.c2d_latencies = self.c2d_latencies, []
        return {"samples": samples}

    # ---------------------------------------------------------- many devices

    async def many_connect(self, command: dict[str, Any]) -> Any:
        """Connect one client per ``devices`` entry, ``connect_concurrency`` handshakes at a time."""
        import aioiothub

        context = _ssl_context(command["ca_pem"])
        devices: list[list[str]] = command["devices"]
        limit = asyncio.Semaphore(int(command["connect_concurrency"]))
        connected: list[Any] = []
        errors: list[str] = []
        finished = asyncio.Event()
        last_connected = 0.0

        def settle() -> None:
            if len(connected) + len(errors) == len(devices):
                finished.set()

        async def hold(device_id: str, key: str) -> None:
            nonlocal last_connected
            client = aioiothub.IoTHubDeviceClient(
                hostname=command["hostname"],
                device_id=device_id,
                shared_access_key=key,
                port=int(command["port"]),
                ssl_context=context,
                request_timeout=float(command["connect_timeout"]),
            )
            holding = False
            await limit.acquire()
            try:
                async with client:
                    limit.release()
                    holding = True
                    connected.append(client)
                    last_connected = time.perf_counter()
                    settle()
                    await self.many_stop.wait()
            except Exception as exc:
                if not holding:
                    errors.append(describe(exc))
                    settle()
            finally:
                if not holding:
                    limit.release()

        before = process_status()
        sampler = ThreadSampler()
        sampler.start()
        started = time.perf_counter()
        self.many_tasks = [asyncio.create_task(hold(device_id, key)) for device_id, key in devices]
        if not devices:
            finished.set()
        timed_out = False
        try:
            await asyncio.wait_for(finished.wait(), float(command["phase_timeout"]))
        except TimeoutError:
            timed_out = True
        peak = await sampler.stop()
        self.many = list(connected)
        return {
            "requested": len(devices),
            "connected": len(connected),
            "failed": len(errors),
            "timed_out": timed_out,
            "errors": sorted(set(errors))[:5],
            "seconds": (last_connected or time.perf_counter()) - started,
            "before": before,
            "after": process_status(),
            "peak_threads": peak,
        }

    async def many_telemetry(self, command: dict[str, Any]) -> Any:
        """Every connected client sends ``messages`` QoS 1 messages in a row, all clients at once."""
        messages = int(command["messages"])
        sent = 0
        errors: list[str] = []

        async def device(client: Any) -> None:
            nonlocal sent
            try:
                for _ in range(messages):
                    await client.send_message(PAYLOAD)
                    sent += 1
            except Exception as exc:
                errors.append(describe(exc))

        sampler = ThreadSampler()
        sampler.start()
        started = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(*(device(client) for client in self.many)), command["phase_timeout"])
        except TimeoutError:
            timed_out = True
        seconds = time.perf_counter() - started
        return {
            "sent": sent,
            "failed": len(errors),
            "errors": sorted(set(errors))[:5],
            "timed_out": timed_out,
            "seconds": seconds,
            "peak_threads": await sampler.stop(),
            "after": process_status(),
        }

    async def many_close(self, command: dict[str, Any]) -> Any:
        """Disconnect every client; the seconds it took."""
        started = time.perf_counter()
        self.many_stop.set()
        tasks, self.many_tasks = self.many_tasks, []
        done, pending = await asyncio.wait(tasks, timeout=float(command["phase_timeout"])) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        self.many = []
        return {"seconds": time.perf_counter() - started, "closed": len(done), "abandoned": len(pending)}

    # --------------------------------------------------------------- the end

    async def shutdown(self, command: dict[str, Any]) -> Any:
        """Close everything."""
        await self.close()
        return None

    async def close(self) -> None:
        """Cancel background tasks, then close the clients."""
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background = []
        if self.many_tasks:
            await self.many_close({"phase_timeout": 60})
        await self.stack.aclose()


async def _main(channel: Any) -> None:
    worker = Worker()
    import aiomqtt  # noqa: F401 - imported up front so that import time is not measured

    import aioiothub

    hello = {"python": sys.version.split()[0], "aioiothub": aioiothub.__version__}
    await _worker_base.serve(worker.commands, channel, hello, worker.close)


if __name__ == "__main__":
    asyncio.run(_main(_worker_base.claim_stdout()))
