"""The built-in Event Hubs-compatible endpoint's log: every device-to-cloud message, partitioned.

Theory of operation
-------------------
IoT Hub routes each device-to-cloud message to one partition of its built-in event hub, chosen from
the sending device's id, so that one device's messages keep their order. :class:`EventLog` does the
same: :meth:`EventLog.append` takes the record the telemetry store kept, picks the partition by a
stable hash of the device id, and gives the event the partition's next sequence number (from 0), an
offset (the bytes stored before it in that partition, as Event Hubs counts them) and the record's
enqueued time. Retention is bounded in events per partition and in age; the oldest go first, and
sequence numbers and offsets never move.

Readers (the AMQP receive links of :mod:`aioiothub.emulator.amqp`) keep their own place as a
sequence number: :meth:`Partition.start` turns an Event Hubs selector (offset, sequence number or
enqueued time, inclusive or not, or ``@latest``) into one, :meth:`Partition.events_from` reads from
it, and :meth:`EventLog.wait` sleeps until the next append anywhere. Consumer groups do not change
what is stored; the log only knows their names, ``$Default`` and the configured ones.

With a state directory the log is also the write buffer of
:class:`~aioiothub.emulator.storage.event_store.EventStore`: it takes what is new in each partition
(:meth:`Partition.events_since`) a batch at a time, and at start puts the kept events back
(:meth:`Partition.restore`), numbering on from where the partition was.
"""

from __future__ import annotations

import datetime
import itertools
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from aioiothub.emulator.hub.telemetry import TelemetryRecord
from aioiothub.emulator.hub.values import Broadcast, now_utc

__all__ = [
    "DEFAULT_CONSUMER_GROUP",
    "Event",
    "EventLog",
    "MessageSource",
    "Partition",
    "PartitionStart",
    "parse_selector",
]

DEFAULT_CONSUMER_GROUP: Final = "$Default"

MessageSource = Literal["Telemetry", "twinChangeEvents", "deviceLifecycleEvents"]
"""``iothub-message-source``: what produced an event."""

# Event Hubs selector filters, as azure-eventhub writes them.
_SELECTOR = re.compile(
    r"^amqp\.annotation\.x-opt-(?P<field>offset|sequence-number|enqueued-time)\s*(?P<op>>=|>)\s*'(?P<value>[^']*)'$"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One event in a partition.

    Attributes:
        sequence_number: its number in the partition, from 0.
        offset: the bytes stored in the partition before it.
        enqueued_time: when the hub accepted the message (UTC).
        record: the message as the hub received it.
        source: ``iothub-message-source``: ``"Telemetry"`` for device-to-cloud messages,
            ``"twinChangeEvents"`` and ``"deviceLifecycleEvents"`` for the hub's notifications.
    """

    sequence_number: int
    offset: int
    enqueued_time: datetime.datetime
    record: TelemetryRecord
    source: MessageSource = "Telemetry"


@dataclass(frozen=True, slots=True)
class PartitionStart:
    """Where a reader starts, as an Event Hubs selector says it.

    Attributes:
        field: ``"offset"``, ``"sequence-number"``, ``"enqueued-time"`` (milliseconds since the epoch),
            or ``"latest"`` (only events appended from now on).
        value: the selector's value (``-1`` offset: from the beginning).
        inclusive: ``>=`` rather than ``>``.
    """

    field: Literal["offset", "sequence-number", "enqueued-time", "latest"]
    value: int = 0
    inclusive: bool = False


LATEST: Final = PartitionStart("latest")


def parse_selector(selector: str | None) -> PartitionStart:
    """The start an ``apache.org:selector-filter:string`` names (none or ``@latest``: the end).

    Example:
        >>> parse_selector("amqp.annotation.x-opt-offset > '-1'")
        PartitionStart(field='offset', value=-1, inclusive=False)

    Raises:
        ValueError: the selector is not one Event Hubs accepts.
    """
    if selector is None or selector.strip() in ("", "@latest"):
        return LATEST
    match = _SELECTOR.match(selector.strip())
    if match is None:
        raise ValueError(f"unsupported selector filter {selector!r}")
    raw = match["value"]
    if raw == "@latest":
        return LATEST
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"the selector's value {raw!r} is not an integer") from None
    fields: dict[str, Literal["offset", "sequence-number", "enqueued-time"]] = {
        "offset": "offset",
        "sequence-number": "sequence-number",
        "enqueued-time": "enqueued-time",
    }
    return PartitionStart(fields[match["field"]], value, match["op"] == ">=")


def _milliseconds(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


class Partition:
    """One partition's events, oldest first (see the module docstring)."""

    __slots__ = ("_events", "_max_age", "_next_offset", "_next_sequence", "identifier")

    def __init__(self, identifier: str, *, max_events: int, max_age: datetime.timedelta) -> None:
        self.identifier = identifier
        self._events: deque[Event] = deque(maxlen=max_events)
        self._max_age = max_age
        self._next_sequence = 0
        self._next_offset = 0

    def append(self, record: TelemetryRecord, source: MessageSource) -> Event:
        event = Event(self._next_sequence, self._next_offset, record.enqueued_time, record, source)
        self._events.append(event)
        self._next_sequence += 1
        self._next_offset += max(len(record.body), 1)
        return event

    def expire(self, now: datetime.datetime) -> None:
        """Drop the events older than the retention."""
        oldest_kept = now - self._max_age
        while self._events and self._events[0].enqueued_time < oldest_kept:
            self._events.popleft()

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next event will get."""
        return self._next_sequence

    @property
    def next_offset(self) -> int:
        """The offset the next event will get."""
        return self._next_offset

    @property
    def first_kept(self) -> int:
        """The sequence number of the oldest event kept (:attr:`next_sequence_number` when none is)."""
        return self._events[0].sequence_number if self._events else self._next_sequence

    def events_since(self, sequence_number: int) -> list[Event]:
        """The events kept from ``sequence_number`` on, oldest first.

        Read from the newest end, so taking the latest few of a long partition costs only those few.
        """
        count = self._next_sequence - max(sequence_number, self.first_kept)
        if count <= 0:
            return []
        newest = list(itertools.islice(reversed(self._events), count))
        newest.reverse()
        return newest

    def restore(self, events: Sequence[Event], *, next_sequence: int, next_offset: int) -> None:
        """Put back events loaded from a store, oldest first, and number on from ``next_sequence``.

        Raises:
            RuntimeError: the partition already holds events.
        """
        if self._events or self._next_sequence:
            raise RuntimeError(f"partition {self.identifier} is not empty: restore() must come first")
        self._events.extend(events)
        self._next_sequence = next_sequence
        self._next_offset = next_offset

    @property
    def first(self) -> Event | None:
        """The oldest event kept, if any."""
        return self._events[0] if self._events else None

    @property
    def last(self) -> Event | None:
        """The newest event, if any is kept."""
        return self._events[-1] if self._events else None

    def start(self, where: PartitionStart) -> int:
        """The sequence number of the first event a reader starting at ``where`` receives."""
        if where.field == "latest":
            return self._next_sequence
        for event in self._events:
            if _after(event, where):
                return event.sequence_number
        return self._next_sequence

    def events_from(self, sequence_number: int, limit: int) -> Iterator[Event]:
        """Up to ``limit`` events from ``sequence_number`` on (from the oldest kept if it expired)."""
        first = self._events[0].sequence_number if self._events else self._next_sequence
        index = max(sequence_number - first, 0)
        for position in range(index, min(index + limit, len(self._events))):
            yield self._events[position]


def _after(event: Event, where: PartitionStart) -> bool:
    if where.field == "offset":
        mark = event.offset
    elif where.field == "sequence-number":
        mark = event.sequence_number
    else:
        mark = _milliseconds(event.enqueued_time)
    return mark >= where.value if where.inclusive else mark > where.value


class EventLog:
    """The hub's built-in event hub: partitions of events and the names of its consumer groups.

    Example:
        >>> log = EventLog(partition_count=2)
        >>> log.partition_ids
        ['0', '1']

    Args:
        partition_count: how many partitions (IoT Hub's default is 4).
        consumer_groups: consumer groups besides ``$Default``.
        retention_events: events kept per partition; the oldest go first.
        retention: how long an event is kept.
    """

    def __init__(
        self,
        *,
        partition_count: int = 4,
        consumer_groups: Iterable[str] = (),
        retention_events: int = 100_000,
        retention: datetime.timedelta = datetime.timedelta(days=1),
    ) -> None:
        for name, value, low in (("partition_count", partition_count, 1), ("retention_events", retention_events, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int of at least {low}, got {value!r}")
        if partition_count > 32:
            raise ValueError(f"partition_count must be at most 32 (as IoT Hub allows), got {partition_count}")
        if not isinstance(retention, datetime.timedelta) or retention <= datetime.timedelta(0):
            raise ValueError(f"retention must be a positive timedelta, got {retention!r}")
        self.partitions = [
            Partition(str(index), max_events=retention_events, max_age=retention) for index in range(partition_count)
        ]
        self.retention_events = retention_events
        """Events kept per partition."""
        self.retention = retention
        """How long an event is kept."""
        self.consumer_groups = {DEFAULT_CONSUMER_GROUP}
        for group in consumer_groups:
            self.add_consumer_group(group)
        self.created_at = now_utc()
        self._appended = Broadcast()

    @property
    def partition_ids(self) -> list[str]:
        """``["0", "1", ...]``."""
        return [partition.identifier for partition in self.partitions]

    def add_consumer_group(self, name: str) -> None:
        """Allow readers in consumer group ``name``.

        Raises:
            ValueError: the name is empty or not one Event Hubs accepts.
        """
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9$][A-Za-z0-9._\-$]{0,49}", name):
            raise ValueError(f"consumer group {name!r} is not a valid consumer group name")
        self.consumer_groups.add(name)

    def partition_for(self, device_id: str) -> Partition:
        """The partition a device's messages go to: always the same one for a device id."""
        return self.partitions[zlib.crc32(device_id.encode()) % len(self.partitions)]

    def partition(self, identifier: str) -> Partition | None:
        """The partition with this id, or ``None``."""
        if identifier.isdigit() and int(identifier) < len(self.partitions) and str(int(identifier)) == identifier:
            return self.partitions[int(identifier)]
        return None

    def append(self, record: TelemetryRecord, source: MessageSource = "Telemetry") -> Event:
        """Add a message to its device's partition; call :meth:`appended` after a batch."""
        partition = self.partition_for(record.device_id)
        partition.expire(record.enqueued_time)
        return partition.append(record, source)

    def appended(self) -> None:
        """Wake every reader waiting in :meth:`wait`."""
        self._appended.notify()

    async def wait(self) -> None:
        """Sleep until the next :meth:`appended`."""
        await self._appended.wait()
