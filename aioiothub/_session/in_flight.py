"""The QoS 1 publishes waiting for their PUBACK: one table for their deadline and for liveness.

Every send of a client has the same timeout, so deadlines come in the order sends start. A deque
kept in that order with one ``loop.call_at`` for its head replaces a timer per message (what
``asyncio.timeout`` costs on every send); expired acknowledgement futures are failed with
:class:`TimeoutError` and the sender turns that into its own message. The same deque tells the
liveness rule since when the oldest publish has been waiting. Entries whose future is done are
dropped from the front whenever one is added, so with acknowledgements arriving in order (as MQTT
brokers send them) the deque holds about one in-flight window.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["InFlightPublishes"]


class InFlightPublishes:
    """Publishes waiting for their acknowledgement.

    Args:
        timeout: seconds after which a pending acknowledgement fails with :class:`TimeoutError`.
        clock: the clock liveness is judged by (``Clock.monotonic``), for :meth:`oldest_since`.
    """

    __slots__ = ("_clock", "_entries", "_loop", "_timeout", "_timer")

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._clock = clock
        # (sent at by ``clock``, deadline by the loop's clock, acknowledgement)
        self._entries: deque[tuple[float, float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, acknowledged: asyncio.Future[None]) -> None:
        """Track a publish just sent; its acknowledgement fails ``timeout`` seconds from now."""
        entries = self._entries
        while entries and entries[0][2].done():
            entries.popleft()
        deadline = self._loop.time() + self._timeout
        entries.append((self._clock(), deadline, acknowledged))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def oldest_since(self) -> float | None:
        """When the oldest publish still waiting was sent (by ``clock``), or ``None``."""
        entries = self._entries
        while entries and entries[0][2].done():
            entries.popleft()
        return entries[0][0] if entries else None

    def _expire(self) -> None:
        self._timer = None
        entries = self._entries
        now = self._loop.time()
        while entries:
            _, deadline, acknowledged = entries[0]
            if acknowledged.done():
                entries.popleft()
            elif deadline <= now:
                entries.popleft()
                acknowledged.set_exception(TimeoutError())
            else:
                self._timer = self._loop.call_at(deadline, self._expire)
                return

    def close(self) -> None:
        """Stop the timer; the futures are left as they are."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._entries.clear()
