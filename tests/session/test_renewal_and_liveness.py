"""SAS renewal and the liveness rule over a fake transport, on a clock the test moves."""

from __future__ import annotations

import pytest

from aioiothub._auth.credentials import SasTokenCredential, parse_sas_token
from aioiothub.protocol.sas import generate_sas_token
from tests.fakes import FakeConnection, FakeNetwork
from tests.session.session_helpers import KEY, make_session, running

pytestmark = pytest.mark.anyio

URI = "hub.example.net/devices/dev1"


def _expiry(connection: FakeConnection) -> int:
    assert connection.parameters.password is not None
    return parse_sas_token(connection.parameters.password).expiry


async def test_a_key_s_token_is_renewed_ahead_of_expiry_by_a_clean_reconnect() -> None:
    network = FakeNetwork()
    session = make_session(network)
    clock = network.clock
    async with running(session):
        first = await network.connected(1)
        assert _expiry(first) == int(clock.time()) + 3600
        # Renewal is due 120 s before expiry; the session wakes for exactly that moment.
        await network.until(lambda: clock.deadlines == [10.0])  # the next liveness check
        clock.advance(3479)
        await network.until(lambda: 3480.0 in clock.deadlines)
        assert len(network.connections) == 1
        clock.advance(1)
        second = await network.connected(2)
        assert first.closed_cleanly
        assert _expiry(second) == int(clock.time()) + 3600


async def test_a_renewable_token_is_renewed_once_per_lifetime_before_the_hub_drops_it() -> None:
    network = FakeNetwork()
    clock = network.clock
    issued: list[int] = []

    def renew() -> str:
        expiry = int(clock.time()) + 3600
        issued.append(expiry)
        return generate_sas_token(URI, KEY, expiry)

    credential = SasTokenCredential(generate_sas_token(URI, KEY, int(clock.time()) + 3600), renew=renew)
    session = make_session(network, credential=credential)
    async with running(session):
        first = await network.connected(1)
        for hour in (1, 2):
            await network.until(lambda: any(deadline > clock.elapsed for deadline in clock.deadlines))
            clock.advance(3480)
            connection = await network.connected(hour + 1)
            assert network.connections[hour - 1].closed_cleanly
            assert _expiry(connection) == issued[-1]
        assert len(issued) == 2
        assert len(network.connections) == 3  # one reconnect per hour, none forced by the hub
        assert first.parameters.password != network.current.parameters.password


async def test_a_token_that_cannot_be_renewed_is_used_until_the_hub_refuses_it() -> None:
    network = FakeNetwork()
    clock = network.clock
    credential = SasTokenCredential(generate_sas_token(URI, KEY, int(clock.time()) + 600))
    session = make_session(network, credential=credential)
    async with running(session):
        await network.connected(1)
        # No renewal deadline: the only wait on the clock is the liveness check.
        await network.until(lambda: len(clock.deadlines) == 1)
        assert clock.deadlines == [10.0]


async def test_a_half_open_link_is_detected_after_exactly_1_5_times_the_keep_alive() -> None:
    network = FakeNetwork()
    session = make_session(network, keepalive=60)
    clock = network.clock
    async with running(session):
        first = await network.connected(1)
        first.go_silent()
        await network.until(lambda: clock.deadlines == [10.0])
        clock.advance(89)
        await network.until(lambda: clock.deadlines == [90.0])
        assert first.connected
        clock.advance(1)
        await network.connected(2)
        assert not first.closed_cleanly  # aborted, not disconnected
        assert clock.elapsed == 90.0


async def test_an_overdue_puback_is_probed_and_a_silent_link_dropped() -> None:
    network = FakeNetwork()
    session = make_session(network, liveness_timeout=10.0)
    clock = network.clock
    async with running(session) as tasks:
        first = await network.connected(1)
        first.go_silent()
        tasks.start_soon(session.publish, session.protocol.telemetry(b"a", {}))
        await network.until(lambda: len(first.published) == 1)
        await network.until(lambda: clock.deadlines == [10.0])
        clock.advance(10)
        await network.until(lambda: first.pings == 1)
        await network.until(lambda: clock.deadlines == [20.0])
        clock.advance(10)
        second = await network.connected(2)
        assert not first.closed_cleanly
        # The message waiting for its PUBACK goes out again on the new connection.
        await network.until(lambda: [sent.payload for sent in second.published] == [b"a"])
        second.ack(0)


async def test_a_slow_hub_that_answers_the_probe_keeps_its_connection() -> None:
    network = FakeNetwork()
    session = make_session(network, liveness_timeout=10.0)
    clock = network.clock
    async with running(session) as tasks:
        first = await network.connected(1)
        first.go_silent()
        tasks.start_soon(session.publish, session.protocol.telemetry(b"a", {}))
        await network.until(lambda: len(first.published) == 1)
        await network.until(lambda: clock.deadlines == [10.0])
        clock.advance(10)
        await network.until(lambda: first.pings == 1)
        await network.until(lambda: clock.deadlines == [20.0])
        clock.advance(5)
        first.heard_at = clock.monotonic()  # the PINGRESP, 5 s later
        clock.advance(5)
        # Answered: no longer suspect. Still overdue, so probed again once the hub is silent as long.
        await network.until(lambda: clock.deadlines == [25.0])
        clock.advance(5)
        await network.until(lambda: first.pings == 2)
        assert first.connected
        first.ack(0)
        assert len(network.connections) == 1
