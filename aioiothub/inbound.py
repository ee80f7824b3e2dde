"""Bounded buffers between the dispatcher and the application's ``async for`` loops.

The dispatcher runs synchronously for each inbound PUBLISH and must never wait, so it *offers*
each item to a bounded anyio memory stream and learns at once whether there was room; what
happens when there is not (left unacknowledged, re-read from the twin, answered with 503) is the
session's decision. Buffers are created on first use: thousands of clients in one process each
need only the kinds they consume.

Cloud-to-device and module-input messages travel as :class:`Delivery` values that remember the
connection they arrived on, because their PUBACK must go back on that very connection -- after a
reconnect the hub redelivers anything the old connection left unacknowledged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aioiothub.message import Message
from aioiothub.methods import MethodRequest
from aioiothub.transports.base import InboundPublish, Transport

__all__ = ["Buffer", "Delivery", "InboundStreams"]

T = TypeVar("T")


class Buffer(Generic[T]):
    """A bounded inbound buffer: the dispatcher offers without waiting, consumers iterate."""

    __slots__ = ("receive", "send", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.send: MemoryObjectSendStream[T]
        self.receive: MemoryObjectReceiveStream[T]
        self.send, self.receive = anyio.create_memory_object_stream[T](size)

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

    async def items(self) -> AsyncIterator[T]:
        """Iterate until the buffer is closed; several consumers share the items between them."""
        with self.receive.clone() as receive:
            async for item in receive:
                yield item

    def close(self) -> None:
        """End every consumer's iteration."""
        self.send.close()
        self.receive.close()


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message waiting for its consumer, acknowledged on its own connection once taken."""

    message: Message
    inbound: InboundPublish
    connection: Transport

    def acknowledge(self) -> None:
        """Send the PUBACK (nothing if that connection is gone: the hub will redeliver)."""
        self.connection.acknowledge(self.inbound)


class InboundStreams:
    """The four kinds of inbound traffic a client can consume, each in its own bounded buffer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._desired: Buffer[dict[str, Any]] | None = None
        self._methods: Buffer[MethodRequest] | None = None
        self._cloud: Buffer[Delivery] | None = None
        # Module input messages go to the consumer of their input name, else to the catch-all (None).
        self._inputs: dict[str | None, Buffer[Delivery]] = {}
        self._closed = False

    def _new(self, kind: type[T]) -> Buffer[T]:
        # ``kind`` only names the item type for the type checker.
        buffer: Buffer[T] = Buffer(self.size)
        if self._closed:
            buffer.close()
        return buffer

    @property
    def desired(self) -> Buffer[dict[str, Any]]:
        """Desired-property patches."""
        if self._desired is None:
            self._desired = self._new(dict)
        return self._desired

    @property
    def methods(self) -> Buffer[MethodRequest]:
        """Direct method requests."""
        if self._methods is None:
            self._methods = self._new(MethodRequest)
        return self._methods

    @property
    def cloud(self) -> Buffer[Delivery]:
        """Cloud-to-device messages."""
        if self._cloud is None:
            self._cloud = self._new(Delivery)
        return self._cloud

    def input_buffer(self, input_name: str | None) -> Buffer[Delivery]:
        """The buffer of one module input (``None``: inputs nobody asked for by name).

        Messages for an input that arrived before it had a consumer of its own wait in the
        catch-all; they move to the input's buffer when it is created.
        """
        buffer = self._inputs.get(input_name)
        if buffer is not None:
            return buffer
        buffer = self._inputs[input_name] = self._new(Delivery)
        if input_name is not None and None in self._inputs:
            catch_all = self._inputs[None]
            others: list[Delivery] = []
            while True:
                try:
                    delivery = catch_all.receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if delivery.message.input_name == input_name:
                    buffer.offer(delivery)
                else:
                    others.append(delivery)
            for delivery in others:
                catch_all.offer(delivery)
        return buffer

    def buffer_for_input(self, input_name: str) -> Buffer[Delivery]:
        """Where a message for ``input_name`` goes: its own consumer's buffer, else the catch-all."""
        return self._inputs.get(input_name) or self.input_buffer(None)

    def close(self) -> None:
        """End every iteration (the client closed or failed)."""
        self._closed = True
        for buffer in (self._desired, self._methods, self._cloud, *self._inputs.values()):
            if buffer is not None:
                buffer.close()
