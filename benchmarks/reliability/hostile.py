"""Hostile connections against the emulator while a well-behaved device keeps working.

Each attack opens its own connection and does one wrong thing: random bytes, a truncated or
oversize packet, garbage in place of a TLS handshake, a forged, expired or wrong-scope token, another
device's topics, QoS 2, a ``#`` subscription, deeply nested JSON. Meanwhile one honest device sends
QoS 1 telemetry and reads its twin. The scenario holds when every message whose ``send_message``
returned reached the hub, the honest device never lost its connection, and the hub still accepts
new devices afterwards. Used by ``tests/reliability/test_hostile.py`` (small) and
``benchmarks/soak.py`` (large).
"""

from __future__ import annotations

import contextlib
import os
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc

import aioiothub
from aioiothub.emulator import Emulator, Identity
from aioiothub.protocol.connect import client_id, username
from aioiothub.protocol.mqtt import encode_connect, encode_publish, encode_subscribe
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token

__all__ = ["ATTACKS", "HostileReport", "run_hostile"]

_GRACE = 5.0  # seconds an attack connection may live before the scenario hangs up itself


@dataclass
class HostileReport:
    """What happened during one run."""

    attacks: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    arrived: int = 0
    honest_drops: int = 0
    twin_reads: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{name} {count}" for name, count in sorted(self.attacks.items()))
        return (
            f"{sum(self.attacks.values()):,} hostile connections in {self.seconds:.1f} s ({kinds}); the honest "
            f"device sent {self.sent:,} messages, {self.arrived:,} arrived, {self.twin_reads:,} twin reads, "
            f"{self.honest_drops} drops"
        )


@dataclass(frozen=True)
class _Target:
    hub: Emulator
    victim: Identity
    attacker: Identity


async def _tls(target: _Target) -> anyio.abc.ByteStream:
    return await anyio.connect_tcp(
        "127.0.0.1", target.hub.port, tls=True, ssl_context=target.hub.client_ssl_context(), tls_hostname="localhost"
    )


async def _send_and_drain(stream: anyio.abc.ByteStream, *chunks: bytes) -> None:
    """Send, then read until the hub closes (or the grace period ends); errors are the point."""
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
        for chunk in chunks:
            await stream.send(chunk)
        with anyio.move_on_after(_GRACE):
            while True:
                await stream.receive()


def _connect_packet(target: _Target, identity: Identity, password: str | None) -> bytes:
    hub = target.hub
    return encode_connect(
        client_id(identity.device_id, identity.module_id),
        username(hub.hostname, identity.device_id, identity.module_id),
        password,
        60,
        True,
    )


def _token(target: _Target, identity: Identity, *, key: str | None = None, ttl: float = 3600) -> str:
    resource = device_resource_uri(target.hub.hostname, identity.device_id)
    return generate_sas_token(resource, key or identity.primary_key or "", int(time.time() + ttl))


async def _as_attacker(target: _Target, *after_connect: bytes) -> None:
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, _connect_packet(target, target.attacker, _token(target, target.attacker)),
                              *after_connect)


async def random_bytes(target: _Target, rng: random.Random) -> None:
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, rng.randbytes(rng.randint(1, 2048)))


async def truncated_connect(target: _Target, rng: random.Random) -> None:
    packet = _connect_packet(target, target.attacker, _token(target, target.attacker))
    stream = await _tls(target)
    async with stream:
        with contextlib.suppress(anyio.BrokenResourceError, ssl.SSLError, OSError):
            await stream.send(packet[: rng.randint(1, len(packet) - 1)])


async def oversize_packet(target: _Target, rng: random.Random) -> None:
    # A PUBLISH announcing 200 MiB, then some of it.
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, _connect_packet(target, target.attacker, _token(target, target.attacker)),
                              b"\x30\x80\x80\x80\x64" + rng.randbytes(4096))


async def not_tls(target: _Target, rng: random.Random) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", target.hub.port)
    async with stream:
        await _send_and_drain(stream, rng.randbytes(rng.randint(1, 512)))


async def forged_token(target: _Target, rng: random.Random) -> None:
    forged = _token(target, target.victim, key="d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=")
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, _connect_packet(target, target.victim, forged))


async def expired_token(target: _Target, rng: random.Random) -> None:
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, _connect_packet(target, target.victim, _token(target, target.victim, ttl=-60)))


async def wrong_scope_token(target: _Target, rng: random.Random) -> None:
    # The attacker's own valid token, presented as the victim.
    stream = await _tls(target)
    async with stream:
        await _send_and_drain(stream, _connect_packet(target, target.victim, _token(target, target.attacker)))


async def other_devices_telemetry(target: _Target, rng: random.Random) -> None:
    topic = f"devices/{target.victim.device_id}/messages/events/"
    await _as_attacker(target, encode_publish(topic, b"forged", 1, 1))


async def other_devices_c2d(target: _Target, rng: random.Random) -> None:
    await _as_attacker(target, encode_subscribe(1, [(f"devices/{target.victim.device_id}/messages/devicebound/#", 1)]))


async def wildcard_subscription(target: _Target, rng: random.Random) -> None:
    await _as_attacker(target, encode_subscribe(1, [("#", 0)]))


async def qos2_publish(target: _Target, rng: random.Random) -> None:
    topic = f"devices/{target.attacker.device_id}/messages/events/"
    await _as_attacker(target, encode_publish(topic, b"x", 2, 1))


async def nested_json(target: _Target, rng: random.Random) -> None:
    await _as_attacker(
        target,
        encode_subscribe(1, [("$iothub/twin/res/#", 0)]),
        encode_publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b"[" * 100_000, 0),
    )


Attack = Callable[[_Target, random.Random], Awaitable[None]]

ATTACKS: dict[str, Attack] = {
    attack.__name__.replace("_", " "): attack
    for attack in (
        random_bytes,
        truncated_connect,
        oversize_packet,
        not_tls,
        forged_token,
        expired_token,
        wrong_scope_token,
        other_devices_telemetry,
        other_devices_c2d,
        wildcard_subscription,
        qos2_publish,
        nested_json,
    )
}


async def _honest_device(
    hub: Emulator, victim: Identity, transport: str, report: HostileReport, stop: anyio.Event
) -> None:
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        victim.connection_string,
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
        transport=transport,
        max_in_flight=32,
    )
    async with client, anyio.create_task_group() as tasks:
        states = client.connection_states()
        assert await anext(states) is True  # the state now; after it, only changes

        async def count_drops() -> None:
            async for up in states:
                report.honest_drops += not up

        tasks.start_soon(count_drops)

        async def send(index: int) -> None:
            await client.send_message({"index": index})
            report.sent += 1

        index = 0
        async with anyio.create_task_group() as senders:
            while not stop.is_set():
                for _ in range(16):
                    senders.start_soon(send, index)
                    index += 1
                await client.get_twin()
                report.twin_reads += 1
                await anyio.sleep(0.005)
        tasks.cancel_scope.cancel()


async def run_hostile(
    hub: Emulator, *, connections: int, concurrency: int = 32, seed: int = 1, transport: str = "aiomqtt"
) -> HostileReport:
    """Run ``connections`` attacks, ``concurrency`` at a time, against a hub with one honest device."""
    rng = random.Random(seed)
    suffix = os.urandom(3).hex()
    victim = hub.add_device(f"honest-{suffix}")
    target = _Target(hub, victim, hub.add_device(f"attacker-{suffix}"))
    report = HostileReport()
    names = sorted(ATTACKS)
    stop = anyio.Event()
    started = time.perf_counter()
    limiter = anyio.Semaphore(concurrency)

    async def attack(name: str, attack_rng: random.Random) -> None:
        async with limiter:
            await ATTACKS[name](target, attack_rng)
            report.attacks[name] += 1

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_honest_device, hub, victim, transport, report, stop)
        await hub.wait_connected(victim.device_id, timeout=30)
        async with anyio.create_task_group() as attacks:
            for number in range(connections):
                name = names[number % len(names)]
                attacks.start_soon(attack, name, random.Random(rng.getrandbits(64)))
        stop.set()
    report.seconds = time.perf_counter() - started
    report.arrived = len({record.json()["index"] for record in hub.telemetry(victim.device_id)})
    return report
