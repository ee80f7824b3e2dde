"""Chaos: a device under load while the hub drops it, refuses it, delays it and throttles it.

One device sends QoS 1 messages with a wide in-flight window and reads and patches its twin, while
a seeded chaos task drops the connection at random, refuses reconnects, delays PUBACKs, answers
twin operations with 429 or 503, and changes desired properties. The scenario holds when:

* every message whose ``send_message`` returned reached the hub (at-least-once), and duplicates
  number at most one in-flight window per drop;
* every await finished -- returned or raised -- within its deadline;
* the desired document the application built from its patches equals the hub's, and no patch
  carried a ``$version`` at or below one delivered before it (desired changes come in bursts, so
  notifications race the resync readings after drops).

Used by ``tests/reliability/test_chaos.py`` (small) and ``benchmarks/soak.py`` (large).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol import topics
from aioiothub.protocol.twin import merge_patch

__all__ = ["ChaosReport", "run_chaos"]

REQUEST_TIMEOUT = 20.0
# An await may end a little after its deadline: the event loop has to run the timer.
_SLACK = 2.0


@dataclass
class ChaosReport:
    """What happened during one run."""

    events: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    failed_sends: Counter[str] = field(default_factory=Counter)
    arrived: int = 0
    duplicates: int = 0
    twin_operations: Counter[str] = field(default_factory=Counter)
    longest_await: dict[str, float] = field(default_factory=dict)
    desired_versions_seen: int = 0
    desired_backward_steps: int = 0
    desired_matches: bool = False
    seconds: float = 0.0

    @property
    def longest(self) -> float:
        """The longest any await took."""
        return max(self.longest_await.values(), default=0.0)

    @property
    def slowest(self) -> str:
        """Which kind of await took longest."""
        return max(self.longest_await, key=self.longest_await.__getitem__, default="none")

    def summary(self) -> str:
        events = ", ".join(f"{name} {count}" for name, count in sorted(self.events.items()))
        twin = ", ".join(f"{name} {count}" for name, count in sorted(self.twin_operations.items()))
        failed = ", ".join(f"{name} {count}" for name, count in sorted(self.failed_sends.items())) or "none"
        return (
            f"{self.sent:,} sends acknowledged in {self.seconds:.1f} s, {self.arrived:,} distinct messages at the "
            f"hub, {self.duplicates:,} duplicates; failed sends: {failed}; chaos: {events}; twin: {twin}; "
            f"longest await {self.longest:.2f} s ({self.slowest}); desired patches {self.desired_versions_seen} "
            f"({self.desired_backward_steps} out of order), final document "
            f"{'matches' if self.desired_matches else 'DIFFERS'}"
        )


def _document(section: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in section.items() if not key.startswith("$")}


async def _chaos(hub: Emulator, device_id: str, rng: random.Random, report: ChaosReport, stop: anyio.Event) -> None:
    while not stop.is_set():
        await anyio.sleep(rng.uniform(0.05, 0.4))
        roll = rng.random()
        if roll < 0.25:
            hub.drop_connection(device_id)
            report.events["drop"] += 1
        elif roll < 0.35:
            hub.refuse_connects(rng.randint(1, 3))
            hub.drop_connection(device_id)
            report.events["drop with refused reconnects"] += 1
        elif roll < 0.5:
            hub.delay_pubacks(rng.uniform(0.05, 0.3))
            await anyio.sleep(rng.uniform(0.1, 0.5))
            hub.delay_pubacks(0)
            report.events["delayed pubacks"] += 1
        elif roll < 0.65:
            hub.fail_twin_operations(rng.randint(1, 3), rng.choice([429, 503]))
            report.events["twin throttled"] += 1
        else:
            await hub.update_desired(device_id, {"setting": rng.randint(0, 1000), f"key{rng.randint(0, 5)}": None})
            report.events["desired change"] += 1
    hub.delay_pubacks(0)


async def _desired_bursts(hub: Emulator, device_id: str, rng: random.Random, stop: anyio.Event) -> None:
    """The back end writes desired properties in bursts, so notifications race the resyncs after drops."""
    # From the first subscription on, every change is notified or covered by a resync reading.
    await hub.wait_subscribed(device_id, topics.TWIN_DESIRED_SUBSCRIPTION, timeout=REQUEST_TIMEOUT)
    while not stop.is_set():
        await anyio.sleep(rng.uniform(0.005, 0.04))
        for _ in range(rng.randint(1, 6)):
            patch = {"burst": rng.randint(0, 1000), f"key{rng.randint(0, 5)}": rng.random()}
            await hub.update_desired(device_id, patch)


async def run_chaos(
    hub: Emulator,
    *,
    messages: int,
    in_flight: int = 200,
    seed: int = 1,
    transport: str = "aiomqtt",
    min_drops: int = 0,
) -> ChaosReport:
    """Send ``messages`` messages through seeded chaos; return what happened.

    With ``min_drops``, the chaos (and the desired bursts) go on after the last send until the
    connection was dropped that many times.
    """
    rng = random.Random(seed)
    device = hub.add_device(f"chaos-{os.urandom(3).hex()}")
    report = ChaosReport()
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string,
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
        transport=transport,
        max_in_flight=in_flight,
        # Small, so that the desired consumer also falls behind now and then.
        inbound_buffer_size=4,
        request_timeout=REQUEST_TIMEOUT,
        reconnect=aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.5),
    )
    desired: dict[str, Any] = {}
    # The application's document starts from the twin the first patch is a change of.
    desired_version = hub.twin(device.device_id)["desired"]["$version"]
    consumer_rng = random.Random(rng.getrandbits(64))
    stop = anyio.Event()
    started = time.perf_counter()

    def timed(kind: str, began: float) -> None:
        report.longest_await[kind] = max(report.longest_await.get(kind, 0.0), time.perf_counter() - began)

    async with client, anyio.create_task_group() as background:

        async def follow_desired() -> None:
            nonlocal desired, desired_version
            async for patch in client.desired_property_patches():
                if patch["$version"] <= desired_version:
                    report.desired_backward_steps += 1
                desired = merge_patch(desired, _document(patch))
                desired_version = patch["$version"]
                report.desired_versions_seen += 1
                if consumer_rng.random() < 0.3:  # now and then the application falls behind
                    await anyio.sleep(consumer_rng.uniform(0.005, 0.03))

        async def twin_traffic() -> None:
            while not stop.is_set():
                began = time.perf_counter()
                kind = "twin read" if rng.random() < 0.5 else "twin patch"
                try:
                    if kind == "twin read":
                        await client.get_twin()
                    else:
                        await client.update_reported_properties({"progress": report.sent})
                    report.twin_operations["ok"] += 1
                except aioiothub.ServiceError as exc:
                    report.twin_operations[f"refused {exc.status}"] += 1
                except TimeoutError:
                    report.twin_operations["timed out"] += 1
                timed(kind, began)
                await anyio.sleep(0.02)

        background.start_soon(follow_desired)
        background.start_soon(twin_traffic)
        background.start_soon(_chaos, hub, device.device_id, random.Random(rng.getrandbits(64)), report, stop)
        background.start_soon(_desired_bursts, hub, device.device_id, random.Random(rng.getrandbits(64)), stop)

        acknowledged: list[int] = []
        indexes = iter(range(messages))

        async def sender() -> None:
            # As a busy application sends: each worker one message after another.
            for index in indexes:
                began = time.perf_counter()
                try:
                    await client.send_message({"index": index})
                except (TimeoutError, aioiothub.IoTHubError) as exc:
                    report.failed_sends[type(exc).__name__] += 1
                else:
                    acknowledged.append(index)
                timed("send", began)

        async with anyio.create_task_group() as senders:
            for _ in range(in_flight):
                senders.start_soon(sender)
        with anyio.move_on_after(REQUEST_TIMEOUT):
            while report.events["drop"] + report.events["drop with refused reconnects"] < min_drops:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        stop.set()
        report.sent = len(acknowledged)
        # Let the application catch up with the hub's last desired change, then compare.
        await client.wait_connected()
        final_version = hub.twin(device.device_id)["desired"]["$version"]
        with anyio.move_on_after(REQUEST_TIMEOUT):
            while desired_version < final_version:  # noqa: ASYNC110 - the consumer task sets it
                await anyio.sleep(0.05)
        report.desired_matches = desired == _document(hub.twin(device.device_id)["desired"])
        background.cancel_scope.cancel()
    report.seconds = time.perf_counter() - started
    counts = Counter(record.json()["index"] for record in hub.telemetry(device.device_id))
    report.arrived = sum(1 for index in acknowledged if counts[index] > 0)
    report.duplicates = sum(count - 1 for count in counts.values())
    return report


def deadline_bound() -> float:
    """The longest any await may take in a run: its deadline plus scheduling slack."""
    return REQUEST_TIMEOUT + _SLACK
