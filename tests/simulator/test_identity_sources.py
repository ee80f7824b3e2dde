"""Fleets on the user's own hub: devices created through IoT Hub's service REST API with a service
connection string, and devices provisioned through DPS with an enrollment-group key. Against the
emulator over real sockets, on both client transports."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aioiothub import ServiceError, derive_device_key
from aioiothub.emulator import Emulator
from aioiothub.simulator import BackendTraffic, DpsEnrollmentGroup, ServiceRegistry, Simulation, SimulationPlan
from aioiothub.simulator.identities import IdentitySource
from aioiothub.simulator.service_registry import ServicePolicy
from aioiothub.simulator.traffic import TrafficSettings
from tests.simulator.simulator_helpers import FLEET_KEY

pytestmark = pytest.mark.anyio

TRANSPORTS = ["aiomqtt", "native"]
QUICK = TrafficSettings(interval=0.05, jitter=0.0, messages=2, template='{"n": $.Counter}', variables="[]")
DEVICES = ["sim-0", "sim-1", "sim-2"]


async def run_fleet(source: IdentitySource, devices: int = 3) -> dict[str, Any]:
    plan = SimulationPlan(devices=devices, duration=60, traffic=QUICK)
    with anyio.fail_after(90):
        return await Simulation(plan, source).run()


def service_registry(hub: Emulator, **options: Any) -> ServiceRegistry:
    return ServiceRegistry(
        hub.service_connection_string, FLEET_KEY, connect_host=hub.host, ca_pem=hub.ca_pem.decode("ascii"), **options
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_service_api_creates_the_missing_devices_and_reuses_those_with_the_fleet_key(transport: str) -> None:
    async with Emulator() as hub:
        hub.add_device("sim-1", primary_key=derive_device_key(FLEET_KEY, "sim-1"))
        source = service_registry(hub, port=hub.port, transport=transport)
        summary = await run_fleet(source)
        assert (source.created, source.reused) == (2, 1)
        for device_id in DEVICES:
            assert hub.identity(device_id).primary_key == derive_device_key(FLEET_KEY, device_id)
            assert [record.json() for record in hub.telemetry(device_id)] == [{"n": 1}, {"n": 2}]
    counters = summary["counters"]
    assert counters["acknowledged"] == counters["sent"] == 6
    assert counters["failed"] == counters["devices_lost"] == 0
    assert summary["stopped_by"] == "messages"
    assert summary["settings"]["transport"] == transport


async def test_over_websockets_the_devices_use_the_service_api_port() -> None:
    # One port serves REST and MQTT over WebSocket, as IoT Hub's 443 does.
    async with Emulator() as hub:
        source = service_registry(hub, websockets=True, transport="native")
        assert source.endpoint.port == hub.websocket_port
        summary = await run_fleet(source, devices=2)
        assert [len(hub.telemetry(device_id)) for device_id in DEVICES[:2]] == [2, 2]
    assert summary["counters"]["acknowledged"] == 4


async def test_a_device_with_other_keys_is_refused_and_nothing_connects() -> None:
    async with Emulator() as hub:
        hub.add_device("sim-2", primary_key=derive_device_key("AAAA" + FLEET_KEY[4:], "sim-2"))
        source = service_registry(hub, port=hub.port)
        with pytest.raises(ValueError, match="device 'sim-2' exists on localhost with other keys"):
            await run_fleet(source)
        assert not any(hub.is_connected(device_id) for device_id in DEVICES)
        assert hub.identity("sim-2").primary_key != derive_device_key(FLEET_KEY, "sim-2")


async def test_a_policy_without_registry_write_is_refused_by_the_hub() -> None:
    async with Emulator() as hub:
        source = ServiceRegistry(
            hub.service_policy_connection_string("registryRead"), FLEET_KEY, port=hub.port, connect_host=hub.host,
            ca_pem=hub.ca_pem.decode("ascii"),
        )
        with pytest.raises(ServiceError, match="creating device 'sim-") as caught:
            await run_fleet(source)
        assert caught.value.status == 401
        assert [identity.device_id for identity in hub.identities()] == []


def test_service_connection_strings_are_parsed_and_their_key_never_shown() -> None:
    policy = ServicePolicy.parse("HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0;")
    assert (policy.hub_hostname, policy.https_port, policy.policy_name) == ("hub.example", None, "iothubowner")
    local = ServicePolicy.parse("HostName=localhost:8443;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0")
    assert (local.host, local.hub_hostname, local.https_port) == ("localhost:8443", "localhost", 8443)
    assert "c2VjcmV0" not in repr(policy)
    for text, message in (
        ("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0", "DeviceId makes it a device's"),
        ("HostName=h;SharedAccessKeyName=p", "SharedAccessKey is missing"),
        ("HostName=h;SharedAccessKeyName=p;SharedAccessKey=c2VjcmV0;Sekret=c2VjcmV0", "segment 4 has an unknown key"),
        ("HostName=h;c2VjcmV0", "segment 2 is not of the form Key=Value"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            ServicePolicy.parse(text)
        assert "c2VjcmV0" not in str(caught.value)


def dps_group(hub: Emulator, group_key: str = FLEET_KEY, **options: Any) -> DpsEnrollmentGroup:
    return DpsEnrollmentGroup(
        hub.dps.id_scope, group_key, provisioning_host=hub.hostname, port=hub.port, connect_host=hub.host,
        ca_pem=hub.ca_pem.decode("ascii"), **options,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_devices_provisioned_through_dps_with_the_group_key_reach_their_hub(transport: str) -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.dps.add_enrollment_group("fleet", primary_key=FLEET_KEY)
        hub.dps.retry_after = 0
        summary = await run_fleet(dps_group(hub, transport=transport))
        registered = sorted(record.registration_id for record in hub.dps.registrations())
        assert registered == DEVICES
        for device_id in DEVICES:
            # DPS created each device on the hub with the key derived from the group key.
            assert hub.identity(device_id).primary_key == derive_device_key(FLEET_KEY, device_id)
            assert [record.json() for record in hub.telemetry(device_id)] == [{"n": 1}, {"n": 2}]
    counters = summary["counters"]
    assert counters["registrations"] == 3
    assert counters["acknowledged"] == 6
    assert counters["failed"] == counters["devices_lost"] == 0


async def test_a_fleet_dps_refuses_is_lost_without_retrying_forever() -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.dps.add_enrollment_group("fleet", primary_key=FLEET_KEY)
        hub.dps.add_enrollment_group("closed", primary_key="AAAA" + FLEET_KEY[4:], enabled=False)
        hub.dps.retry_after = 0
        # A key no group has: DPS refuses the connection; a disabled group: DPS refuses the registration.
        for group_key in ("BBBB" + FLEET_KEY[4:], "AAAA" + FLEET_KEY[4:]):
            summary = await run_fleet(dps_group(hub, group_key), devices=2)
            counters = summary["counters"]
            assert summary["stopped_by"] == "every device lost"
            assert counters["devices_lost"] == 2
            assert counters["registrations"] == counters["sent"] == 0
        assert [identity.device_id for identity in hub.identities()] == []


async def test_sources_for_the_users_hub_refuse_back_end_traffic() -> None:
    async with Emulator() as hub:
        for source in (service_registry(hub, port=hub.port), dps_group(hub)):
            plan = SimulationPlan(devices=1, duration=5, traffic=QUICK, backend=BackendTraffic(method_rate=1))
            with pytest.raises(ValueError, match=r"back-end traffic \(methods, desired properties, C2D\) needs"):
                await Simulation(plan, source).run()
