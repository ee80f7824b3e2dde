"""What the hub keeps for back ends to take: delivery feedback and file-upload notifications.

Theory of operation
-------------------
IoT Hub offers its back ends two hub-wide queues over AMQP, ``/messages/serviceBound/feedback`` and
``/messages/serviceBound/filenotifications``. Receivers compete: each item goes to one of them, and
it is gone only once that receiver accepts it. :class:`ServiceBoundQueue` is one such queue. A
reader :meth:`~ServiceBoundQueue.take` s up to a batch of the oldest items; they are then *lent* to
it -- no other reader gets them -- until it :meth:`~ServiceBoundQueue.settle` s the loan: accepted
(or rejected) items are gone, released ones go back to the front, in their order, for the next
reader. A reader whose link or connection ends without settling releases what it holds. The queue
is bounded: past its size the oldest pending item is dropped, as the hub drops what nobody reads.
"""

from __future__ import annotations

import datetime
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from aioiothub.emulator.hub.values import Broadcast, iso_time

__all__ = ["DEFAULT_SERVICE_BOUND_LIMIT", "FileNotification", "Loan", "ServiceBoundQueue"]

logger = logging.getLogger("aioiothub.emulator")

DEFAULT_SERVICE_BOUND_LIMIT: Final = 10_000
"""How many items a service-bound queue holds before it drops the oldest."""

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class FileNotification:
    """A finished file upload, as IoT Hub announces it on ``/messages/serviceBound/filenotifications``.

    Attributes:
        device_id: the device that uploaded.
        blob_uri: the blob's URL, without a SAS.
        blob_name: ``{deviceId}/{name}``.
        last_updated_time: when the blob was last written (UTC).
        blob_size_in_bytes: the blob's size.
        enqueued_time: when the device's notification arrived (UTC).
    """

    device_id: str
    blob_uri: str
    blob_name: str
    last_updated_time: datetime.datetime
    blob_size_in_bytes: int
    enqueued_time: datetime.datetime

    def as_dict(self) -> dict[str, Any]:
        """The notification's JSON object, with IoT Hub's field names."""
        return {
            "deviceId": self.device_id,
            "blobUri": self.blob_uri,
            "blobName": self.blob_name,
            "lastUpdatedTime": iso_time(self.last_updated_time),
            "blobSizeInBytes": self.blob_size_in_bytes,
            "enqueuedTimeUtc": iso_time(self.enqueued_time),
        }


@dataclass(eq=False, slots=True)
class Loan(Generic[Item]):
    """Items taken by one reader and not yet settled, oldest first."""

    items: list[Item]
    settled: bool = False


class ServiceBoundQueue(Generic[Item]):
    """One hub-wide queue of items for competing back-end readers (see the module docstring).

    Args:
        limit: how many pending items are kept; the oldest goes when one more arrives.
    """

    __slots__ = ("_added", "_dropped", "_limit", "_pending")

    def __init__(self, limit: int = DEFAULT_SERVICE_BOUND_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        self._limit = limit
        self._pending: deque[Item] = deque()
        self._added = Broadcast()
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """How many items were dropped unread because the queue was full."""
        return self._dropped

    def put(self, item: Item) -> None:
        """Add ``item`` for the next reader, and wake the readers."""
        if len(self._pending) >= self._limit:
            self._pending.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % self._limit == 0:  # said now and then, not per item
                logger.warning("a service-bound queue is full: %d unread item(s) dropped so far", self._dropped)
        self._pending.append(item)
        self._added.notify()

    def take(self, limit: int) -> Loan[Item] | None:
        """Lend up to ``limit`` of the oldest items to a reader; ``None`` when there are none."""
        if not self._pending or limit < 1:
            return None
        count = min(limit, len(self._pending))
        return Loan([self._pending.popleft() for _ in range(count)])

    def settle(self, loan: Loan[Item], *, keep: bool) -> None:
        """End ``loan``: its items are gone when ``keep`` is false, else back at the front in order."""
        if loan.settled:
            return
        loan.settled = True
        if keep:
            self._pending.extendleft(reversed(loan.items))
            self._added.notify()

    async def wait(self) -> None:
        """Sleep until an item is added or given back."""
        await self._added.wait()
