"""Benchmark worker for the asyncio libraries: aioiothub (either transport), raw aiomqtt, gmqtt, raw asyncio.

Started by the benchmarks as ``python _aio_worker.py [--loop uvloop]`` with the project's interpreter
and driven over JSON lines (see ``_worker_base``). ``_sdk_worker.py`` answers the same commands with
the official ``azure-iot-device`` SDK, so the benchmarks drive both the same way.

What ``connect`` builds, by its ``library`` argument:

* ``aioiothub``: an ``IoTHubDeviceClient`` with ``transport=`` (``aiomqtt`` or ``native``);
* ``aiomqtt``: a raw ``aiomqtt.Client`` (MQTT 3.1.1, the same in-flight window), ``publish`` at QoS 1;
* ``gmqtt``: a ``gmqtt.Client`` in MQTT 3.1.1 mode; each QoS 1 publish awaits its PUBACK;
* ``raw``: the machine's limit, an ``asyncio.Protocol`` on asyncio's TLS transport with pre-encoded
  packets (only the packet identifier changes), PUBACKs matched by identifier, and one socket write
  per event-loop turn.
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
from _worker_base import DEVICE_CLIENT_COMMANDS, ThreadSampler, WorkerBase, describe, process_status

# The worker is started as a script from benchmarks/; the package lives one level up.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

PAYLOAD = {"temperature": 21.5, "humidity": 40}
"""The small JSON telemetry body every library sends."""


def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _transport_option(transport: str) -> dict[str, Any]:
    """The keyword that selects ``transport`` on the client."""
    return {"transport": transport}


def _token(hostname: str, device_id: str, key: str) -> str:
    from aioiothub import generate_sas_token
    from aioiothub.protocol.sas import device_resource_uri

    return generate_sas_token(device_resource_uri(hostname, device_id), key, int(time.time()) + 3600)


def _raw_topic(device_id: str) -> str:
    """The topic aioiothub builds for a dict body: content type and encoding in the property bag."""
    from aioiothub import Message
    from aioiothub.protocol.topics import telemetry_topic

    return telemetry_topic(device_id, None, Message.json(PAYLOAD).wire_properties())


class GmqttPublisher:
    """QoS 1 publishes on a gmqtt client that complete on their PUBACK.

    gmqtt has no acknowledgement callback: it stores each QoS 1 packet under its packet id until the
    PUBACK removes it, so the store's two calls are where a future is attached and resolved.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pending: dict[int, asyncio.Future[None]] = {}
        self._next: asyncio.Future[None] | None = None
        storage = client._persistent_storage
        push, remove = storage.push_message, storage.remove_message_by_mid

        def push_message(mid: int, package: Any) -> Any:
            assert self._next is not None
            self.pending[mid] = self._next
            return push(mid, package)

        def remove_message_by_mid(mid: int) -> Any:
            future = self.pending.pop(mid, None)
            if future is not None and not future.done():
                future.set_result(None)
            return remove(mid)

        storage.push_message, storage.remove_message_by_mid = push_message, remove_message_by_mid

    async def publish(self, topic: str, payload: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._next = future
        self.client.publish(topic, payload, qos=1)
        await future


class RawClient(asyncio.Protocol):
    """The limit row: hand-encoded QoS 1 publishes, one write per loop turn, PUBACKs matched by id."""

    def __init__(self, topic: str, payload: bytes) -> None:
        from aioiothub.protocol.mqtt import encode_publish

        packet = encode_publish(topic, payload, 1, 1)
        self._head, self._tail = packet[: len(packet) - len(payload) - 2], payload
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.connack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._outbox: list[bytes] = []
        self._next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        if not self.connack.done():
            self.connack.set_result(buffer[:4])
            buffer = buffer[4:]
        end = len(buffer) - len(buffer) % 4
        pending = self.pending
        for offset in range(0, end, 4):  # only PUBACKs come after CONNACK
            future = pending.pop((buffer[offset + 2] << 8) | buffer[offset + 3], None)
            if future is not None:
                future.set_result(None)
        self._buffer = buffer[end:]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("lost"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, packet: bytes) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(packet)

    def _flush(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self._outbox))
        self._outbox.clear()

    async def publish(self) -> None:
        packet_id = self._next_id
        self._next_id = packet_id % 65535 + 1
        future = asyncio.get_running_loop().create_future()
        self.pending[packet_id] = future
        self.write(b"".join((self._head, packet_id.to_bytes(2, "big"), self._tail)))
        await future


class Worker(WorkerBase):
    """Holds the clients of one benchmark run and answers its commands."""

    extra_commands = (*DEVICE_CLIENT_COMMANDS, "many_send")

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.AsyncExitStack()
        self.library = ""
        self.client: Any = None
        self.raw_topic = ""
        self.raw_payload = b""
        self.background: list[asyncio.Task[None]] = []
        self.c2d_latencies: list[float] = []
        self.many: list[Any] = []
        self.many_tasks: list[asyncio.Task[None]] = []
        self.many_stop = asyncio.Event()

    # -------------------------------------------------------- one connection

    async def connect(self, command: dict[str, Any]) -> Any:
        """Connect one client of ``library`` (see the module docstring)."""
        self.library = command["library"]
        context = _ssl_context(command["ca_pem"])
        hostname, port, device_id = command["hostname"], int(command["port"]), command["device_id"]
        window = int(command.get("window", 128))
        self.raw_topic, self.raw_payload = _raw_topic(device_id), json.dumps(PAYLOAD).encode()
        if self.library == "aioiothub":
            import aioiothub

            self.client = await self.stack.enter_async_context(
                aioiothub.IoTHubDeviceClient(
                    hostname=hostname,
                    device_id=device_id,
                    shared_access_key=command["shared_access_key"],
                    port=port,
                    ssl_context=context,
                    max_in_flight=window,
                    **_transport_option(command.get("transport", "aiomqtt")),
                )
            )
            handlers = command.get("handlers", [])
            if "method" in handlers:
                self.background.append(asyncio.create_task(self._answer_methods()))
            if "c2d" in handlers:
                self.background.append(asyncio.create_task(self._receive_c2d()))
        elif self.library == "aiomqtt":
            import aiomqtt

            from aioiothub.protocol.connect import username

            self.client = await self.stack.enter_async_context(
                aiomqtt.Client(
                    hostname,
                    port,
                    identifier=device_id,
                    username=username(hostname, device_id),
                    password=_token(hostname, device_id, command["shared_access_key"]),
                    tls_context=context,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                    max_inflight_messages=window,
                )
            )
        elif self.library == "gmqtt":
            import gmqtt
            from gmqtt.mqtt.constants import MQTTv311

            from aioiothub.protocol.connect import username

            client = gmqtt.Client(device_id, clean_session=False)
            client.set_auth_credentials(
                username(hostname, device_id), _token(hostname, device_id, command["shared_access_key"])
            )
            await client.connect(hostname, port, ssl=context, keepalive=60, version=MQTTv311)
            self.stack.push_async_callback(client.disconnect)
            self.client = GmqttPublisher(client)
        elif self.library == "raw":
            from aioiothub.protocol.connect import username
            from aioiothub.protocol.mqtt import encode_connect

            loop = asyncio.get_running_loop()
            _, raw = await loop.create_connection(
                lambda: RawClient(self.raw_topic, self.raw_payload), hostname, port, ssl=context
            )
            self.stack.callback(raw.close)
            token = _token(hostname, device_id, command["shared_access_key"])
            raw.write(encode_connect(device_id, username(hostname, device_id), token, 60, False))
            connack = await asyncio.wait_for(raw.connack, 30)
            if connack[:2] != b"\x20\x02" or connack[3] != 0:
                raise ConnectionError(f"the broker refused the connection: {connack!r}")
            self.client = raw
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

    async def send_one(self) -> None:
        """One QoS 1 message, the same small JSON body (encoded per message) for every library."""
        library = self.library
        if library == "aioiothub":
            await self.client.send_message(PAYLOAD)
        elif library == "aiomqtt":
            await self.client.publish(self.raw_topic, json.dumps(PAYLOAD).encode(), qos=1)
        elif library == "gmqtt":
            await self.client.publish(self.raw_topic, json.dumps(PAYLOAD).encode())
        else:
            await self.client.publish()

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
        transport = _transport_option(command.get("transport", "aiomqtt"))
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
                **transport,
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
        """Every connected client sends ``messages`` QoS 1 messages in a row, then reads its twin; all at once."""
        messages = int(command["messages"])
        sent = twins = 0
        errors: list[str] = []

        async def device(client: Any) -> None:
            nonlocal sent, twins
            try:
                for _ in range(messages):
                    await client.send_message(PAYLOAD)
                    sent += 1
                await client.get_twin()
                twins += 1
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
            "twins": twins,
            "failed": len(errors),
            "errors": sorted(set(errors))[:5],
            "timed_out": timed_out,
            "seconds": seconds,
            "peak_threads": await sampler.stop(),
            "after": process_status(),
        }

    async def many_send(self, command: dict[str, Any]) -> Any:
        """Every connected client sends ``count`` messages from ``concurrency`` tasks of its own, all at once.

        The time until the last acknowledgement, this process's CPU seconds meanwhile, and
        ``time.monotonic()`` when the sending began (the system-wide clock on Linux, for a reader in
        another process to measure against).
        """
        count, concurrency = int(command["count"]), int(command["concurrency"])
        shares = [count // concurrency + (1 if index < count % concurrency else 0) for index in range(concurrency)]

        async def sender(client: Any, share: int) -> None:
            for _ in range(share):
                await client.send_message(PAYLOAD)

        began, started, cpu = time.monotonic(), time.perf_counter(), time.process_time()
        senders = (sender(client, share) for client in self.many for share in shares)
        await asyncio.wait_for(asyncio.gather(*senders), float(command["timeout"]))
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "cpu": time.process_time() - cpu, "began": began, "sent": count * len(self.many)}

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

    async def close(self) -> None:
        """Cancel background tasks, then close the clients."""
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background = []
        if self.many_tasks:
            await self.many_close({"phase_timeout": 60})
        await self.stack.aclose()


def _hello() -> dict[str, Any]:
    # Imported up front so that import time is not measured.
    import aiomqtt  # noqa: F401

    import aioiothub

    versions = {"python": sys.version.split()[0], "aioiothub": aioiothub.__version__}
    with contextlib.suppress(ImportError):
        import gmqtt

        versions["gmqtt"] = gmqtt.__version__
    return versions


if __name__ == "__main__":
    _worker_base.run(Worker, _hello)
