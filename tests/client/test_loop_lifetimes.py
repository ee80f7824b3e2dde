"""A loop that has ended owns nothing: its methods and inputs go to the loops still running.

When no loop takes a direct method, the service caller gets 503 at once (not the 504 of a timeout),
and a loop started later never receives a request the back end already saw fail. Messages are
different: the hub keeps an unacknowledged message queued, so one that no loop takes waits,
unacknowledged, for the next loop.
"""

from __future__ import annotations

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION
from tests.client.client_helpers import STEP, device_client, module_client, new_id, round_trips, take

pytestmark = pytest.mark.anyio

#: Long enough that a call nobody answers would time out (504) well after an answer given at once.
CALL_TIMEOUT = 3.0


async def test_a_method_whose_loop_ended_is_answered_with_503_at_once_and_never_delivered_later(
    hub: Emulator,
) -> None:
    device = hub.add_device(new_id("methods"))
    async with device_client(hub, device) as client, anyio.create_task_group() as tasks:

        async def serve_one_reboot() -> None:
            async for request in client.method_requests("reboot"):
                await request.respond(200, {"first": True})
                break  # the loop ends; nothing closes the iterator explicitly

        tasks.start_soon(serve_one_reboot)
        await hub.wait_subscribed(device.device_id, METHODS_SUBSCRIPTION, timeout=STEP)
        assert (await hub.invoke_method(device.device_id, "reboot", timeout=STEP)).status == 200
        await anyio.wait_all_tasks_blocked()

        with anyio.fail_after(CALL_TIMEOUT - 1):
            stale = await hub.invoke_method(device.device_id, "reboot", {"n": 1}, timeout=CALL_TIMEOUT)
        assert stale.status == 503

        later = client.method_requests("reboot")
        got: list[dict[str, int]] = []

        async def serve_again() -> None:
            (request,) = await take(later, 1)
            got.append(request.payload)
            await request.respond(200)

        tasks.start_soon(serve_again)
        await anyio.wait_all_tasks_blocked()
        assert (await hub.invoke_method(device.device_id, "reboot", {"n": 2}, timeout=STEP)).status == 200
        await later.aclose()
    assert got == [{"n": 2}]


async def test_a_catch_all_loop_takes_a_method_whose_named_loop_ended(hub: Emulator) -> None:
    device = hub.add_device(new_id("methods"))
    async with device_client(hub, device) as client, anyio.create_task_group() as tasks:
        named = client.method_requests("reboot")
        catch_all = client.method_requests()
        served: list[str] = []

        async def serve_all() -> None:
            async for request in catch_all:
                served.append(request.name)
                await request.respond(200, {"by": "catch-all"})

        tasks.start_soon(serve_all)

        async def serve_named_once() -> None:
            (request,) = await take(named, 1)
            await request.respond(200, {"by": "named"})

        tasks.start_soon(serve_named_once)
        await hub.wait_subscribed(device.device_id, METHODS_SUBSCRIPTION, timeout=STEP)
        await anyio.wait_all_tasks_blocked()
        first = await hub.invoke_method(device.device_id, "reboot", timeout=STEP)
        await named.aclose()
        second = await hub.invoke_method(device.device_id, "reboot", timeout=CALL_TIMEOUT)
        tasks.cancel_scope.cancel()
    assert (first.status, first.payload) == (200, {"by": "named"})
    assert (second.status, second.payload) == (200, {"by": "catch-all"})
    assert served == ["reboot"]


async def test_a_method_with_no_loop_left_at_all_is_answered_with_503(hub: Emulator) -> None:
    device = hub.add_device(new_id("methods"))
    async with device_client(hub, device) as client:
        catch_all = client.method_requests()
        async with anyio.create_task_group() as tasks:

            async def serve_one() -> None:
                (request,) = await take(catch_all, 1)
                await request.respond(200)

            tasks.start_soon(serve_one)
            await hub.wait_subscribed(device.device_id, METHODS_SUBSCRIPTION, timeout=STEP)
            await anyio.wait_all_tasks_blocked()
            assert (await hub.invoke_method(device.device_id, "anything", timeout=STEP)).status == 200
        await catch_all.aclose()
        with anyio.fail_after(CALL_TIMEOUT - 1):
            result = await hub.invoke_method(device.device_id, "anything", timeout=CALL_TIMEOUT)
    assert result.status == 503


async def test_an_input_whose_named_loop_ended_goes_to_the_catch_all_loop(hub: Emulator) -> None:
    device = hub.add_device(new_id("edge"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module) as client:
        named = client.input_messages("input1")
        catch_all = client.input_messages()
        await hub.send_to_input(device.device_id, module.module_id, "input1", b"first")
        (first,) = await take(named, 1)
        await named.aclose()
        await hub.send_to_input(device.device_id, module.module_id, "input1", b"second")
        (second,) = await take(catch_all, 1)
        await catch_all.aclose()
    assert (first.body, second.body) == (b"first", b"second")


async def test_a_message_no_loop_takes_is_not_acknowledged_and_waits_for_the_next_loop(hub: Emulator) -> None:
    device = hub.add_device(new_id("edge"))
    module = hub.add_module(device.device_id, new_id("module"))
    async with module_client(hub, module) as client:
        named = client.input_messages("input1")
        await hub.send_to_input(device.device_id, module.module_id, "input1", b"first")
        await take(named, 1)
        await named.aclose()
        await hub.send_to_input(device.device_id, module.module_id, "input1", b"waits")
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id, module.module_id) == 1  # nobody acknowledged it
        later = client.input_messages("input1")
        (message,) = await take(later, 1)
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id, module.module_id) == 0
        await later.aclose()
    assert message.body == b"waits"


async def test_a_cloud_message_after_the_loop_ended_stays_queued_until_a_loop_takes_it(hub: Emulator) -> None:
    device = hub.add_device(new_id("c2d"))
    async with device_client(hub, device) as client:
        messages = client.cloud_messages()
        await hub.send_c2d(device.device_id, b"first")
        await take(messages, 1)
        await messages.aclose()
        await hub.send_c2d(device.device_id, b"waits")
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 1
        later = client.cloud_messages()
        (message,) = await take(later, 1)
        await round_trips(client)
        assert hub.c2d_queue_length(device.device_id) == 0
        await later.aclose()
    assert message.body == b"waits"
