"""A simulated device against the emulator: telemetry on schedule and the behaviour of a real device."""

from __future__ import annotations

import functools
import json

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.simulator.device import ACK_DESCRIPTION, writable_property_ack
from aioiothub.simulator.fleet import run_devices
from aioiothub.simulator.stats import FleetStats
from aioiothub.simulator.traffic import TrafficSettings
from tests.simulator.simulator_helpers import endpoint_of, register_fleet

pytestmark = pytest.mark.anyio

QUICK = TrafficSettings(interval=0.05, jitter=0.0, messages=3, template='{"n": $.Counter}', variables="[]")


def test_writable_property_ack_follows_plug_and_play() -> None:
    desired = {"interval": 5, "thermostat1": {"__t": "c", "target": 21, "gone": None}, "old": None, "$version": 4}
    assert writable_property_ack(desired) == {
        "interval": {"value": 5, "ac": 200, "av": 4, "ad": ACK_DESCRIPTION},
        "thermostat1": {"__t": "c", "target": {"value": 21, "ac": 200, "av": 4, "ad": ACK_DESCRIPTION}},
    }


def test_nothing_to_acknowledge_in_an_empty_desired_section() -> None:
    assert writable_property_ack({"$version": 1}) == {}


async def test_device_sends_its_messages_and_answers_the_back_end() -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, ["sim-0"])
        # Written before the device connects: acknowledged from the twin it reads at start.
        first_version = await hub.update_desired("sim-0", {"interval": 5})
        stats, stop = FleetStats(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(functools.partial(run_devices, endpoint_of(hub), ["sim-0"], QUICK, stats, stop=stop))
            records = await hub.wait_for_telemetry(3, device_id="sim-0", timeout=30)
            assert [json.loads(record.body) for record in records] == [{"n": 1}, {"n": 2}, {"n": 3}]
            assert records[0].system_properties["$.ct"] == "application/json"
            # The device reads its twin before it sends, so the acknowledgement is in by now.
            assert hub.twin("sim-0")["reported"]["interval"] == {
                "value": 5, "ac": 200, "av": first_version, "ad": ACK_DESCRIPTION,
            }

            await hub.wait_subscribed("sim-0", "$iothub/methods/POST/#", timeout=30)
            result = await hub.invoke_method("sim-0", "reboot", {"delay": 1}, timeout=10)
            assert (result.status, result.payload) == (
                200, {"device": "sim-0", "method": "reboot", "echo": {"delay": 1}},
            )

            await hub.wait_subscribed("sim-0", "$iothub/twin/PATCH/properties/desired/#", timeout=30)
            version = await hub.update_desired("sim-0", {"interval": 9})
            with anyio.fail_after(30):
                await stats.wait_until(lambda counters: counters["desired_acknowledged"] == 2)
            assert hub.twin("sim-0")["reported"]["interval"] == {
                "value": 9, "ac": 200, "av": version, "ad": ACK_DESCRIPTION,
            }

            await hub.wait_subscribed("sim-0", "devices/sim-0/messages/devicebound/#", timeout=30)
            await hub.send_c2d("sim-0", b"hello")
            with anyio.fail_after(30):
                await stats.wait_until(lambda counters: counters["c2d_received"] == 1)
                await stats.wait_until(lambda counters: counters["methods_answered"] == 1)
            stop.set()
    counters = stats.counters
    assert counters["devices"] == 1
    assert counters["sent"] == counters["acknowledged"] == 3
    assert counters["failed"] == 0
    assert counters["finished"] == 1
    assert counters["twin_reads"] == 1
    assert counters["desired_patches"] == 1
    assert counters["desired_acknowledged"] == 2
    assert stats.send_latency.count == 3


async def test_a_dropped_device_reconnects_and_is_counted() -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, ["sim-0"])
        stats, stop = FleetStats(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(functools.partial(run_devices, endpoint_of(hub), ["sim-0"], QUICK, stats, stop=stop))
            await hub.wait_for_telemetry(3, device_id="sim-0", timeout=30)
            with anyio.fail_after(30):
                await stats.wait_until(lambda counters: counters["finished"] == 1)
            assert hub.drop_connection("sim-0")
            with anyio.fail_after(60):
                await stats.wait_until(lambda counters: counters["reconnects"] == 1)
            await hub.wait_connected("sim-0", timeout=30)
            stop.set()
    assert stats.counters["connected"] == 1
    assert stats.counters["devices_lost"] == 0


async def test_a_refused_device_is_counted_as_lost_and_the_others_run() -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, ["sim-0"])
        register_fleet(hub, ["sim-1"], fleet_key="AAAA" + endpoint_of(hub).fleet_key[4:])
        stats, stop = FleetStats(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                functools.partial(run_devices, endpoint_of(hub), ["sim-0", "sim-1"], QUICK, stats, stop=stop)
            )
            with anyio.fail_after(60):
                await stats.wait_until(lambda counters: counters["devices_lost"] == 1)
                await stats.wait_until(lambda counters: counters["finished"] == 1)
            stop.set()
    assert stats.counters["connect_failures"] == 1
    assert stats.counters["acknowledged"] == 3
