"""Every error the session recovers from reaches errors(), typed, as it happens (fake transport)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from aioiothub._auth.credentials import SasTokenCredential
from aioiothub._session.background_errors import (
    ConnectionDropped,
    ConsumerFellBehind,
    DesiredResyncFailed,
    MalformedMessage,
    MethodNotHandled,
    ReconnectFailed,
)
from aioiothub.exceptions import AuthenticationError, ConnectError, ConnectionLostError, CredentialError
from aioiothub.options import ReconnectPolicy
from aioiothub.protocol import topics
from aioiothub.protocol.sas import generate_sas_token
from tests.fakes import FakeNetwork
from tests.session.error_log import ErrorLog
from tests.session.session_helpers import KEY, answer_twin, make_session, notify_desired, running, twin_requests

pytestmark = pytest.mark.anyio


async def test_a_drop_and_refused_reconnects_are_reported_with_cause_and_return_code() -> None:
    network = FakeNetwork()
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=8.0, multiplier=2.0, jitter=0)
    session = make_session(network, reconnect=policy)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        network.refusals.extend([ConnectError("refused (CONNACK 3)", return_code=3), ConnectError("no route")])
        first.drop("the hub went away")
        (dropped,) = await log.wait_for(ConnectionDropped)
        assert str(dropped.error) == "the hub went away"
        assert dropped.reconnecting
        network.clock.advance(1.0)  # delay(0) after the drop
        await log.wait_for(ReconnectFailed)
        network.clock.advance(2.0)  # delay(1) after the first failure
        refused, unreachable = await log.wait_for(ReconnectFailed, 2)
        assert (refused.return_code, refused.attempt, refused.retry_in) == (3, 1, 2.0)
        assert (unreachable.return_code, unreachable.attempt, unreachable.retry_in) == (None, 2, 4.0)
        network.clock.advance(4.0)
        await network.connected(4)
    assert [type(event).__name__ for event in log.events] == ["ConnectionDropped", "ReconnectFailed", "ReconnectFailed"]


async def test_a_dead_link_is_reported_as_a_drop_with_the_liveness_reason() -> None:
    network = FakeNetwork()
    session = make_session(network, keepalive=60)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        first.go_silent()
        await network.until(lambda: network.clock.deadlines == [10.0])
        network.clock.advance(90)
        (dropped,) = await log.wait_for(ConnectionDropped)
        assert str(dropped.error).startswith("the connection is dead: ")
        await network.connected(2)


async def test_a_planned_renewal_reconnect_is_not_an_error() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        await network.connected(1)
        await network.until(lambda: network.clock.deadlines == [10.0])
        network.clock.advance(3480)
        second = await network.connected(2)
        assert network.connections[0].closed_cleanly
        second.drop()
        await log.wait_for(ConnectionDropped)
    assert len(log.events) == 1


async def test_the_fatal_refusal_is_reported_before_it_ends_the_client() -> None:
    network = FakeNetwork()
    session = make_session(network)
    log = ErrorLog(session, network)

    async def refused() -> None:
        async with running(session) as tasks:
            await log.start(tasks)
            first = await network.connected(1)
            network.refusals.append(AuthenticationError("not authorized (CONNACK 5)", return_code=5))
            first.drop()
            await anyio.sleep_forever()

    with pytest.raises(AuthenticationError):
        await refused()
    (failed,) = log.of(ReconnectFailed)
    assert (failed.return_code, failed.retry_in) == (5, None)


async def test_giving_up_is_reported_then_raised() -> None:
    network = FakeNetwork()
    session = make_session(network, reconnect=ReconnectPolicy(initial_delay=0, max_delay=0, max_attempts=2))
    log = ErrorLog(session, network)

    async def refused() -> None:
        async with running(session) as tasks:
            await log.start(tasks)
            first = await network.connected(1)
            network.refusals.extend([ConnectError("refused", return_code=3)] * 2)
            first.drop()
            await anyio.sleep_forever()

    with pytest.raises(ConnectionLostError, match="gave up reconnecting after 2 attempts"):
        await refused()
    assert [(event.attempt, event.retry_in) for event in log.of(ReconnectFailed)] == [(1, 0.0), (2, None)]


async def test_an_expired_token_that_cannot_be_renewed_is_reported_and_fatal() -> None:
    network = FakeNetwork()
    clock = network.clock
    credential = SasTokenCredential(generate_sas_token("hub.example.net/devices/dev1", KEY, int(clock.time()) + 60))
    session = make_session(network, credential=credential)
    log = ErrorLog(session, network)

    async def expire() -> None:
        async with running(session) as tasks:
            await log.start(tasks)
            first = await network.connected(1)
            clock.advance(61)
            first.drop("the hub ended the connection: the SAS token expired")
            await anyio.sleep_forever()

    with pytest.raises(CredentialError, match="expired"):
        await expire()
    (failed,) = log.of(ReconnectFailed)
    assert isinstance(failed.error, CredentialError)


async def test_consumers_falling_behind_are_reported_per_stream_with_counts() -> None:
    network = FakeNetwork()
    session = make_session(network, inbound_buffer_size=1)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        # Loops that were started and are not taking anything (each subscribes, then waits).
        cloud, reboots = session.cloud_messages(), session.method_requests("reboot")
        tasks.start_soon(anext, cloud)
        tasks.start_soon(anext, reboots)
        await network.until(lambda: len(first.subscriptions) == 2)
        await anyio.wait_all_tasks_blocked()
        for index in range(4):
            first.deliver(f"devices/dev1/messages/devicebound/%24.mid=m{index}", b"x", qos=1)
        for index in range(3):
            first.deliver(f"$iothub/methods/POST/reboot/?$rid={index}", b"{}")
        first.deliver("$iothub/methods/POST/unknown/?$rid=9", b"{}")
        await network.until(lambda: len(log.events) == 3 and len(first.published) == 2)
    assert log.events == [
        # The first message was taken by the blocked loop, the second waits, two did not fit.
        ConsumerFellBehind("cloud_messages", 2),
        ConsumerFellBehind("method_requests", 1, "reboot"),
        MethodNotHandled("unknown", "9"),
    ]
    assert str(log.events[2]) == "method 'unknown' answered with 503: no method_requests() loop takes it"
    answers = [sent.topic for sent in first.published]
    assert answers == ["$iothub/methods/res/503/?$rid=2", "$iothub/methods/res/503/?$rid=9"]


async def test_a_desired_patch_that_does_not_fit_and_a_failed_twin_read_are_reported() -> None:
    network = FakeNetwork()
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=1.0, jitter=0)
    session = make_session(network, inbound_buffer_size=1, reconnect=policy)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        patches = session.desired_patches()
        tasks.start_soon(anext, patches)
        await network.until(lambda: len(twin_requests(first)) == 1)
        answer_twin(first, twin_requests(first)[0], {"$version": 1}, {"$version": 1})
        for version in (2, 3, 4):  # 2 is taken, 3 waits, 4 does not fit
            notify_desired(first, {"n": version, "$version": version})
        await log.wait_for(ConsumerFellBehind)
        await network.until(lambda: len(twin_requests(first)) == 2)
        reading = twin_requests(first)[1]
        first.deliver(topics.twin_response_topic(500, topics.parse_twin_request_topic(reading.topic).request_id))
        (failed,) = await log.wait_for(DesiredResyncFailed)
        assert failed.retry_in == 1.0
        assert "500" in str(failed.error)
    assert log.events[0] == ConsumerFellBehind("desired_property_patches")


async def test_malformed_messages_are_reported_with_their_topic() -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        first.deliver("$iothub/methods/POST/reboot/?$rid=1", b"{not json", qos=1)
        first.deliver("devices/other/messages/devicebound/", b"x", qos=1)
        reported = await log.wait_for(MalformedMessage, 2)
    assert [event.topic for event in reported] == [
        "$iothub/methods/POST/reboot/?$rid=1",
        "devices/other/messages/devicebound/",
    ]
    assert "payload of method 'reboot'" in str(reported[0].error)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
