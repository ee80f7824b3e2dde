"""The iterator behind ``client.connection_states()``: the state now, then each change as it happens.

A :class:`StateFeed` is registered the moment ``connection_states()`` is called, with the state at
that moment as its first item, so no change after the call is missed, and holds nothing that must
be closed: an iterator the application abandons is simply collected (the supervisor keeps only a
weak reference to it). Up to :data:`QUEUED_CHANGES` changes wait for a slow consumer; later ones
are not queued.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Self

__all__ = ["QUEUED_CHANGES", "StateFeed"]

QUEUED_CHANGES: Final = 16


class StateFeed:
    """Yields the current state, then ``True``/``False`` as the connection comes up and goes down.

    Ends when the client does.

    Args:
        up: the state when the feed is created (its first item).
    """

    __slots__ = ("__weakref__", "_closed", "_pending", "_waiter")

    def __init__(self, up: bool) -> None:
        self._pending: deque[bool] = deque((up,))
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def offer(self, up: bool) -> None:
        """A change happened (dropped when :data:`QUEUED_CHANGES` already wait)."""
        if len(self._pending) < QUEUED_CHANGES:
            self._pending.append(up)
            self._wake()

    def close(self) -> None:
        """The client closed or failed: iteration ends once the waiting changes are taken."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bool:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._pending.popleft()
