"""How background errors reach the application: logged, and handed to every ``errors()`` loop.

Each loop has a bounded backlog (:data:`ERRORS_BACKLOG` events). When it is full the oldest event
is dropped, and the loop receives one :class:`~aioiothub.ErrorsDropped` with the count before the
events that remain. Consecutive :class:`~aioiothub.ConsumerFellBehind` events for the same stream
are merged into one with a running count, so a flood of messages cannot flood the backlog.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio

from aioiothub._session.background_errors import BackgroundError, ConsumerFellBehind, ErrorsDropped

__all__ = ["ERRORS_BACKLOG", "BackgroundErrors"]

_log = logging.getLogger("aioiothub")

ERRORS_BACKLOG = 64
"""Events each ``errors()`` loop may have waiting before the oldest is dropped."""


class _Listener:
    __slots__ = ("dropped", "events", "wake")

    def __init__(self) -> None:
        self.events: deque[BackgroundError] = deque()
        self.dropped = 0
        self.wake = anyio.Event()


class BackgroundErrors:
    """Logs each event and hands it to every ``errors()`` loop, each with a bounded backlog.

    Args:
        size: how many events each loop may have waiting.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._listeners: list[_Listener] = []
        self._closed = False

    @property
    def loops(self) -> int:
        """How many ``errors()`` loops are running."""
        return len(self._listeners)

    def report(self, event: BackgroundError, *, level: int = logging.WARNING) -> None:
        """Log ``event`` and queue it for every loop (never waits, never raises)."""
        _log.log(level, "%s", event.describe())
        for listener in self._listeners:
            events = listener.events
            last = events[-1] if events else None
            if (
                isinstance(event, ConsumerFellBehind)
                and isinstance(last, ConsumerFellBehind)
                and (last.stream, last.name) == (event.stream, event.name)
            ):
                events[-1] = replace(last, count=last.count + event.count)
            else:
                if len(events) >= self._size:
                    events.popleft()
                    listener.dropped += 1
                events.append(event)
            listener.wake.set()

    async def events(self) -> AsyncIterator[BackgroundError]:
        """Yield events reported from now on, until the client closes."""
        listener = _Listener()
        self._listeners.append(listener)
        try:
            while True:
                if listener.dropped:
                    dropped, listener.dropped = listener.dropped, 0
                    yield ErrorsDropped(dropped)
                elif listener.events:
                    yield listener.events.popleft()
                elif self._closed:
                    return
                else:
                    await listener.wake.wait()
                    listener.wake = anyio.Event()
        finally:
            self._listeners.remove(listener)

    def close(self) -> None:
        """End every loop once it has taken what is waiting."""
        self._closed = True
        for listener in self._listeners:
            listener.wake.set()
