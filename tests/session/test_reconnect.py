"""The supervisor over a fake transport: reconnects, in-flight work, subscriptions, back-off, auth."""

from __future__ import annotations

import anyio
import pytest

from aioiothub._session.twin import Twin
from aioiothub.exceptions import AuthenticationError, ConnectError, ConnectionLostError
from aioiothub.options import ReconnectPolicy
from aioiothub.protocol import topics
from tests.fakes import FakeNetwork
from tests.session.session_helpers import answer_twin, make_session, request_id, running, twin_requests

pytestmark = pytest.mark.anyio


async def test_telemetry_and_twin_requests_in_flight_are_resent_on_the_next_connection() -> None:
    network = FakeNetwork()
    session = make_session(network)
    twins: list[Twin] = []
    async with running(session) as tasks:
        first = await network.connected(1)

        async def read_twin() -> None:
            twins.append(await session.get_twin())

        async with anyio.create_task_group() as work:
            for body in (b"a", b"b", b"c"):
                work.start_soon(session.publish, session.protocol.telemetry(body, {}))
            work.start_soon(read_twin)
            await network.until(lambda: len(first.published) == 4)
            sent = {entry.payload: index for index, entry in enumerate(first.published) if entry.qos == 1}
            first.ack(sent[b"a"])
            get = twin_requests(first)[0]
            first.drop()

            second = await network.connected(2)
            # Subscriptions come back before anything else, then what was not acknowledged.
            assert second.subscriptions[0] == [(topics.TWIN_RESPONSE_SUBSCRIPTION, 0)]
            await network.until(lambda: len(second.published) == 3)
            assert sorted(entry.payload for entry in second.published if entry.qos == 1) == [b"b", b"c"]
            resent = twin_requests(second)
            assert [entry.topic for entry in resent] == [get.topic]  # the same $rid
            for index, entry in enumerate(second.published):
                if entry.qos == 1:
                    second.ack(index)
            answer_twin(second, resent[0], {"interval": 5, "$version": 3}, {"$version": 1})
        assert tasks is not None
    assert twins == [Twin(desired={"interval": 5, "$version": 3}, reported={"$version": 1})]
    assert session.protocol.pending_twin_requests == []


async def test_a_suback_that_does_not_come_while_restoring_is_retried_not_fatal() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session):
        first = await network.connected(1)
        await session.ensure_subscribed(topics.METHODS_SUBSCRIPTION, 0)
        network.subscribe_failures = 1
        first.drop()
        third = await network.connected(3)
        await network.until(lambda: session.connected)
        assert third.subscriptions == [[(topics.METHODS_SUBSCRIPTION, 0)]]
        assert network.connections[1].lost.done()


async def test_connection_states_report_every_drop_and_every_return() -> None:
    network = FakeNetwork()
    session = make_session(network)
    seen: list[bool] = []
    async with running(session) as tasks:

        async def watch() -> None:
            async for up in session.connection_states():
                seen.append(up)

        tasks.start_soon(watch)
        await network.connected(1)
        await anyio.lowlevel.checkpoint()
        for count in (2, 3):
            network.current.drop()
            await network.connected(count)
            await network.until(lambda count=count: len(seen) == 1 + 2 * (count - 1))  # type: ignore[misc]
    assert seen == [True, False, True, False, True]


async def test_refused_reconnects_back_off_by_the_policy() -> None:
    network = FakeNetwork()
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=4.0, multiplier=2.0, jitter=0)
    session = make_session(network, reconnect=policy)
    async with running(session):
        first = await network.connected(1)
        network.refusals.extend([ConnectError("refused", return_code=3)] * 2)
        first.drop()
        clock = network.clock
        # After the drop: delay(0) = 1 s, then failures 1 and 2 wait delay(1) = 2 s and delay(2) = 4 s.
        for wait in (1.0, 2.0, 4.0):
            await network.until(lambda wait=wait: clock.deadlines == [clock.elapsed + wait])  # type: ignore[misc]
            clock.advance(wait)
        await network.connected(4)
        assert clock.elapsed == 7.0


async def test_gives_up_after_the_policy_s_attempts_and_fails_what_waits() -> None:
    network = FakeNetwork()
    session = make_session(network, reconnect=ReconnectPolicy(initial_delay=0, max_delay=0, max_attempts=2))

    async def refuse_every_reconnect() -> None:
        async with running(session):
            first = await network.connected(1)
            network.refusals.extend([ConnectError("refused", return_code=3)] * 5)
            first.drop()
            await anyio.sleep_forever()

    with pytest.raises(ConnectionLostError, match="gave up reconnecting after 2 attempts"):
        await refuse_every_reconnect()
    with pytest.raises(ConnectionLostError):
        await session.current()


async def test_authentication_error_on_the_first_connect_is_raised() -> None:
    network = FakeNetwork()
    network.refusals.append(AuthenticationError("not authorized", return_code=5))
    session = make_session(network)
    with pytest.raises(AuthenticationError):
        async with running(session):
            pytest.fail("the session must not start")


async def test_authentication_error_on_a_reconnect_ends_the_session_and_fails_waiting_requests() -> None:
    network = FakeNetwork()
    session = make_session(network)
    errors: list[BaseException] = []

    async def read_twin() -> None:
        try:
            await session.get_twin()
        except ConnectionLostError as exc:
            errors.append(exc)

    async def refuse_the_reconnect() -> None:
        async with running(session) as tasks:
            first = await network.connected(1)
            tasks.start_soon(read_twin)
            await network.until(lambda: len(twin_requests(first)) == 1)
            network.refusals.append(AuthenticationError("not authorized", return_code=5))
            first.drop()
            await anyio.sleep_forever()

    with pytest.raises(AuthenticationError):
        await refuse_the_reconnect()
    assert len(errors) == 1
    assert session.protocol.pending_twin_requests == []


async def test_a_late_twin_response_for_a_forgotten_request_is_ignored() -> None:
    network = FakeNetwork()
    session = make_session(network, request_timeout=0.05)
    async with running(session):
        first = await network.connected(1)
        with pytest.raises(TimeoutError, match=r"twin get request within 0.05 s \(request_timeout\)"):
            await session.get_twin()
        assert session.protocol.pending_twin_requests == []
        get = twin_requests(first)[0]
        answer_twin(first, get, {"$version": 1}, {"$version": 1})  # nobody waits: dropped quietly
        assert request_id(get) == "1"
        assert session.connected


async def test_a_subscription_without_suback_is_given_up_when_its_connection_drops() -> None:
    network = FakeNetwork()
    session = make_session(network, request_timeout=30.0)
    twins: list[Twin] = []
    async with running(session) as tasks:
        first = await network.connected(1)
        network.unanswered_subscribes = 1

        async def read_twin() -> None:
            twins.append(await session.get_twin())

        tasks.start_soon(read_twin)
        await network.until(lambda: first.subscriptions == [[(topics.TWIN_RESPONSE_SUBSCRIPTION, 0)]])
        first.drop()
        second = await network.connected(2)
        # Restored on the new connection, and the request sent there, without waiting for a timeout.
        await network.until(lambda: len(twin_requests(second)) == 1)
        answer_twin(second, twin_requests(second)[0], {"$version": 2}, {"$version": 1})
        await network.until(lambda: len(twins) == 1)
    assert twins == [Twin(desired={"$version": 2}, reported={"$version": 1})]
