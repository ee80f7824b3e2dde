"""Inbound traffic over a fake transport: desired resync, consumers falling behind, acknowledgements."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aioiothub.message import Message
from aioiothub.protocol import topics
from tests.fakes import FakeNetwork
from tests.session.session_helpers import answer_twin, make_session, notify_desired, running, twin_requests

pytestmark = pytest.mark.anyio


async def test_a_desired_change_made_while_offline_arrives_as_one_synthetic_patch() -> None:
    network = FakeNetwork()
    session = make_session(network)
    patches: list[dict[str, Any]] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for patch in session.desired_patches():
                patches.append(patch)

        tasks.start_soon(consume)
        await network.until(lambda: len(twin_requests(first)) == 1)
        assert first.subscriptions[0] == [(topics.TWIN_DESIRED_SUBSCRIPTION, 0)]
        answer_twin(first, twin_requests(first)[0], {"a": 1, "b": 2, "$version": 1}, {"$version": 1})
        await network.until(lambda: session.protocol.desired.state.value == "live")
        notify_desired(first, {"a": 5, "$version": 2})
        await network.until(lambda: len(patches) == 1)
        first.drop()

        second = await network.connected(2)
        await network.until(lambda: len(twin_requests(second)) == 1)
        # A notification older than the reading arrives first; the reading covers it.
        notify_desired(second, {"c": 3, "$version": 3})
        answer_twin(second, twin_requests(second)[0], {"a": 5, "c": 3, "$version": 4}, {"$version": 1})
        await network.until(lambda: len(patches) == 2)
        notify_desired(second, {"c": 4, "$version": 5})
        await network.until(lambda: len(patches) == 3)
    assert patches == [{"a": 5, "$version": 2}, {"b": None, "c": 3, "$version": 4}, {"c": 4, "$version": 5}]


async def test_a_reading_answered_before_a_drop_is_followed_by_another() -> None:
    network = FakeNetwork()
    session = make_session(network)
    patches: list[dict[str, Any]] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for patch in session.desired_patches():
                patches.append(patch)

        tasks.start_soon(consume)
        await network.until(lambda: len(twin_requests(first)) == 1)
        first.drop()
        second = await network.connected(2)
        # The baseline GET is re-sent; the reconnect happened while it was under way, so once it
        # is answered another reading follows.
        await network.until(lambda: len(twin_requests(second)) == 1)
        answer_twin(second, twin_requests(second)[0], {"a": 1, "$version": 1}, {"$version": 1})
        await network.until(lambda: len(twin_requests(second)) == 2)
        answer_twin(second, twin_requests(second)[1], {"a": 2, "$version": 2}, {"$version": 1})
        await network.until(lambda: len(patches) == 1)
    assert patches == [{"a": 2, "$version": 2}]


async def test_a_consumer_falling_behind_gets_the_missed_changes_from_a_twin_reading() -> None:
    network = FakeNetwork()
    session = make_session(network, inbound_buffer_size=2)
    patches: list[dict[str, Any]] = []
    gate = anyio.Event()
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume_slowly() -> None:
            async for patch in session.desired_patches():
                patches.append(patch)
                await gate.wait()

        tasks.start_soon(consume_slowly)
        await network.until(lambda: len(twin_requests(first)) == 1)
        answer_twin(first, twin_requests(first)[0], {"n": 1, "$version": 1}, {"$version": 1})
        await network.until(lambda: session.protocol.desired.state.value == "live")
        notify_desired(first, {"n": 2, "$version": 2})
        await network.until(lambda: len(patches) == 1)
        for version in (3, 4, 5, 6):  # 3 and 4 fill the buffer, 5 cannot be queued, 6 is dropped
            notify_desired(first, {"n": version, "$version": version})
        await network.until(lambda: len(twin_requests(first)) == 2)
        answer_twin(first, twin_requests(first)[1], {"n": 6, "extra": True, "$version": 6}, {"$version": 1})
        gate.set()
        await network.until(lambda: len(patches) == 4)
    assert patches == [
        {"n": 2, "$version": 2},
        {"n": 3, "$version": 3},
        {"n": 4, "$version": 4},
        {"n": 6, "extra": True, "$version": 6},
    ]


async def test_cloud_messages_are_acknowledged_when_taken_and_left_unacknowledged_when_the_buffer_is_full() -> None:
    network = FakeNetwork()
    session = make_session(network, inbound_buffer_size=2)
    taken: list[Message] = []
    gate = anyio.Event()
    c2d = "devices/dev1/messages/devicebound/%24.mid=m{}"
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume_slowly() -> None:
            async for message in session.cloud_messages():
                taken.append(message)
                await gate.wait()

        tasks.start_soon(consume_slowly)
        await network.until(lambda: session.streams.cloud.receive.statistics().tasks_waiting_receive == 1)
        packet_ids = [first.deliver(c2d.format(index), b"x", qos=1) for index in range(4)]
        await network.until(lambda: len(taken) == 1)
        # m0 was taken (acknowledged); m1 and m2 wait in the buffer; m3 did not fit.
        assert first.acknowledged == [packet_ids[0]]
        gate.set()
        await network.until(lambda: len(taken) == 3)
        assert first.acknowledged == packet_ids[:3]
    assert [message.message_id for message in taken] == ["m0", "m1", "m2"]


async def test_a_message_is_acknowledged_on_the_connection_it_arrived_on() -> None:
    network = FakeNetwork()
    session = make_session(network)
    taken: list[str | None] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def consume() -> None:
            async for message in session.cloud_messages():
                taken.append(message.message_id)

        tasks.start_soon(consume)
        await network.until(lambda: len(first.subscriptions) == 1)
        first.drop()
        second = await network.connected(2)
        # Redelivered before the session adopted the new connection (while subscriptions are
        # restored): it must still be acknowledged there, not on the connection that is gone.
        packet_id = second.deliver("devices/dev1/messages/devicebound/%24.mid=again", b"x", qos=1)
        await network.until(lambda: taken == ["again"])
        assert second.acknowledged == [packet_id]


async def test_method_requests_without_a_consumer_are_answered_with_503() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session):
        first = await network.connected(1)
        first.deliver("$iothub/methods/POST/reboot/?$rid=7", b'{"delay":1}')
        await network.until(lambda: len(first.published) == 1)  # answered on the next loop turn
        assert first.published[-1].topic == "$iothub/methods/res/503/?$rid=7"
        assert b"no handler is listening" in first.published[-1].payload


async def test_malformed_inbound_messages_are_acknowledged_and_leave_the_session_up() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session):
        first = await network.connected(1)
        deep = b"[" * 100_000
        ids = [
            first.deliver("$iothub/twin/PATCH/properties/desired/?$version=2", deep, qos=1),
            first.deliver("$iothub/methods/POST/reboot/?$rid=1", deep, qos=1),
            first.deliver("devices/other/messages/devicebound/", b"x", qos=1),
            first.deliver("devices/dev1/messages/devicebound/%zz", b"x", qos=1),
        ]
        assert first.acknowledged == ids
        assert session.connected
