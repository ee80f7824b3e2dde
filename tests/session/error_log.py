"""Collecting a session's background errors (``client.errors()``) in a test."""

from __future__ import annotations

from typing import TypeVar

import anyio.abc

from aioiothub._session.background_errors import BackgroundError
from aioiothub._session.session import HubSession
from tests.fakes import FakeNetwork

E = TypeVar("E", bound=BackgroundError)


class ErrorLog:
    """One errors() loop, run in the test's task group; what it took is in :attr:`events`."""

    def __init__(self, session: HubSession, network: FakeNetwork) -> None:
        self.session = session
        self.network = network
        self.events: list[BackgroundError] = []

    async def start(self, tasks: anyio.abc.TaskGroup) -> ErrorLog:
        """Start the loop and return once it is registered (events from now on reach it)."""
        tasks.start_soon(self._consume)
        await self.network.until(lambda: self.session.errors.loops == 1, "the errors() loop to start")
        return self

    async def _consume(self) -> None:
        async for event in self.session.errors.events():
            self.events.append(event)
            self.network.changed()

    def of(self, kind: type[E]) -> list[E]:
        """The events of one kind, in order."""
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type[E], count: int = 1) -> list[E]:
        """Wait (bounded) until ``count`` events of ``kind`` arrived, and return them."""
        await self.network.until(lambda: len(self.of(kind)) >= count, f"{count} {kind.__name__} event(s)")
        return self.of(kind)
