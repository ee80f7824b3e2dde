"""Acknowledge-after-processing and the errors() stream against the emulator, over real sockets.

What the hub still holds is read from its queues (``c2d_queue_length``); the connection is used as a
barrier (``round_trips``) so that what the client sent has been handled before the hub is asked.
"""

from __future__ import annotations

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION
from tests.client.client_helpers import STEP, device_client, module_client, new_id, round_trips, take

pytestmark = pytest.mark.anyio


async def _c2d_subscribed(hub: Emulator, device_id: str) -> None:
    await hub.wait_subscribed(device_id, f"devices/{device_id}/messages/devicebound/#", timeout=STEP)


async def test_a_manually_acknowledged_message_stays_with_the_hub_until_acknowledged(hub: Emulator) -> None:
    device = hub.add_device(new_id("ack"))
    async with device_client(hub, device) as client:
        messages = client.cloud_messages(ack="manual")
        await hub.send_c2d(device.device_id, b"work item", message_id="w1", ack="full")
        (message,) = await take(messages, 1)
        assert (message.body, message.message_id, message.ack) == (b"work item", "w1", "full")
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 1  # taken, processed, not yet acknowledged
        assert await message.acknowledge() is True
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 0
        await messages.aclose()


async def test_a_message_whose_processing_was_cut_short_is_delivered_again(hub: Emulator) -> None:
    device = hub.add_device(new_id("ack"))
    async with device_client(hub, device, reconnect=aioiothub.ReconnectPolicy(initial_delay=0, jitter=0)) as client:
        messages = client.cloud_messages(ack="manual")
        await hub.send_c2d(device.device_id, b"job", message_id="job-1")
        (first,) = await take(messages, 1)
        # The connection drops while the application is still processing the message.
        assert hub.drop_connection(device.device_id)
        (again,) = await take(messages, 1)
        assert again.message_id == "job-1"
        assert await first.acknowledge() is False  # its connection is gone: nothing sent
        assert await again.acknowledge() is True
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 0
        await messages.aclose()


async def test_in_the_default_mode_a_message_is_acknowledged_when_taken(hub: Emulator) -> None:
    device = hub.add_device(new_id("ack"))
    async with device_client(hub, device) as client:
        messages = client.cloud_messages()
        await hub.send_c2d(device.device_id, b"note")
        (message,) = await take(messages, 1)
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 0
        assert await message.acknowledge() is True
        await messages.aclose()


async def test_module_input_messages_can_be_acknowledged_after_processing(hub: Emulator) -> None:
    device = hub.add_device(new_id("edge"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module) as client:
        inputs = client.input_messages("input1", ack="manual")
        await hub.send_to_input(device.device_id, module.module_id, "input1", b"reading")
        (message,) = await take(inputs, 1)
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id, module.module_id) == 1
        await message.acknowledge()
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id, module.module_id) == 0
        await inputs.aclose()


async def test_drops_and_refused_reconnects_appear_on_errors(hub: Emulator) -> None:
    device = hub.add_device(new_id("errors"))
    policy = aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.05, jitter=0)
    async with device_client(hub, device, reconnect=policy) as client:
        errors = client.errors()
        taken: list[aioiothub.BackgroundError] = []
        async with anyio.create_task_group() as tasks:

            async def collect() -> None:
                taken.extend(await take(errors, 3))

            tasks.start_soon(collect)
            await anyio.wait_all_tasks_blocked()
            hub.refuse_connects(2, return_code=3)
            assert hub.drop_connection(device.device_id)
        await client.wait_connected()
        await hub.wait_connected(device.device_id, timeout=STEP)
        await errors.aclose()
    dropped, refused, again = taken
    assert isinstance(dropped, aioiothub.ConnectionDropped)
    assert isinstance(refused, aioiothub.ReconnectFailed)
    assert isinstance(again, aioiothub.ReconnectFailed)
    assert (refused.return_code, refused.attempt, again.return_code, again.attempt) == (3, 1, 3, 2)


async def test_a_consumer_falling_behind_and_an_unhandled_method_appear_on_errors(hub: Emulator) -> None:
    device = hub.add_device(new_id("errors"))
    async with device_client(hub, device, inbound_buffer_size=1) as client:
        reported: list[aioiothub.BackgroundError] = []
        seen_all, took_one = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tasks:

            async def collect() -> None:
                async for error in client.errors():
                    reported.append(error)
                    missed = sum(e.count for e in reported if isinstance(e, aioiothub.ConsumerFellBehind))
                    if missed == 2 and any(isinstance(e, aioiothub.MethodNotHandled) for e in reported):
                        seen_all.set()

            async def stuck_consumer() -> None:
                async for _ in client.cloud_messages():
                    took_one.set()
                    await anyio.sleep_forever()

            async def reboots() -> None:
                async for request in client.method_requests("reboot"):
                    await request.respond(200)

            tasks.start_soon(collect)
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(stuck_consumer)
            tasks.start_soon(reboots)
            await _c2d_subscribed(hub, device.device_id)
            await hub.wait_subscribed(device.device_id, METHODS_SUBSCRIPTION, timeout=STEP)
            await hub.send_c2d(device.device_id, b"taken")
            with anyio.fail_after(STEP):
                await took_one.wait()
            for index in range(3):  # one waits in the buffer, two do not fit
                await hub.send_c2d(device.device_id, b"%d" % index)
            result = await hub.invoke_method(device.device_id, "selfTest", timeout=STEP)
            assert result.status == 503
            with anyio.fail_after(STEP):
                await seen_all.wait()
            tasks.cancel_scope.cancel()
    assert all(isinstance(e, aioiothub.ConsumerFellBehind | aioiothub.MethodNotHandled) for e in reported)
    assert {e.stream for e in reported if isinstance(e, aioiothub.ConsumerFellBehind)} == {"cloud_messages"}
    assert [e.method_name for e in reported if isinstance(e, aioiothub.MethodNotHandled)] == ["selfTest"]
