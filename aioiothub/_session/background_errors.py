"""Errors the client recovers from on its own, as typed events for ``client.errors()``.

A lost connection, a refused reconnect, a consumer falling behind, a failed token renewal: the
client deals with each (it reconnects, leaves a message for redelivery, retries) and the
application carries on. Applications still want to count and alert on them, so each is reported as
a frozen event on every ``async for error in client.errors()`` loop, and logged on the
``aioiothub`` logger (which prints nothing unless the application configures logging).

How each event reaches every loop, with a bounded backlog, is
:class:`~aioiothub._session.error_stream.BackgroundErrors`'s job.

Example:
    >>> async def alert(client):
    ...     async for error in client.errors():
    ...         metrics.increment(type(error).__name__)
    ...         if isinstance(error, ReconnectFailed) and error.return_code == 3:
    ...             page_someone(error)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aioiothub.exceptions import ConnectError, ConnectionLostError, IoTHubError, OutboxError, ProtocolError

__all__ = [
    "BackgroundError",
    "ConnectionDropped",
    "ConsumerFellBehind",
    "DesiredResyncFailed",
    "ErrorsDropped",
    "MalformedMessage",
    "MethodNotHandled",
    "OutboxDeliveryFailed",
    "OutboxMessagesDropped",
    "OutboxMessagesExpired",
    "ReconnectFailed",
    "RenewalFailed",
]

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


@dataclass(frozen=True, slots=True)
class OutboxMessagesExpired(BackgroundError):
    """Messages in the outbox reached their time to live undelivered and were dropped.

    Attributes:
        count: how many.
        ttl: the outbox's time to live, in seconds.
    """

    count: int
    ttl: float

    def describe(self) -> str:
        return f"{self.count} outbox message(s) expired undelivered after {self.ttl:g} s (ttl) and were dropped"


@dataclass(frozen=True, slots=True)
class OutboxMessagesDropped(BackgroundError):
    """The outbox was full (``when_full="drop_oldest"``): its oldest pending messages were dropped.

    Attributes:
        count: how many.
    """

    count: int

    def describe(self) -> str:
        return f"the outbox was full: its {self.count} oldest pending message(s) were dropped undelivered"


@dataclass(frozen=True, slots=True)
class OutboxDeliveryFailed(BackgroundError):
    """Reading the outbox to deliver it failed (the disk refused); it is tried again.

    Attributes:
        error: the :class:`~aioiothub.OutboxError`.
        retry_in: seconds until the next attempt.
    """

    error: OutboxError
    retry_in: float

    def describe(self) -> str:
        return f"could not read the outbox to deliver it ({self.error}); retrying in {self.retry_in:.1f} s"
