"""Errors the client recovers from on its own, as typed events for ``client.errors()``.

A lost connection, a refused reconnect, a consumer falling behind, a failed token renewal: the
client deals with each (it reconnects, leaves a message for redelivery, retries) and the
application carries on. Applications still want to count and alert on them, so each is reported as
a frozen event on every ``async for error in client.errors()`` loop, and logged on the
``aioiothub`` logger (which prints nothing unless the application configures logging).

Each loop has a bounded backlog (:data:`ERRORS_BACKLOG` events). When it is full the oldest event
is dropped, and the loop receives one :class:`ErrorsDropped` with the count before the events that
remain. Consecutive :class:`ConsumerFellBehind` events for the same stream are merged into one
with a running count, so a flood of messages cannot flood the backlog.

Example:
    >>> async def alert(client):
    ...     async for error in client.errors():
    ...         metrics.increment(type(error).__name__)
    ...         if isinstance(error, ReconnectFailed) and error.return_code == 3:
    ...             page_someone(error)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal

import anyio

from aioiothub.exceptions import ConnectError, ConnectionLostError, IoTHubError, ProtocolError

__all__ = [
    "ERRORS_BACKLOG",
    "BackgroundError",
    "BackgroundErrors",
    "ConnectionDropped",
    "ConsumerFellBehind",
    "DesiredResyncFailed",
    "ErrorsDropped",
    "MalformedMessage",
    "MethodNotHandled",
    "ReconnectFailed",
    "RenewalFailed",
    "StreamName",
]

_log = logging.getLogger("aioiothub")

ERRORS_BACKLOG = 64
"""Events each ``errors()`` loop may have waiting before the oldest is dropped."""

StreamName = Literal["cloud_messages", "input_messages", "method_requests", "desired_property_patches"]
"""The client iterator a :class:`ConsumerFellBehind` is about."""


@dataclass(frozen=True, slots=True)
class BackgroundError:
    """Base of every event ``client.errors()`` yields."""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """One line saying what happened and what the client did about it."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ConnectionDropped(BackgroundError):
    """The connection ended unexpectedly (not a planned token-renewal reconnect).

    Attributes:
        error: why, as the :class:`~aioiothub.ConnectionLostError` the transport reported (a dead
            link found by the liveness check says so).
        reconnecting: whether the client reconnects (``False`` with ``reconnect=False``).
    """

    error: ConnectionLostError
    reconnecting: bool = True

    def describe(self) -> str:
        then = "; reconnecting" if self.reconnecting else "; reconnecting is disabled"
        return f"connection lost: {self.error}{then}"


@dataclass(frozen=True, slots=True)
class ReconnectFailed(BackgroundError):
    """A reconnect attempt failed (refused by the hub, or the network did not get through).

    Attributes:
        error: the :class:`~aioiothub.ConnectError` (``AuthenticationError`` for CONNACK 4/5) or
            :class:`~aioiothub.ConnectionLostError` of the attempt.
        attempt: how many attempts in a row have failed.
        retry_in: seconds until the next attempt; ``None`` when the client gives up (the error is
            then raised from the ``async with`` block).
    """

    error: IoTHubError
    attempt: int
    retry_in: float | None

    @property
    def return_code(self) -> int | None:
        """The CONNACK return code when the hub refused the connection, else ``None``."""
        return self.error.return_code if isinstance(self.error, ConnectError) else None

    def describe(self) -> str:
        then = f"next in {self.retry_in:.1f} s" if self.retry_in is not None else "giving up"
        return f"reconnect attempt {self.attempt} failed ({self.error}); {then}"


@dataclass(frozen=True, slots=True)
class RenewalFailed(BackgroundError):
    """Getting a new SAS token failed (``renew_sas_token`` raised or returned something unusable).

    Attributes:
        error: what the renewal raised.
        retry_in: seconds until the next try, while the current token is still valid; ``None``
            when it has expired (the client then retries as a failed reconnect).
    """

    error: Exception
    retry_in: float | None

    def describe(self) -> str:
        then = f"keeping the current token, retrying in {self.retry_in:.1f} s" if self.retry_in is not None else (
            "the current token has expired"
        )
        return f"SAS token renewal failed ({type(self.error).__name__}: {self.error}); {then}"


@dataclass(frozen=True, slots=True)
class ConsumerFellBehind(BackgroundError):
    """An ``async for`` loop did not keep up and its bounded buffer was full.

    What happens to what did not fit depends on the stream: cloud-to-device and input messages
    stay unacknowledged (the hub delivers them again after the next reconnect), method requests are
    answered with 503, desired patches are replaced by one patch computed from a twin reading.

    Attributes:
        stream: the iterator: ``"cloud_messages"``, ``"input_messages"``, ``"method_requests"`` or
            ``"desired_property_patches"``.
        count: how many items did not fit (consecutive events for one stream are merged).
        name: the input or method name the buffer is for, when it has one.
    """

    stream: StreamName
    count: int = 1
    name: str | None = None

    def describe(self) -> str:
        which = f"{self.stream}({self.name!r})" if self.name is not None else self.stream
        return f"{which} fell behind: {self.count} item(s) did not fit in its buffer"


@dataclass(frozen=True, slots=True)
class MethodNotHandled(BackgroundError):
    """A direct method arrived while no ``method_requests()`` loop could take it; it was answered 503.

    Attributes:
        method_name: the method invoked.
        request_id: the hub's ``$rid`` of the invocation.
    """

    method_name: str
    request_id: str

    def describe(self) -> str:
        return f"method {self.method_name!r} answered with 503: no method_requests() loop takes it"


@dataclass(frozen=True, slots=True)
class MalformedMessage(BackgroundError):
    """The hub sent something the client could not read; it was acknowledged and ignored.

    Attributes:
        topic: the topic it arrived on.
        error: what was wrong with it.
    """

    topic: str
    error: ProtocolError | ValueError

    def describe(self) -> str:
        return f"ignored a malformed message on {self.topic!r}: {self.error}"


@dataclass(frozen=True, slots=True)
class DesiredResyncFailed(BackgroundError):
    """Re-reading the twin to recover missed desired-property changes failed; it is retried.

    Attributes:
        error: why the reading failed.
        retry_in: seconds until the next reading.
    """

    error: Exception
    retry_in: float

    def describe(self) -> str:
        return f"could not re-read the twin ({self.error}); retrying in {self.retry_in:.1f} s"


@dataclass(frozen=True, slots=True)
class ErrorsDropped(BackgroundError):
    """This ``errors()`` loop fell behind: ``count`` older events were dropped unseen."""

    count: int

    def describe(self) -> str:
        return f"{self.count} background error event(s) were dropped: the errors() loop fell behind"


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
