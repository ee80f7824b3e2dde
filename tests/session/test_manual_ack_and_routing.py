"""Acknowledge-after-processing, consumers sharing a stream, and method requests by name (fake transport)."""

from __future__ import annotations

import anyio
import pytest

from aioiothub._session.background_errors import MethodNotHandled
from aioiothub._session.methods import MethodRequest
from aioiothub.message import Message
from tests.fakes import FakeNetwork
from tests.session.error_log import ErrorLog
from tests.session.session_helpers import make_session, running

pytestmark = pytest.mark.anyio

C2D = "devices/dev1/messages/devicebound/%24.mid={}"
INPUT = "devices/dev1/modules/mod1/inputs/{}/%24.mid={}"


async def test_a_manually_acknowledged_message_is_completed_only_when_the_application_says() -> None:
    network = FakeNetwork()
    session = make_session(network)
    taken: list[Message] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for message in session.cloud_messages(manual_ack=True):
                taken.append(message)

        tasks.start_soon(consume)
        await network.until(lambda: len(first.subscriptions) == 1)
        packet_ids = [first.deliver(C2D.format(f"m{index}"), b"x", qos=1) for index in range(3)]
        await network.until(lambda: len(taken) == 3)
        assert first.acknowledged == []
        assert await taken[1].acknowledge() is True
        assert await taken[1].acknowledge() is True  # once only: packet ids are reused
        assert first.acknowledged == [packet_ids[1]]


async def test_a_message_not_acknowledged_before_a_drop_is_redelivered_and_acknowledged_anew() -> None:
    network = FakeNetwork()
    session = make_session(network)
    taken: list[Message] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for message in session.cloud_messages(manual_ack=True):
                taken.append(message)

        tasks.start_soon(consume)
        await network.until(lambda: len(first.subscriptions) == 1)
        first.deliver(C2D.format("m1"), b"x", qos=1)
        await network.until(lambda: len(taken) == 1)
        first.drop()  # the application was still processing it
        second = await network.connected(2)
        assert await taken[0].acknowledge() is False  # its connection is gone: the hub redelivers
        assert second.acknowledged == []
        again = second.deliver(C2D.format("m1"), b"x", qos=1)
        await network.until(lambda: len(taken) == 2)
        assert taken[1] == taken[0]
        assert await taken[1].acknowledge() is True
        assert second.acknowledged == [again]


async def test_in_the_default_mode_taking_a_message_acknowledges_it() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session) as tasks:
        first = await network.connected(1)
        messages = session.cloud_messages()
        got: list[Message] = []

        async def take_one() -> None:
            got.append(await anext(messages))

        tasks.start_soon(take_one)
        await network.until(lambda: len(first.subscriptions) == 1)
        packet_id = first.deliver(C2D.format("m1"), b"x", qos=1)
        await network.until(lambda: len(got) == 1)
        assert first.acknowledged == [packet_id]
        assert await got[0].acknowledge() is True  # what the automatic acknowledgement did
        assert first.acknowledged == [packet_id]
        await messages.aclose()


async def test_module_inputs_can_be_acknowledged_manually_per_input() -> None:
    network = FakeNetwork()
    session = make_session(network, module_id="mod1")
    taken: list[Message] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for message in session.input_messages("input1", manual_ack=True):
                taken.append(message)

        tasks.start_soon(consume)
        await network.until(lambda: len(first.subscriptions) == 1)
        packet_id = first.deliver(INPUT.format("input1", "m1"), b"x", qos=1)
        await network.until(lambda: len(taken) == 1)
        assert taken[0].input_name == "input1"
        assert first.acknowledged == []
        await taken[0].acknowledge()
        assert first.acknowledged == [packet_id]


async def test_two_loops_over_one_stream_share_its_messages() -> None:
    network = FakeNetwork()
    session = make_session(network, inbound_buffer_size=16)
    seen: dict[str, list[str | None]] = {"a": [], "b": []}
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume(name: str) -> None:
            async for message in session.cloud_messages():
                seen[name].append(message.message_id)
                await anyio.lowlevel.checkpoint()

        tasks.start_soon(consume, "a")
        tasks.start_soon(consume, "b")
        await network.until(lambda: len(first.subscriptions) == 1)
        await anyio.wait_all_tasks_blocked()
        for index in range(10):
            first.deliver(C2D.format(f"m{index}"), b"x", qos=1)
        await network.until(lambda: len(seen["a"]) + len(seen["b"]) == 10)
    # Each message went to exactly one loop.
    assert sorted(seen["a"] + seen["b"], key=lambda mid: int(str(mid)[1:])) == [f"m{index}" for index in range(10)]
    assert seen["a"]
    assert seen["b"]


async def test_method_requests_go_to_the_loop_for_their_name_and_the_rest_to_the_catch_all() -> None:
    network = FakeNetwork()
    session = make_session(network)
    by_loop: dict[str, list[str]] = {"reboot": [], "all": []}
    async with running(session) as tasks:
        first = await network.connected(1)

        async def serve(loop: str, name: str | None) -> None:
            async for request in session.method_requests(name):
                by_loop[loop].append(request.name)
                await request.respond(200)

        tasks.start_soon(serve, "reboot", "reboot")
        tasks.start_soon(serve, "all", None)
        await network.until(lambda: len(first.subscriptions) >= 1)
        await anyio.wait_all_tasks_blocked()
        for rid, name in enumerate(["reboot", "thermostat1*getMaxMinReport", "reboot", "ping"]):
            first.deliver(f"$iothub/methods/POST/{name}/?$rid={rid}", b"{}")
        # Each loop answers one request at a time: its answer waits for the hub's PUBACK.
        for answered in (2, 4):
            await network.until(lambda answered=answered: len(first.published) == answered)  # type: ignore[misc]
            for index in range(answered):
                first.ack(index)
    assert by_loop == {"reboot": ["reboot", "reboot"], "all": ["thermostat1*getMaxMinReport", "ping"]}


async def test_requests_waiting_for_the_catch_all_move_to_a_loop_that_asks_for_their_name() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session) as tasks:
        first = await network.connected(1)
        everything = session.method_requests()
        tasks.start_soon(anext, everything)  # takes the first request, then nobody takes more
        await network.until(lambda: len(first.subscriptions) == 1)
        await anyio.wait_all_tasks_blocked()
        for rid, name in enumerate(["first", "reboot", "ping", "reboot"]):
            first.deliver(f"$iothub/methods/POST/{name}/?$rid={rid}", b"{}")
        reboots = session.method_requests("reboot")
        taken: list[MethodRequest] = [await anext(reboots), await anext(reboots)]
        assert [(request.name, request.request_id) for request in taken] == [("reboot", "1"), ("reboot", "3")]
        assert first.published == []  # nothing was refused


async def test_with_only_named_loops_an_unknown_method_is_refused_and_reported() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        tasks.start_soon(anext, session.method_requests("reboot"))
        await network.until(lambda: len(first.subscriptions) == 1)
        first.deliver("$iothub/methods/POST/factoryReset/?$rid=5", b"{}")
        await network.until(lambda: len(first.published) == 1)
        assert [sent.topic for sent in first.published] == ["$iothub/methods/res/503/?$rid=5"]
        assert await log.wait_for(MethodNotHandled) == [MethodNotHandled("factoryReset", "5")]
