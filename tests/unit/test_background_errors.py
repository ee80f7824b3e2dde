"""The errors() backlog: every loop sees every event, bounded, oldest dropped with a count."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from aioiothub._session.background_errors import (
    BackgroundError,
    ConnectionDropped,
    ConsumerFellBehind,
    ErrorsDropped,
    ReconnectFailed,
)
from aioiothub._session.error_stream import BackgroundErrors
from aioiothub.exceptions import AuthenticationError, ConnectError, ConnectionLostError

pytestmark = pytest.mark.anyio

STEP = 2.0


def _dropped(reason: str) -> ConnectionDropped:
    return ConnectionDropped(ConnectionLostError(reason))


Until = Callable[[int], Awaitable[None]]


@asynccontextmanager
async def listening(errors: BackgroundErrors) -> AsyncIterator[tuple[list[BackgroundError], Until]]:
    """Run one errors() loop; yields what it took and a wait for ``n`` items (deadline-bounded)."""
    taken: list[BackgroundError] = []
    changed = anyio.Event()

    async def consume() -> None:
        nonlocal changed
        async for event in errors.events():
            taken.append(event)
            changed.set()
            changed = anyio.Event()

    async def until(count: int) -> None:
        with anyio.fail_after(STEP):
            while len(taken) < count:
                await changed.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(consume)
        await anyio.wait_all_tasks_blocked()  # the loop is registered and waiting
        yield taken, until
        tasks.cancel_scope.cancel()


async def test_every_loop_sees_every_event_from_when_it_started() -> None:
    errors = BackgroundErrors(8)
    errors.report(_dropped("before anyone listened"))
    async with listening(errors) as (first, until_first), listening(errors) as (second, until_second):
        errors.report(_dropped("one"))
        errors.report(ReconnectFailed(ConnectError("refused", return_code=3), 1, 0.5))
        await until_first(2)
        await until_second(2)
    assert first == second
    assert [str(event) for event in first] == [
        "connection lost: one; reconnecting",
        "reconnect attempt 1 failed (refused); next in 0.5 s",
    ]
    assert isinstance(first[1], ReconnectFailed)
    assert first[1].return_code == 3


async def test_a_full_backlog_drops_the_oldest_and_says_how_many() -> None:
    errors = BackgroundErrors(3)
    async with listening(errors) as (taken, until):
        # Reported without yielding to the loop: they pile up in its backlog of 3.
        for number in range(6):
            errors.report(_dropped(str(number)))
        await until(4)
    assert taken[0] == ErrorsDropped(3)
    assert [str(event) for event in taken] == [
        "3 background error event(s) were dropped: the errors() loop fell behind",
        "connection lost: 3; reconnecting",
        "connection lost: 4; reconnecting",
        "connection lost: 5; reconnecting",
    ]


async def test_consecutive_fell_behind_events_of_one_stream_are_merged() -> None:
    errors = BackgroundErrors(2)
    async with listening(errors) as (taken, until):
        for _ in range(100):
            errors.report(ConsumerFellBehind("cloud_messages"))
        errors.report(ConsumerFellBehind("input_messages", 2, "input1"))
        errors.report(ConsumerFellBehind("input_messages", 1, "input1"))
        await until(2)
        errors.report(ConsumerFellBehind("input_messages", 1, "input1"))
        await until(3)
    assert taken == [
        ConsumerFellBehind("cloud_messages", 100),
        ConsumerFellBehind("input_messages", 3, "input1"),
        ConsumerFellBehind("input_messages", 1, "input1"),  # taken already: a new event
    ]


async def test_closing_ends_each_loop_after_what_is_waiting() -> None:
    errors = BackgroundErrors(4)
    ended = anyio.Event()
    taken: list[BackgroundError] = []

    async def consume() -> None:
        async for event in errors.events():
            taken.append(event)
        ended.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        errors.report(_dropped("a"))
        errors.report(ReconnectFailed(AuthenticationError("no", return_code=5), 2, None))
        errors.close()
        with anyio.fail_after(STEP):
            await ended.wait()
    assert str(taken[0]) == "connection lost: a; reconnecting"
    assert isinstance(taken[1], ReconnectFailed)
    assert str(taken[1]) == "reconnect attempt 2 failed (no); giving up"
    assert len(taken) == 2


def test_each_event_is_logged_on_the_aioiothub_logger(caplog: pytest.LogCaptureFixture) -> None:
    errors = BackgroundErrors(4)
    with caplog.at_level(logging.INFO, logger="aioiothub"):
        errors.report(ConsumerFellBehind("method_requests", 1, "reboot"))
        errors.report(_dropped("gone"), level=logging.INFO)
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        ("aioiothub", logging.WARNING, "method_requests('reboot') fell behind: 1 item(s) did not fit in its buffer"),
        ("aioiothub", logging.INFO, "connection lost: gone; reconnecting"),
    ]
