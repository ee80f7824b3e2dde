"""Bounded buffers between the dispatcher and the application's ``async for`` loops.

The dispatcher runs synchronously for each inbound PUBLISH and must never wait, so it *offers*
each item to a bounded anyio memory stream and learns at once whether there was room; what
happens when there is not (left unacknowledged, re-read from the twin, answered with 503) is the
session's decision. Buffers are created on first use: thousands of clients in one process each
need only the kinds they consume.

Cloud-to-device and module-input messages travel as :class:`Delivery` values that remember the
connection they arrived on, because their PUBACK must go back on that very connection -- after a
reconnect the hub redelivers anything the old connection left unacknowledged. Module inputs and
direct methods can be consumed by name (``input_messages("input1")``, ``method_requests("reboot")``):
:class:`RoutedBuffers` keeps a buffer per name with a consumer and a catch-all for the rest, each
for exactly as long as a loop iterates over it.

Several consumers of one buffer share its items: each item goes to exactly one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aioiothub._session.methods import MethodRequest
from aioiothub.message import Message
from aioiothub.transports.base import InboundPublish, Transport

__all__ = ["Buffer", "Delivery", "InboundStreams", "RoutedBuffers"]

T = TypeVar("T")


class Buffer(Generic[T]):
    """A bounded inbound buffer: the dispatcher offers without waiting, consumers iterate."""

    __slots__ = ("_closed", "_room", "receive", "send", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.send: MemoryObjectSendStream[T]
        self.receive: MemoryObjectReceiveStream[T]
        self.send, self.receive = anyio.create_memory_object_stream[T](size)
        self._room: anyio.Event | None = None
        self._closed = False

    def offer(self, item: T) -> bool:
        """Queue ``item`` if there is room; ``False`` when the buffer is full (or closed)."""
        try:
            self.send.send_nowait(item)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    @property
    def has_room(self) -> bool:
        """Whether :meth:`offer` would succeed now."""
        return self.send.statistics().current_buffer_used < self.size

    @property
    def room(self) -> int:
        """How many items :meth:`offer` would take now, one after another."""
        return max(self.size - self.send.statistics().current_buffer_used, 0)

    async def wait_for_room(self) -> None:
        """Wait until an item fits (or the buffer is closed), without queueing anything.

        A producer that must decide *what* to queue at the moment it queues it (the desired resync:
        a notification handled in between would otherwise overtake an older patch) waits here and
        then offers synchronously.
        """
        while not self.has_room and not self._closed:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def _made_room(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def items(self) -> AsyncIterator[T]:
        """Iterate until the buffer is closed; several consumers share the items between them.

        The consumers share the one receive stream rather than each holding a clone: an iteration
        the application abandons (a cancelled ``async for``) then leaves nothing open behind it.
        """
        receive = self.receive
        while True:
            try:
                item = await receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if self._room is not None:  # a producer waits for room (the desired resync): rarely
                self._made_room()
            yield item

    def close(self) -> None:
        """End every consumer's iteration."""
        self._closed = True
        self.send.close()
        self.receive.close()
        self._made_room()


class Delivery:
    """A received message and the PUBACK that completes it, sent once, on the connection it came on.

    The message's :meth:`~aioiothub.Message.acknowledge` calls :meth:`acknowledge` here; so does the
    session when the consumer takes the message in the default (automatic) mode.
    """

    __slots__ = ("_connection", "_inbound", "_result", "message")

    def __init__(self, inbound: InboundPublish, connection: Transport) -> None:
        self._inbound = inbound
        self._connection = connection
        self._result: bool | None = None
        self.message: Message

    def acknowledge(self) -> bool:
        """Send the PUBACK once; ``False`` when that connection is gone (the hub will redeliver).

        Packet ids are reused once acknowledged, so a second PUBACK could complete another message:
        later calls only repeat the first answer.
        """
        if self._result is None:
            connection = self._connection
            # Not ``connected``: a message can arrive (and be handled) while the connection is
            # still being set up, and its PUBACK goes out then too.
            self._result = not connection.lost.done()
            connection.acknowledge(self._inbound)
        return self._result


class RoutedBuffers(Generic[T]):
    """Buffers of named items (module inputs, direct methods): one per name that a consumer is
    iterating over, and a catch-all (``None``) for the names without one.

    A buffer lives exactly as long as some consumer iterates over it (:meth:`join` to
    :meth:`leave`): an item is never routed to a loop that has ended. What happens to items that no
    consumer takes depends on ``park``:

    * ``park=True`` (module inputs: the hub keeps an unacknowledged message queued): they wait,
      unacknowledged, in the catch-all until a consumer of their name or a catch-all consumer
      appears; a consumer that appears for a name takes its waiting items with it.
    * ``park=False`` (direct methods: the service caller is waiting for an answer): :meth:`route`
      returns ``None`` and the caller answers at once; items left in a buffer whose last consumer
      leaves go to the catch-all consumer if there is one, else back to the caller of :meth:`leave`.

    Args:
        size: the bound of each buffer.
        name_of: the name an item is routed by.
        park: whether items without a consumer wait (see above).
    """

    __slots__ = ("_buffers", "_closed", "_consumers", "_name_of", "_park", "_size")

    def __init__(self, size: int, name_of: Callable[[T], str], *, park: bool) -> None:
        self._size = size
        self._name_of = name_of
        self._park = park
        self._buffers: dict[str | None, Buffer[T]] = {}
        self._consumers: dict[str | None, int] = {}
        self._closed = False

    def join(self, name: str | None) -> Buffer[T]:
        """A consumer of ``name`` (``None``: every name without its own) starts; the buffer it reads."""
        self._consumers[name] = self._consumers.get(name, 0) + 1
        buffer = self._buffers.get(name)
        if buffer is not None:
            return buffer
        buffer = self._buffers[name] = _new_buffer(self._size, closed=self._closed)
        catch_all = self._buffers.get(None)
        if name is not None and catch_all is not None:
            for item in self._drain(catch_all):
                if self._name_of(item) == name:
                    buffer.offer(item)
                else:
                    catch_all.offer(item)
        return buffer

    def leave(self, name: str | None) -> list[T]:
        """A consumer of ``name`` ended; returns the items nobody is left to take (``park=False`` only).

        When it was the last consumer of ``name``, its buffer goes away: waiting items move to the
        catch-all (its consumer, or with ``park``, its waiting room); with ``park=False`` and no
        catch-all consumer (or when the catch-all itself ends), they are returned.
        """
        count = self._consumers.get(name, 0) - 1
        if count > 0:
            self._consumers[name] = count
            return []
        self._consumers.pop(name, None)
        if name is None and self._park:
            return []  # the catch-all stays as the waiting room of unconsumed items
        buffer = self._buffers.pop(name, None)
        if buffer is None:
            return []
        unclaimed: list[T] = []
        for item in self._drain(buffer):
            routed = self.route(self._name_of(item))
            if routed is None or not routed[1].offer(item):
                unclaimed.append(item)
        buffer.close()
        return unclaimed

    def buffer(self, name: str | None) -> Buffer[T] | None:
        """The buffer of ``name``'s consumers (``None``: the catch-all), if there is one now."""
        return self._buffers.get(name)

    def consumers(self, name: str | None) -> int:
        """How many loops iterate over ``name`` (``None``: the catch-all) now."""
        return self._consumers.get(name, 0)

    @staticmethod
    def _drain(buffer: Buffer[T]) -> list[T]:
        items: list[T] = []
        while True:
            try:
                items.append(buffer.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return items

    def route(self, name: str) -> tuple[str | None, Buffer[T]] | None:
        """Where an item for ``name`` goes: its consumer's buffer, else the catch-all.

        Returns:
            The buffer's name (``None`` for the catch-all) and the buffer; ``None`` when no consumer
            takes it and items do not wait (``park=False``).
        """
        buffer = self._buffers.get(name)
        if buffer is not None:
            return name, buffer
        buffer = self._buffers.get(None)
        if buffer is None:
            if not self._park:
                return None
            buffer = self._buffers[None] = _new_buffer(self._size, closed=self._closed)
        return None, buffer

    def close(self) -> None:
        """End every consumer's iteration."""
        self._closed = True
        for buffer in self._buffers.values():
            buffer.close()


def _new_buffer(size: int, *, closed: bool) -> Buffer[Any]:
    buffer: Buffer[Any] = Buffer(size)
    if closed:
        buffer.close()
    return buffer


class InboundStreams:
    """The kinds of inbound traffic a client can consume, each in bounded buffers created on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._desired: Buffer[dict[str, Any]] | None = None
        self._cloud: Buffer[Delivery] | None = None
        self.methods: RoutedBuffers[MethodRequest] = RoutedBuffers(size, _method_name, park=False)
        self.inputs: RoutedBuffers[Delivery] = RoutedBuffers(size, _input_name, park=True)
        self._closed = False

    @property
    def desired(self) -> Buffer[dict[str, Any]]:
        """Desired-property patches."""
        if self._desired is None:
            self._desired = _new_buffer(self.size, closed=self._closed)
        return self._desired

    @property
    def cloud(self) -> Buffer[Delivery]:
        """Cloud-to-device messages."""
        if self._cloud is None:
            self._cloud = _new_buffer(self.size, closed=self._closed)
        return self._cloud

    def close(self) -> None:
        """End every iteration (the client closed or failed)."""
        self._closed = True
        for buffer in (self._desired, self._cloud):
            if buffer is not None:
                buffer.close()
        self.methods.close()
        self.inputs.close()


def _method_name(request: MethodRequest) -> str:
    return request.name


def _input_name(delivery: Delivery) -> str:
    return delivery.message.input_name or ""
