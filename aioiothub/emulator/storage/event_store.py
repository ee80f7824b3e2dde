"""The built-in endpoint's events in a state directory: written in batches, read back at start.

Theory of operation
-------------------
Telemetry arrives at tens of thousands of messages a second, far too many for a transaction each, so
the :class:`~aioiothub.emulator.hub.event_log.EventLog` is its own write buffer and nothing is added
to the path a message takes in. :class:`EventStore` remembers, for each partition, the first sequence
number it has not written yet. :meth:`EventStore.run` sleeps until the log next wakes its readers,
then :data:`FLUSH_INTERVAL` more so that a batch gathers, and :meth:`EventStore.flush` takes what is
new in every partition and writes it in one transaction (``executemany``) to ``events.sqlite3`` in
the state directory (SQLite in WAL mode, ``synchronous=NORMAL``), with each partition's next
sequence number and offset, and deletes the events the log no longer keeps (retention in events and
in age), so the file holds what the log holds. The writing runs in a worker thread, one batch at a
time, so the event loop goes on serving devices meanwhile; the events it reads are immutable.

What a stop can lose:

* a clean stop -- leaving ``async with Emulator``, or Ctrl-C / SIGTERM for ``aioiothub-emulator`` --
  writes whatever is new before it returns: **nothing** is lost;
* a killed process (SIGKILL, a crash) loses the events appended since the last batch was committed:
  **the last unflushed batch**, at most :data:`FLUSH_INTERVAL` seconds of events plus the batch
  being written, and the next events get their sequence numbers again. Every committed batch
  survives; an operating-system crash or power loss may also take the last committed batches, as
  ``synchronous=NORMAL`` allows.

Events that retention pushed out of the log before they were written are not written at all.
Events appended while the emulator is not running (a twin changed before ``async with``) wait for
its next start, or are lost if it never starts.

At start :meth:`EventStore.restore` reads the events back into the empty log with their sequence
numbers, offsets and enqueued times -- except those older than the retention or beyond its count,
which it deletes -- and the partitions number on from where they were, even when every event has
expired, so a reader's checkpoint stays valid across the restart.
"""

from __future__ import annotations

import datetime
import json
import json.encoder
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, get_args

import anyio
import anyio.to_thread

from aioiothub.emulator.hub.event_log import Event, EventLog, MessageSource
from aioiothub.emulator.hub.telemetry import TelemetryRecord
from aioiothub.emulator.hub.values import now_utc

__all__ = ["EVENTS_DATABASE_NAME", "FLUSH_INTERVAL", "EventStore"]

EVENTS_DATABASE_NAME: Final = "events.sqlite3"

FLUSH_INTERVAL: Final = 0.2
"""Seconds a batch gathers after the first event appended since the last write."""

# One B-tree for the events: the key is the partition in the high bits and the sequence number in
# the low ones, so a partition's events are one key range (appends at its end, retention at its start).
_SEQUENCE_BITS: Final = 48
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (key INTEGER PRIMARY KEY, offset INTEGER NOT NULL,
    enqueued_us INTEGER NOT NULL, source TEXT NOT NULL, device_id TEXT NOT NULL, module_id TEXT,
    body BLOB NOT NULL, properties TEXT NOT NULL, system_properties TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (partition INTEGER PRIMARY KEY, next_sequence INTEGER NOT NULL,
    next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INSERT: Final = (
    "INSERT OR REPLACE INTO events (key, offset, enqueued_us, source, device_id, module_id, body, properties,"
    " system_properties) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND: Final = datetime.timedelta(microseconds=1)
_SOURCES: Final = frozenset(get_args(MessageSource))
_string: Final = json.encoder.encode_basestring  # a str as a JSON string literal (C-accelerated)

Batch = list[tuple[int, list[Event], int, int, int]]
"""What one write takes: ``(partition, new events, next sequence, next offset, first sequence kept)`` each."""


def _key(partition: int, sequence_number: int) -> int:
    return (partition << _SEQUENCE_BITS) | sequence_number


class _Encoder:
    """Rows for events; a topic's property mappings are shared by its records, so each is encoded once."""

    __slots__ = ("_moment", "_texts", "_us")

    def __init__(self) -> None:
        self._texts: dict[int, str] = {}
        self._moment: datetime.datetime | None = None
        self._us = 0

    def text(self, mapping: Mapping[str, str | None]) -> str:
        text = self._texts.get(id(mapping))  # the mappings outlive the batch: an id stays theirs
        if text is None:
            # A flat object of strings, written out directly: json.dumps costs several times more per
            # record, and a device that sets a fresh $.mid on every message gives every record its own.
            members = [
                f"{_string(name)}:{'null' if value is None else _string(value)}" for name, value in mapping.items()
            ]
            text = self._texts[id(mapping)] = "{" + ",".join(members) + "}"
        return text

    def row(self, partition: int, event: Event) -> tuple[Any, ...]:
        record = event.record
        if event.enqueued_time is not self._moment:  # one connection's batch shares one time
            self._moment = event.enqueued_time
            self._us = (event.enqueued_time - _EPOCH) // _MICROSECOND
        return (
            _key(partition, event.sequence_number),
            event.offset,
            self._us,
            event.source,
            record.device_id,
            record.module_id,
            record.body,
            self.text(record.properties),
            self.text(record.system_properties),
        )


class EventStore:
    """``events.sqlite3`` of a state directory, written in batches (see the module docstring).

    Example:
        >>> store = EventStore(Path("state"))  # doctest: +SKIP
        >>> store.restore(hub.core.events)  # doctest: +SKIP
        >>> task_group.start_soon(store.run)  # doctest: +SKIP

    Args:
        directory: the state directory (it must exist).
        interval: seconds a batch gathers before it is written.

    Raises:
        sqlite3.DatabaseError: the file is not a database of this emulator.
    """

    def __init__(self, directory: str | os.PathLike[str], *, interval: float = FLUSH_INTERVAL) -> None:
        path = Path(directory) / EVENTS_DATABASE_NAME
        if not path.exists():
            # Events carry what devices sent: readable by the owner only, as the state database is.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # isolation_level=None: every batch commits in the one transaction written for it.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._interval = interval
        self._log: EventLog | None = None
        # Per partition: the first sequence number not yet written, and the first kept on disk.
        self._written: list[int] = []
        self._pruned: list[int] = []

    def close(self) -> None:
        """Close the database (after a last :meth:`flush`)."""
        self._db.close()

    # --- start-up ---------------------------------------------------------------------------------

    def restore(self, log: EventLog) -> int:
        """Put the kept events back into ``log`` (empty, not yet used) and keep it written from now on.

        Events older than the log's retention, or beyond its count per partition, are deleted instead.

        Returns:
            How many events were restored.
        """
        oldest_kept = (now_utc() - log.retention - _EPOCH) // _MICROSECOND
        created = self._db.execute("SELECT value FROM log WHERE name = 'created_at'").fetchone()
        if created is not None:
            log.created_at = datetime.datetime.fromisoformat(created[0])
        else:
            self._commit([("INSERT INTO log (name, value) VALUES ('created_at', ?)", [(log.created_at.isoformat(),)])])
        states = {row[0]: (row[1], row[2]) for row in self._db.execute("SELECT * FROM partitions")}
        decoded: dict[str, Mapping[str, str | None]] = {}
        restored = 0
        for index, partition in enumerate(log.partitions):
            low, high = _key(index, 0), _key(index + 1, 0)
            rows = self._db.execute(
                "SELECT * FROM (SELECT key, offset, enqueued_us, source, device_id, module_id, body, properties,"
                " system_properties FROM events WHERE key >= ? AND key < ? AND enqueued_us >= ?"
                " ORDER BY key DESC LIMIT ?) ORDER BY key",
                (low, high, oldest_kept, log.retention_events),
            ).fetchall()
            events = [_event(row, decoded) for row in rows]
            next_sequence, next_offset = states.get(index, (0, 0))
            if events:  # a batch's events and its partition row commit together; this is belt and braces
                last = events[-1]
                next_sequence = max(next_sequence, last.sequence_number + 1)
                next_offset = max(next_offset, last.offset + max(len(last.record.body), 1))
            partition.restore(events, next_sequence=next_sequence, next_offset=next_offset)
            restored += len(events)
        self._log = log
        self._written = [partition.next_sequence_number for partition in log.partitions]
        self._pruned = [0] * len(log.partitions)
        self.flush()  # deletes on disk what retention did not restore
        return restored

    # --- writing ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write every batch as it gathers, until cancelled (run it in the emulator's task group)."""
        log = self._require_log()
        while True:
            if not self._has_new():
                await log.wait()
            await anyio.sleep(self._interval)
            batch = self._take()
            if batch:
                # Not abandoned on cancellation: a stop waits for the batch, then flush() writes the rest.
                await anyio.to_thread.run_sync(self._write, batch)

    def flush(self) -> int:
        """Write everything new now, on the calling thread (at a stop); return how many events."""
        batch = self._take()
        if batch:
            self._write(batch)
        return sum(len(events) for _, events, _, _, _ in batch)

    def _require_log(self) -> EventLog:
        if self._log is None:
            raise RuntimeError("EventStore.restore() must be called first")
        return self._log

    def _has_new(self) -> bool:
        partitions = self._require_log().partitions
        return any(partition.next_sequence_number > self._written[index] for index, partition in enumerate(partitions))

    def _take(self) -> Batch:
        """What is new since the last batch, read on the event loop's thread (nothing awaits between)."""
        batch: Batch = []
        for index, partition in enumerate(self._require_log().partitions):
            events = partition.events_since(self._written[index])
            first_kept = partition.first_kept
            if events or first_kept != self._pruned[index]:
                batch.append((index, events, partition.next_sequence_number, partition.next_offset, first_kept))
                self._written[index] = partition.next_sequence_number
                self._pruned[index] = first_kept
        return batch

    def _write(self, batch: Batch) -> None:
        encoder = _Encoder()
        steps: list[tuple[str, list[tuple[Any, ...]]]] = []
        for index, events, next_sequence, next_offset, first_kept in batch:
            steps.append((_INSERT, [encoder.row(index, event) for event in events]))
            steps.append(("DELETE FROM events WHERE key >= ? AND key < ?", [(_key(index, 0), _key(index, first_kept))]))
            steps.append(
                ("INSERT OR REPLACE INTO partitions (partition, next_sequence, next_offset) VALUES (?, ?, ?)",
                 [(index, next_sequence, next_offset)])
            )
        self._commit(steps)

    def _commit(self, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for statement, rows in steps:
                if rows:
                    self._db.executemany(statement, rows)


def _mapping(text: str, decoded: dict[str, Mapping[str, str | None]]) -> Mapping[str, str | None]:
    # Restored records share their property mappings by text, as the records of one topic did.
    mapping = decoded.get(text)
    if mapping is None:
        mapping = decoded[text] = MappingProxyType(json.loads(text))
    return mapping


def _event(row: tuple[Any, ...], decoded: dict[str, Mapping[str, str | None]]) -> Event:
    key, offset, enqueued_us, source, device_id, module_id, body, properties, system_properties = row
    enqueued_time = _EPOCH + enqueued_us * _MICROSECOND
    record = TelemetryRecord(
        device_id, module_id, bytes(body), _mapping(properties, decoded), _mapping(system_properties, decoded),
        enqueued_time,
    )
    sequence_number = key & ((1 << _SEQUENCE_BITS) - 1)
    return Event(sequence_number, offset, enqueued_time, record, source if source in _SOURCES else "Telemetry")
