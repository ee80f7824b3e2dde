"""aioiothub.testing.MemoryNetwork: a client and an in-process emulator talking through memory.

This is the seam applications unit-test their device code on, so it is tested as they would use
it: telemetry, the twin, direct methods, cloud-to-device messages and a reconnect, all with no
socket and no TLS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION
from aioiothub.testing import MemoryNetwork

pytestmark = pytest.mark.anyio

STEP = 5.0


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


def _client(hub: Emulator, device_id: str, **options: object) -> aioiothub.IoTHubDeviceClient:
    device = hub.add_device(device_id)
    return aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, transport=MemoryNetwork(hub), **options  # type: ignore[arg-type]
    )


async def test_telemetry_twin_methods_and_cloud_messages_work_through_memory(hub: Emulator) -> None:
    async with _client(hub, "memory-1") as client, anyio.create_task_group() as tasks:
        await client.send_message(aioiothub.Message.json({"t": 21.5}, properties={"alert": "no"}))
        (record,) = await hub.wait_for_telemetry(1, device_id="memory-1", timeout=STEP)
        assert record.json() == {"t": 21.5}
        assert record.properties["alert"] == "no"

        assert await client.update_reported_properties({"fw": "1.0"}) >= 1
        assert (await client.get_twin()).reported["fw"] == "1.0"

        async def serve() -> None:
            async for request in client.method_requests("reboot"):
                await request.respond(200, {"delay": request.payload["delay"]})

        patches: list[dict[str, object]] = []
        patched = anyio.Event()

        async def follow() -> None:
            async for patch in client.desired_property_patches():
                patches.append(patch)
                patched.set()

        tasks.start_soon(serve)
        tasks.start_soon(follow)
        await hub.wait_subscribed("memory-1", METHODS_SUBSCRIPTION, timeout=STEP)
        result = await hub.invoke_method("memory-1", "reboot", {"delay": 3}, timeout=STEP)
        assert (result.status, result.payload) == (200, {"delay": 3})

        await hub.wait_subscribed("memory-1", TWIN_DESIRED_SUBSCRIPTION, timeout=STEP)
        version = await hub.update_desired("memory-1", {"interval": 5})
        with anyio.fail_after(STEP):
            await patched.wait()
        assert patches[-1]["interval"] == 5
        assert patches[-1]["$version"] == version

        messages = client.cloud_messages()
        await hub.send_c2d("memory-1", b"hello", properties={"k": "v"})
        with anyio.fail_after(STEP):
            message = await anext(messages)
        assert (message.body, message.properties["k"]) == (b"hello", "v")
        await messages.aclose()
        tasks.cancel_scope.cancel()


async def test_a_dropped_memory_connection_reconnects_and_loses_nothing(hub: Emulator) -> None:
    policy = aioiothub.ReconnectPolicy(initial_delay=0.01, max_delay=0.05, jitter=0)
    async with _client(hub, "memory-2", reconnect=policy) as client:
        states = client.connection_states()
        assert await anext(states) is True
        await client.send_message(b"before")
        assert hub.drop_connection("memory-2")
        with anyio.fail_after(STEP):
            assert await anext(states) is False
            assert await anext(states) is True
        await client.send_message(b"after")
    bodies = [record.body for record in hub.telemetry("memory-2")]
    assert bodies == [b"before", b"after"]


async def test_a_wrong_key_is_refused_through_memory_as_over_tls(hub: Emulator) -> None:
    device = hub.add_device("memory-3")
    client = aioiothub.IoTHubDeviceClient(
        hostname=device.hostname,
        device_id="memory-3",
        shared_access_key="d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=",
        transport=MemoryNetwork(hub),
    )
    with pytest.raises(aioiothub.AuthenticationError):
        async with client:
            pass


def test_memory_network_needs_an_emulator() -> None:
    with pytest.raises(TypeError, match=r"emulator must be an aioiothub\.emulator\.Emulator"):
        MemoryNetwork("localhost")  # type: ignore[arg-type]
