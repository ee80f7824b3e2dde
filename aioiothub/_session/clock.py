"""The session's sense of time, behind one small seam so that tests can drive it.

The session needs the wall clock (SAS tokens expire at a Unix time), the event loop's monotonic
clock (when a packet last arrived), and two ways to wait: a plain sleep (reconnect back-off) and a
wait for a future bounded by a timeout (the connection's end, or the next liveness check). Tests
substitute a clock whose time moves only when the test says so, which makes renewal and liveness
deterministic without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import anyio

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Time as the session sees it."""

    def time(self) -> float:
        """Wall-clock time in Unix seconds."""
        ...

    def monotonic(self) -> float:
        """The event loop's clock (``loop.time()``): what transports stamp received packets with."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    async def wait(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Wait until ``future`` is done or ``seconds`` passed; ``True`` when it is done.

        The future is left as it is (never cancelled) when the wait ends or is cancelled.
        """
        ...


class SystemClock:
    """The real clocks."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``loop.time()`` of the running loop."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep``."""
        await anyio.sleep(seconds)

    async def wait(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """``asyncio.wait`` on the one future, which unlike awaiting it leaves it intact when cancelled."""
        if not future.done():
            await asyncio.wait((future,), timeout=max(0.0, seconds))
        return future.done()
