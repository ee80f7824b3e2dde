"""Connection lifecycle against the emulator: drops, renewal, authentication failures, cancellation."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import anyio
import pytest

import aioiothub
from aioiothub import AuthenticationError, ConnectionLostError, ReconnectPolicy
from aioiothub.emulator import Emulator
from tests.client.client_helpers import nothing_more, reconnect_seen_by_hub

pytestmark = pytest.mark.anyio

FAST_RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, jitter=0)


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(websocket_port=None) as emulator:
        yield emulator


def device_client(hub: Emulator, device_id: str, **options: object) -> aioiothub.IoTHubDeviceClient:
    identity = hub.identity(device_id)
    options.setdefault("reconnect", FAST_RECONNECT)
    return aioiothub.IoTHubDeviceClient.from_connection_string(
        identity.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), **options
    )


async def test_every_acknowledged_message_arrives_when_the_connection_drops_with_telemetry_in_flight(
    hub: Emulator,
) -> None:
    hub.add_device("dev1")
    async with device_client(hub, "dev1") as client:
        hub.delay_pubacks(30)  # PUBACKs held back: everything sent is in flight when the drop comes
        count = 50
        async with anyio.create_task_group() as senders:
            for number in range(count):
                senders.start_soon(client.send_message, aioiothub.Message(b"x", message_id=f"m{number}"))
            # The hub stores what it read and holds the PUBACKs; the rest is still on the wire.
            await hub.wait_for_telemetry(1, device_id="dev1", timeout=10)
            hub.delay_pubacks(0)
            assert hub.drop_connection("dev1")
        # Every send returned, so every message was acknowledged, possibly after a resend.
        received = {record.system_properties["$.mid"] for record in hub.telemetry("dev1")}
        assert received == {f"m{number}" for number in range(count)}
        assert client.connected


async def test_twin_request_in_flight_during_a_drop_is_resent_on_the_next_connection(hub: Emulator) -> None:
    hub.add_device("dev1")
    await hub.update_desired("dev1", {"interval": 7})
    async with device_client(hub, "dev1") as client:
        hub.drop_on_twin_requests(1)
        twin = await client.get_twin()
        assert twin.desired["interval"] == 7
        assert client._require_session().protocol.pending_twin_requests == []


async def test_desired_changes_made_while_offline_arrive_as_one_patch_after_reconnect(hub: Emulator) -> None:
    hub.add_device("dev1")
    await hub.update_desired("dev1", {"interval": 5, "mode": "eco", "limits": {"low": 1, "high": 9}})
    send, patches = anyio.create_memory_object_stream[dict[str, object]](10)
    async with device_client(hub, "dev1") as client, anyio.create_task_group() as tasks, send, patches:

        async def consume() -> None:
            async for patch in client.desired_property_patches():
                await send.send(patch)

        tasks.start_soon(consume)
        await hub.wait_subscribed("dev1", "$iothub/twin/PATCH/properties/desired/#")
        online_version = await hub.update_desired("dev1", {"mode": "fast"})
        with anyio.fail_after(10):
            assert await patches.receive() == {"mode": "fast", "$version": online_version}

        hub.refuse_connects(3)  # keeps the device away while the back end changes the twin
        hub.drop_connection("dev1")
        await hub.wait_disconnected("dev1")
        await hub.update_desired("dev1", {"interval": 10, "mode": None})
        offline_version = await hub.update_desired("dev1", {"limits": {"high": 12}})

        with anyio.fail_after(10):
            synthetic = await patches.receive()
        assert synthetic == {"interval": 10, "mode": None, "limits": {"high": 12}, "$version": offline_version}
        # A later online change is delivered normally, not repeated or lost.
        later_version = await hub.update_desired("dev1", {"interval": 11})
        with anyio.fail_after(10):
            assert await patches.receive() == {"interval": 11, "$version": later_version}
        tasks.cancel_scope.cancel()


async def test_short_sas_ttl_renews_by_reconnecting_without_failing_operations(hub: Emulator) -> None:
    hub.add_device("dev1")
    async with device_client(hub, "dev1", sas_ttl=2) as client:
        states = client.connection_states()
        assert await anext(states) is True
        sent = 0
        with anyio.fail_after(30):
            # Two renewals happen within about 3.2 s; keep traffic flowing across them.
            renewals = 0

            async def watch() -> None:
                nonlocal renewals
                for _ in range(2):
                    await reconnect_seen_by_hub(hub, "dev1", timeout=10)
                    renewals += 1

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                while renewals < 2:
                    await client.send_message({"n": sent})
                    await client.get_twin()
                    sent += 1
        await nothing_more(states)  # planned reconnects are not reported as drops
        records = hub.telemetry("dev1")
        assert {json.loads(record.body)["n"] for record in records} == set(range(sent))


async def test_wrong_key_raises_authentication_error_quickly(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    wrong_key = base64.b64encode(b"not the device key at all, 32 b").decode()
    client = aioiothub.IoTHubDeviceClient(
        hostname=identity.hostname,
        device_id="dev1",
        shared_access_key=wrong_key,
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    with anyio.fail_after(5), pytest.raises(AuthenticationError) as caught:
        async with client:
            pass
    assert caught.value.return_code == 5


async def test_unknown_device_raises_authentication_error(hub: Emulator) -> None:
    hub.add_device("known")
    key = base64.b64encode(bytes(32)).decode()
    client = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname, device_id="unknown", shared_access_key=key, port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    with anyio.fail_after(5), pytest.raises(AuthenticationError):
        async with client:
            pass


async def test_key_revoked_while_connected_ends_the_client_with_authentication_error(hub: Emulator) -> None:
    identity = hub.add_device("dev1")
    with anyio.fail_after(10), pytest.raises(AuthenticationError):  # noqa: PT012 - the error ends the whole async with
        async with device_client(hub, "dev1") as client:
            identity.primary_key = base64.b64encode(b"k" * 32).decode()
            identity.secondary_key = base64.b64encode(b"s" * 32).decode()
            hub.drop_connection("dev1")
            async for _ in client.cloud_messages():
                pass
    assert not hub.is_connected("dev1")


async def test_reconnect_disabled_ends_the_client_with_connection_lost_error(hub: Emulator) -> None:
    hub.add_device("dev1")
    with anyio.fail_after(10), pytest.raises(ConnectionLostError):  # noqa: PT012 - the error ends the whole async with
        async with device_client(hub, "dev1", reconnect=False) as client:
            hub.drop_connection("dev1")
            await anyio.sleep_forever()
    del client


async def test_reconnect_policy_gives_up_after_max_attempts(hub: Emulator) -> None:
    hub.add_device("dev1")
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=3, jitter=0)
    with anyio.fail_after(10), pytest.raises(ConnectionLostError, match="gave up"):  # noqa: PT012 - the error ends the whole async with
        async with device_client(hub, "dev1", reconnect=policy):
            hub.refuse_connects(10)
            hub.drop_connection("dev1")
            await anyio.sleep_forever()


async def test_a_users_own_error_is_not_wrapped_in_an_exception_group(hub: Emulator) -> None:
    hub.add_device("dev1")
    with pytest.raises(KeyError, match="mine"):
        async with device_client(hub, "dev1"):
            raise KeyError("mine")
    assert not hub.is_connected("dev1") or await _disconnected(hub, "dev1")


async def _disconnected(hub: Emulator, device_id: str) -> bool:
    await hub.wait_disconnected(device_id, timeout=5)
    return True


async def test_cancelling_every_kind_of_await_leaves_no_pending_request_and_no_task(hub: Emulator) -> None:
    hub.add_device("dev1")
    tasks_before = asyncio.all_tasks()
    async with device_client(hub, "dev1") as client:
        session = client._require_session()
        background = asyncio.all_tasks()

        hub.ignore_twin_requests(2)
        with anyio.move_on_after(0.2) as scope:
            await client.get_twin()
        assert scope.cancelled_caught
        with anyio.move_on_after(0.2) as scope:
            await client.update_reported_properties({"a": 1})
        assert scope.cancelled_caught
        assert session.protocol.pending_twin_requests == []

        hub.delay_pubacks(5)
        with anyio.move_on_after(0.2) as scope:
            await client.send_message(b"slow")
        assert scope.cancelled_caught
        hub.delay_pubacks(0)

        for iterator in (client.cloud_messages(), client.desired_property_patches(), client.method_requests()):
            with anyio.move_on_after(0.2) as scope:
                await anext(iterator)
            assert scope.cancelled_caught
            await iterator.aclose()

        assert session.protocol.pending_twin_requests == []
        # The client still works after all of that.
        assert (await client.get_twin()).reported_version is not None
        await client.send_message(b"fine")
        assert asyncio.all_tasks() <= background | {asyncio.current_task()}
    await asyncio.sleep(0)
    leftover = {task for task in asyncio.all_tasks() - tasks_before if not task.done()}
    assert leftover == set(), f"tasks left running: {leftover}"
