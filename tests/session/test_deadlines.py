"""Every send has a deadline: kept by one shared timer on a live connection, and across reconnects."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aioiothub._session.in_flight import InFlightPublishes
from aioiothub.exceptions import SendTimeoutError
from tests.fakes import FakeNetwork
from tests.session.session_helpers import make_session, running

pytestmark = pytest.mark.anyio

SENT_LATE = r"the message was sent but the hub did not acknowledge it \(PUBACK\) within 0\.05 s \(request_timeout\)"
NOT_SENT = r"the message was not sent: there was no connection to the hub for 0\.05 s \(request_timeout\)"


async def test_a_send_never_acknowledged_times_out_with_a_message() -> None:
    network = FakeNetwork()
    session = make_session(network, request_timeout=0.05)
    async with running(session):
        await network.connected(1)
        with pytest.raises(SendTimeoutError, match=SENT_LATE) as excinfo:
            await session.publish(session.protocol.telemetry(b"x", {}))
        assert excinfo.value.sent is True
        assert isinstance(excinfo.value, TimeoutError)  # existing `except TimeoutError` still catches it
        assert session._window._value == session.settings.max_in_flight


async def test_a_send_waiting_for_a_connection_times_out_from_when_it_started() -> None:
    network = FakeNetwork()
    session = make_session(network, request_timeout=0.05)
    async with running(session):
        first = await network.connected(1)
        network.connects_allowed = anyio.Event()
        first.drop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(SendTimeoutError, match=NOT_SENT) as excinfo:
            await session.publish(session.protocol.telemetry(b"x", {}))
        assert excinfo.value.sent is False
        assert 0.05 <= loop.time() - started < 1.0
        network.connects_allowed.set()


async def test_the_in_flight_table_holds_about_one_window_and_fails_only_what_is_late() -> None:
    loop = asyncio.get_running_loop()
    table = InFlightPublishes(0.05, loop.time)
    answered = [loop.create_future() for _ in range(1000)]
    for future in answered:
        table.add(future)
        future.set_result(None)
    late: asyncio.Future[None] = loop.create_future()
    table.add(late)
    assert len(table._entries) == 1  # the answered ones are dropped as new ones come
    assert table.oldest_since() is not None
    with pytest.raises(TimeoutError):
        await late
    assert table.oldest_since() is None
    table.close()
