"""A small simulated fleet from Python: what ``aioiothub simulate`` does, as a library.

Run it with no arguments to use the embedded emulator; set ``IOTHUB_HOSTNAME`` and
``AIOIOTHUB_FLEET_KEY`` to run against a real hub whose devices ``sim-0`` … ``sim-19`` have keys
derived from the fleet key (``aioiothub.derive_device_key(fleet_key, device_id)``, as a DPS group
enrollment derives them).
"""

from __future__ import annotations

import base64
import os
import secrets

import anyio

from aioiothub.simulator import (
    BackendTraffic,
    EmbeddedEmulator,
    ExistingHub,
    FleetEndpoint,
    IdentitySource,
    Simulation,
    SimulationPlan,
    TrafficSettings,
)


async def main() -> None:
    traffic = TrafficSettings(
        interval=0.5,
        messages=4,
        template='{"deviceId": "$.DeviceId", "n": $.Counter, "level": $.Level}',
        variables='[{"name": "Level", "min": 0, "max": 100, "step": 25}]',
        properties={"fleet": "example"},
    )
    source: IdentitySource
    backend = BackendTraffic()
    if os.environ.get("IOTHUB_HOSTNAME"):
        source = ExistingHub(FleetEndpoint(os.environ["IOTHUB_HOSTNAME"], os.environ["AIOIOTHUB_FLEET_KEY"]))
    else:
        source = EmbeddedEmulator(base64.b64encode(secrets.token_bytes(32)).decode())
        backend = BackendTraffic(method_rate=2)
    plan = SimulationPlan(devices=20, traffic=traffic, backend=backend)
    summary = await Simulation(plan, source).run()
    counters = summary["counters"]
    print(f"{counters['acknowledged']} of {counters['sent']} messages acknowledged, {counters['failed']} failed")
    print(f"send latency p50 {summary['send_latency_ms']['p50']} ms, p99 {summary['send_latency_ms']['p99']} ms")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
