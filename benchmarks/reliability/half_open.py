"""Half-open links: the path to the hub goes silent without a FIN or RST, then comes back.

A TCP relay on loopback sits between the device and the hub. Cutting it keeps every socket open
but black-holes the bytes both ways -- what a NAT that forgot the connection or a pulled cable
does -- so only the client's own liveness rule can notice. The scenario measures how long that
takes, restores the link, and checks that everything sent before and during the outage reached
the hub. Used by ``tests/reliability/test_half_open.py`` and ``benchmarks/soak.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import anyio
import anyio.abc

import aioiothub
from aioiothub.emulator import Emulator

__all__ = ["HalfOpenReport", "Relay", "run_half_open"]


class Relay:
    """Forwards TCP connections to ``127.0.0.1:target``; :meth:`cut` silences them all without closing."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.forwarding = True
        self.connections = 0

    def cut(self) -> None:
        """From now on, bytes in either direction are dropped (connections stay open)."""
        self.forwarding = False

    def restore(self) -> None:
        """New connections are forwarded again (the silenced ones stay silent, as after a real outage)."""
        self.forwarding = True

    async def _pump(self, source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, live: list[bool]) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            while True:
                data = await source.receive()
                live[0] = live[0] and self.forwarding
                if live[0]:
                    await sink.send(data)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await sink.send_eof()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            if not self.forwarding:
                # Accepted but never answered: a connect attempt into the black hole.
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    while True:
                        await client.receive()
            upstream = await anyio.connect_tcp("127.0.0.1", self.target)
            live = [True]
            async with upstream, anyio.create_task_group() as pumps:
                pumps.start_soon(self._pump, client, upstream, live)
                pumps.start_soon(self._pump, upstream, client, live)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until cancelled."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._handle)


@dataclass
class HalfOpenReport:
    """Detection times and what arrived."""

    keepalive: int = 0
    detections: list[float] = field(default_factory=list)
    sent: int = 0
    arrived: int = 0
    failed: int = 0

    def summary(self) -> str:
        times = ", ".join(f"{seconds:.2f}" for seconds in self.detections)
        return (
            f"{len(self.detections)} silent cuts with keep-alive {self.keepalive} s: detected after {times} s "
            f"(limit {1.5 * self.keepalive:.1f} s); {self.sent} messages sent, {self.arrived} arrived, "
            f"{self.failed} failed"
        )


async def run_half_open(
    hub: Emulator, *, cuts: int = 2, keepalive: int = 2, transport: str = "aiomqtt"
) -> HalfOpenReport:
    """Cut the link ``cuts`` times while the device sends; restore it once the client noticed."""
    device = hub.add_device(f"half-open-{os.urandom(3).hex()}")
    relay = Relay(hub.port)
    report = HalfOpenReport(keepalive=keepalive)
    async with anyio.create_task_group() as tasks:
        await tasks.start(relay.serve)
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string,
            port=relay.port,
            ssl_context=hub.client_ssl_context(),
            transport=transport,
            keepalive=keepalive,
            liveness_timeout=keepalive,
            request_timeout=6 * keepalive + 5,
            reconnect=aioiothub.ReconnectPolicy(initial_delay=0.2, max_delay=1.0),
        )
        async with client, anyio.create_task_group() as senders:
            states = client.connection_states()
            assert await anext(states) is True  # the state now; after it, only changes

            async def send(index: int) -> None:
                try:
                    await client.send_message({"index": index})
                except (TimeoutError, aioiothub.IoTHubError):
                    report.failed += 1
                else:
                    report.sent += 1

            index = 0
            for _ in range(cuts):
                for _ in range(20):
                    senders.start_soon(send, index)
                    index += 1
                    await anyio.sleep(0.01)
                relay.cut()
                cut_at = time.perf_counter()
                for _ in range(10):  # queued during the outage
                    senders.start_soon(send, index)
                    index += 1
                with anyio.fail_after(10 * keepalive):
                    assert await anext(states) is False
                report.detections.append(time.perf_counter() - cut_at)
                relay.restore()
                with anyio.fail_after(10 * keepalive):
                    assert await anext(states) is True
        tasks.cancel_scope.cancel()
    report.arrived = len({record.json()["index"] for record in hub.telemetry(device.device_id)})
    return report
