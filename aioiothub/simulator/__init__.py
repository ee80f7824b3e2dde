"""A fleet simulator: thousands of devices per process, against the emulator or a real hub.

The command line is ``aioiothub simulate`` (see ``aioiothub simulate --help``); the same run can be
driven from Python:

Example:
    >>> import anyio
    >>> from aioiothub.simulator import EmbeddedEmulator, Simulation, SimulationPlan, TrafficSettings
    >>> async def main():  # doctest: +SKIP
    ...     plan = SimulationPlan(devices=100, duration=20, traffic=TrafficSettings(interval=5))
    ...     summary = await Simulation(plan, EmbeddedEmulator(fleet_key)).run()
    ...     print(summary["messages_per_s"], summary["send_latency_ms"]["p99"])

How the pieces fit: an identity source (:mod:`~aioiothub.simulator.identities`) prepares the
devices and says how they connect; :class:`~aioiothub.simulator.device.SimulatedDevice` is one
device; :func:`~aioiothub.simulator.fleet.run_devices` runs a process's share;
:class:`~aioiothub.simulator.runner.Simulation` runs it all, in worker processes with
``processes > 1``; :mod:`~aioiothub.simulator.stats` counts.
"""

from __future__ import annotations

from aioiothub.simulator.backend import BackendTraffic
from aioiothub.simulator.device import SimulatedDevice, writable_property_ack
from aioiothub.simulator.endpoint import FleetEndpoint, device_ids
from aioiothub.simulator.identities import (
    DpsEnrollmentGroup,
    EmbeddedEmulator,
    EmulatorProcess,
    ExistingHub,
    FleetTarget,
    IdentitySource,
)
from aioiothub.simulator.runner import Simulation, SimulationPlan
from aioiothub.simulator.service_registry import ServiceRegistry
from aioiothub.simulator.stats import FleetStats, LatencyHistogram, merge_summaries
from aioiothub.simulator.template import PayloadTemplate
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings

__all__ = [
    # running a fleet
    "Simulation",
    "SimulationPlan",
    "TrafficSettings",
    "BackendTraffic",
    # where the devices come from
    "IdentitySource",
    "EmbeddedEmulator",
    "EmulatorProcess",
    "ExistingHub",
    "ServiceRegistry",
    "DpsEnrollmentGroup",
    "FleetEndpoint",
    "FleetTarget",
    "device_ids",
    # the parts
    "SimulatedDevice",
    "MessageFactory",
    "PayloadTemplate",
    "writable_property_ack",
    # counting
    "FleetStats",
    "LatencyHistogram",
    "merge_summaries",
]
