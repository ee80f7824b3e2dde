"""An in-memory transport and a hand-driven clock, for deterministic tests of the session's logic.

:class:`FakeNetwork` plays the hub's side of every connection the session makes: the test decides
whether a connect succeeds, sees each publish and subscription, completes PUBACKs, delivers
inbound publishes and drops connections. :class:`FakeClock` moves only when the test advances it,
so renewal, back-off and liveness deadlines happen exactly when the test says. Tests wait for
what they expect with :meth:`FakeNetwork.until` (woken by every change), never by sleeping.

Integration tests never use these: they run the real transports against the emulator.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio

from aioiothub.exceptions import ConnectionLostError
from aioiothub.transports.base import ConnectParameters, InboundPublish, MessageHandler

#: Generous bound for waiting on something that happens at once; only hit when a test fails.
STEP = 2.0


class FakeClock:
    """Wall and monotonic time that move only in :meth:`advance`."""

    def __init__(self, wall_start: float = 1_700_000_000.0) -> None:
        self._wall_start = wall_start
        self.elapsed = 0.0
        self._waiters: list[tuple[float, anyio.Event]] = []

    def time(self) -> float:
        return self._wall_start + self.elapsed

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = self._register(seconds)
        try:
            await event.wait()
        finally:
            self._waiters = [entry for entry in self._waiters if entry[1] is not event]

    async def wait(self, future: asyncio.Future[Any], seconds: float) -> bool:
        if future.done():
            return True
        event = self._register(max(seconds, 0.0))
        future.add_done_callback(lambda _: event.set())
        try:
            await event.wait()
        finally:
            self._waiters = [entry for entry in self._waiters if entry[1] is not event]
        return future.done()

    def _register(self, seconds: float) -> anyio.Event:
        event = anyio.Event()
        self._waiters.append((self.elapsed + seconds, event))
        return event

    @property
    def deadlines(self) -> list[float]:
        """When the pending waits on this clock end (in :attr:`elapsed` time)."""
        return sorted(deadline for deadline, _ in self._waiters)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every wait whose deadline has come."""
        self.elapsed += seconds
        for deadline, event in list(self._waiters):
            if deadline <= self.elapsed:
                event.set()


@dataclass(slots=True)
class Sent:
    """One PUBLISH a fake connection was asked to send."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    acknowledged: asyncio.Future[None]


@dataclass(slots=True)
class FakeConnection:
    """One connection as the fake hub sees it (and the ``Transport`` the session uses)."""

    network: FakeNetwork
    parameters: ConnectParameters
    on_message: MessageHandler
    lost: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    published: list[Sent] = field(default_factory=list)
    subscriptions: list[list[tuple[str, int]]] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    pings: int = 0
    #: ``None`` while the link is healthy (the hub answers keep-alive pings at once, so something was
    #: always "just received"); the time of the last packet once the test made the link go silent.
    heard_at: float | None = None
    entered: bool = False
    closed_cleanly: bool = False

    # --- the Transport protocol ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        network = self.network
        await network.connects_allowed.wait()
        if network.refusals:
            error = network.refusals.popleft()
            self._lose("refused")
            network.changed()
            raise error
        self.entered = True
        network.changed()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.lost.done():
            self.closed_cleanly = True
        self._lose("closed")
        self.network.changed()

    @property
    def connected(self) -> bool:
        return self.entered and not self.lost.done()

    @property
    def last_received(self) -> float:
        now = self.network.clock.monotonic()
        return now if self.heard_at is None else self.heard_at

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> asyncio.Future[None]:
        if self.lost.done():
            raise ConnectionLostError("not connected")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if qos == 0:
            future.set_result(None)
        self.published.append(Sent(topic, payload, qos, retain, future))
        self.network.changed()
        return future

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        if self.lost.done():
            raise ConnectionLostError("not connected")
        self.subscriptions.append(list(filters))
        self.network.changed()
        if self.network.subscribe_failures:
            self.network.subscribe_failures -= 1
            raise ConnectionLostError("subscribe failed: Operation timed out")
        if self.network.unanswered_subscribes:
            # No SUBACK, and no error when the connection drops either (as aiomqtt until its timeout).
            self.network.unanswered_subscribes -= 1
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        return [min(qos, 1) for _, qos in filters]

    def acknowledge(self, message: InboundPublish) -> None:
        if message.qos == 1 and not self.lost.done():
            self.acknowledged.append(message.packet_id)
            self.network.changed()

    def ping(self) -> None:
        self.pings += 1
        self.network.changed()

    def abort(self, reason: str) -> None:
        self._lose(reason)
        self.network.changed()

    # --- what the test does as the hub ------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes = b"", *, qos: int = 0) -> int:
        """Send a PUBLISH to the client; returns its packet id."""
        packet_id = next(self.network.packet_ids)
        self._heard()
        self.on_message(InboundPublish(topic, payload, qos, packet_id))
        return packet_id

    def ack(self, index: int) -> None:
        """Complete the PUBACK of the ``index``-th QoS 1 publish."""
        sent = self.published[index]
        if not sent.acknowledged.done():
            self._heard()
            sent.acknowledged.set_result(None)

    def go_silent(self) -> None:
        """From now on nothing arrives from the hub (a half-open link), unless the test says so."""
        self.heard_at = self.network.clock.monotonic()

    def _heard(self) -> None:
        if self.heard_at is not None:
            self.heard_at = self.network.clock.monotonic()

    def drop(self, reason: str = "dropped by the test") -> None:
        """End the connection as a network failure would."""
        self._lose(reason)
        self.network.changed()

    def _lose(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_exception(ConnectionLostError(reason))
            self.lost.exception()
        for sent in self.published:
            if not sent.acknowledged.done():
                sent.acknowledged.set_exception(ConnectionLostError(reason))
                sent.acknowledged.exception()


class FakeNetwork:
    """Hands out :class:`FakeConnection` objects and lets a test wait for what they do."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.connections: list[FakeConnection] = []
        self.refusals: deque[BaseException] = deque()
        self.subscribe_failures = 0
        #: How many coming SUBSCRIBEs get no SUBACK at all.
        self.unanswered_subscribes = 0
        #: Cleared by a test to hold every connect attempt until it is set again.
        self.connects_allowed = anyio.Event()
        self.connects_allowed.set()
        self.packet_ids = itertools.count(1)
        self._changed = anyio.Event()

    def factory(self, parameters: ConnectParameters, on_message: MessageHandler) -> FakeConnection:
        """The ``TransportFactory`` the session is given."""
        connection = FakeConnection(self, parameters, on_message)
        self.connections.append(connection)
        return connection

    @property
    def current(self) -> FakeConnection:
        """The newest connection."""
        return self.connections[-1]

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool], what: str = "the expected state") -> None:
        """Wait (bounded) until ``condition()`` holds; re-checked on every change and loop turn."""
        with anyio.fail_after(STEP):
            while not condition():
                with anyio.move_on_after(0.01):
                    await self._changed.wait()

    async def connected(self, count: int) -> FakeConnection:
        """Wait until the ``count``-th connection is up and return it."""
        await self.until(lambda: len(self.connections) >= count and self.connections[count - 1].connected)
        return self.connections[count - 1]
