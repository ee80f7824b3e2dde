"""Cancelling any await leaves the session consistent: no pending $rid, no task, the window whole."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from aioiothub._session.methods import MethodRequest
from aioiothub._session.session import HubSession
from tests.fakes import FakeConnection, FakeNetwork
from tests.session.session_helpers import make_session, running, twin_requests

pytestmark = pytest.mark.anyio


async def _first(iterator: Any) -> Any:
    async for item in iterator:
        return item
    return None


async def _method_request(session: HubSession, connection: FakeConnection) -> MethodRequest:
    got: list[MethodRequest] = []

    async def take() -> None:
        got.append(await _first(session.method_requests()))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take)
        methods = session.streams.methods

        def waiting() -> bool:
            buffer = methods.buffer(None)
            return buffer is not None and buffer.receive.statistics().tasks_waiting_receive > 0

        await connection.network.until(waiting)
        connection.deliver("$iothub/methods/POST/reboot/?$rid=9", b"{}")
    return got[0]


Operation = Callable[[HubSession, FakeConnection], Awaitable[object]]


async def _send(session: HubSession, connection: FakeConnection) -> object:
    return await session.publish(session.protocol.telemetry(b"x", {}))


async def _get_twin(session: HubSession, connection: FakeConnection) -> object:
    return await session.get_twin()


async def _patch(session: HubSession, connection: FakeConnection) -> object:
    return await session.update_reported(b'{"a":1}')


async def _respond(session: HubSession, connection: FakeConnection) -> object:
    request = await _method_request(session, connection)
    return await request.respond(200, {"ok": True})


async def _desired(session: HubSession, connection: FakeConnection) -> object:
    return await _first(session.desired_patches())


async def _cloud(session: HubSession, connection: FakeConnection) -> object:
    return await _first(session.cloud_messages())


async def _wait_connected(session: HubSession, connection: FakeConnection) -> object:
    connection.network.connects_allowed = anyio.Event()  # the next connect waits until set
    connection.drop()
    return await session.current()


@pytest.mark.parametrize(
    "operation",
    [_send, _get_twin, _patch, _respond, _desired, _cloud, _wait_connected],
    ids=lambda operation: operation.__name__.strip("_"),
)
async def test_cancelling_an_operation_leaves_nothing_behind(operation: Operation) -> None:
    network = FakeNetwork()
    session = make_session(network)
    async with running(session):
        first = await network.connected(1)
        before = len(asyncio.all_tasks())
        published, subscribed = len(first.published), len(first.subscriptions)
        with anyio.CancelScope() as scope:

            async def cancel_once_waiting() -> None:
                await network.until(
                    lambda: len(first.published) > published
                    or len(first.subscriptions) > subscribed
                    or not first.connected
                )
                await anyio.sleep(0.01)  # let the operation reach its wait
                scope.cancel()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(cancel_once_waiting)
                await operation(session, first)
                pytest.fail(f"{operation.__name__} finished without an answer from the hub")
        assert scope.cancelled_caught
        assert session.protocol.pending_twin_requests == []
        assert session._window._value == session.settings.max_in_flight
        await anyio.lowlevel.checkpoint()
        assert len(asyncio.all_tasks()) <= before
        # The session still works afterwards.
        network.connects_allowed.set()
        await network.until(lambda: session.connected)
        connection = network.current
        sent_before = len(twin_requests(connection))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(session.get_twin)
            await network.until(lambda: len(twin_requests(connection)) > sent_before)
            get = twin_requests(connection)[-1]
            connection.deliver(get.topic.replace("GET", "res/200"), b'{"desired":{},"reported":{}}')
