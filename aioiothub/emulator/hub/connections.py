"""The table of live connections: one per identity, the waits on it, and the subscriptions that persist.

Theory of operation
-------------------
A connection is in the table from the moment the hub accepts it (:meth:`ConnectionTable.attach`)
until the hub stops routing to it. The hub reaches a connection only through this table, so leaving
the table is what ends its part in the hub: a C2D message, desired patch or method call made after
that does not go to it. There are two ways out:

* the hub ends it -- a newer connection of the same identity replaces it, its device is disabled,
  :meth:`ConnectionTable.drop` is called, or the emulator shuts down. The entry is removed first and
  the connection is told to close second, so the table is right the moment the call returns even
  though the socket closes asynchronously;
* the connection ends by itself (the client left, broke a rule, or stopped reading) and calls
  :meth:`ConnectionTable.detach`, which is a no-op when the hub already removed it.

Every change wakes :meth:`wait_connected`, :meth:`wait_disconnected` and :meth:`wait_subscribed`
through one :class:`~aioiothub.emulator.hub.values.Broadcast`; so does a subscription change
reported with :meth:`subscriptions_changed`.

What survives a reconnect with CleanSession=0 is the identity's granted subscriptions
(:class:`PersistentSubscriptions`); a CleanSession=1 connection gets a fresh set that is forgotten
when it closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import anyio

from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.values import Broadcast

__all__ = ["Connection", "ConnectionTable", "PersistentSubscriptions"]


class Connection(Protocol):
    """A live, accepted MQTT connection as the hub sees it."""

    @property
    def identity(self) -> Identity:
        """The identity the connection authenticated as."""
        ...

    def is_subscribed(self, topic_filter: str) -> bool:
        """Whether the connection holds exactly this subscription filter."""
        ...

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Send a QoS 0 PUBLISH; ``False`` when the connection is gone."""
        ...

    async def deliver_queued(self) -> None:
        """Send every queued cloud message not yet delivered on this connection."""
        ...

    def close(self, reason: str) -> None:
        """Close the connection without DISCONNECT (its will is published); ``reason`` is logged.

        From the moment this returns nothing more is written to the connection from the hub side;
        the socket itself may close later.
        """
        ...


@dataclass(slots=True, eq=False)
class PersistentSubscriptions:
    """What survives a reconnect with CleanSession=0: the granted subscriptions.

    Attributes:
        subscriptions: topic filter -> granted QoS.
        persistent: ``False`` for a CleanSession=1 connection (discarded when it closes).
    """

    subscriptions: dict[str, int] = field(default_factory=dict)
    persistent: bool = True


class ConnectionTable:
    """The hub's live connections, at most one per identity."""

    __slots__ = ("_changed", "_connections", "_persistent")

    def __init__(self) -> None:
        self._connections: dict[IdentityKey, Connection] = {}
        self._persistent: dict[IdentityKey, PersistentSubscriptions] = {}
        self._changed = Broadcast()

    # --- entering and leaving ----------------------------------------------------------------------

    def attach(self, connection: Connection, *, clean_session: bool) -> tuple[PersistentSubscriptions, bool]:
        """Register an accepted connection, replacing (closing) an older one of the same identity.

        Returns:
            ``(subscriptions, session present)``: the subscriptions to use and whether they were
            resumed from an earlier CleanSession=0 connection.
        """
        key = connection.identity.key
        older = self._connections.get(key)
        self._connections[key] = connection
        connection.identity.mark_connection_state()
        self._changed.notify()
        if older is not None and older is not connection:
            older.close("a new connection of the same identity replaced it")
        if clean_session:
            self._persistent.pop(key, None)
            return PersistentSubscriptions(persistent=False), False
        state = self._persistent.get(key)
        if state is not None:
            return state, True
        state = self._persistent[key] = PersistentSubscriptions()
        return state, False

    def detach(self, connection: Connection) -> None:
        """Forget a connection that ended by itself (a no-op when it already left the table)."""
        key = connection.identity.key
        if self._connections.get(key) is connection:
            del self._connections[key]
            connection.identity.mark_connection_state()
            self._changed.notify()

    def drop(self, key: IdentityKey, reason: str) -> bool:
        """Remove an identity's connection from the table, then close it; ``False`` when there was none."""
        connection = self._connections.pop(key, None)
        if connection is None:
            return False
        connection.identity.mark_connection_state()
        self._changed.notify()
        connection.close(reason)
        return True

    def drop_device(self, device_id: str, reason: str) -> None:
        """Drop the connections of a device and of all its modules."""
        for key in [key for key in self._connections if key[0] == device_id]:
            self.drop(key, reason)

    def forget(self, key: IdentityKey, reason: str) -> None:
        """Drop a deleted identity's connection and forget its persistent session."""
        self.drop(key, reason)
        self._persistent.pop(key, None)

    def drop_all(self, reason: str) -> None:
        """Drop every connection (the emulator is shutting down)."""
        for key in list(self._connections):
            self.drop(key, reason)

    # --- looking and waiting -----------------------------------------------------------------------

    def get(self, key: IdentityKey) -> Connection | None:
        """The identity's live connection, or ``None``."""
        return self._connections.get(key)

    def subscriptions_changed(self) -> None:
        """Wake :meth:`wait_subscribed` callers (a connection subscribed or unsubscribed)."""
        self._changed.notify()

    async def wait_connected(self, key: IdentityKey, timeout: float) -> None:  # noqa: ASYNC109 - see Hub
        """Wait until the identity has a connection; :class:`TimeoutError` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while key not in self._connections:
                await self._changed.wait()

    async def wait_disconnected(self, key: IdentityKey, timeout: float) -> None:  # noqa: ASYNC109 - see Hub
        """Wait until the identity has no connection; :class:`TimeoutError` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while key in self._connections:
                await self._changed.wait()

    async def wait_subscribed(self, key: IdentityKey, topic_filter: str, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the identity's connection holds ``topic_filter``; :class:`TimeoutError` after ``timeout``."""
        with anyio.fail_after(timeout):
            while True:
                connection = self._connections.get(key)
                if connection is not None and connection.is_subscribed(topic_filter):
                    return
                await self._changed.wait()
