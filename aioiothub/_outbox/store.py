"""One outbox file: its schema, its migrations and the statements on it (run on the disk thread only).

Layout (schema version 1)::

    queues    id, identity (device_id or device_id/module_id), delivered, expired, dropped
    messages  seq (AUTOINCREMENT: never reused, so enqueue order), queue, enqueued_at (Unix time),
              size (topic + payload bytes), topic (with the message's properties and $.mid), payload,
              retain

The file says what it is in SQLite's ``application_id`` and which schema it has in ``user_version``;
a file with another application id is refused, one with a newer version too (it is left as it is),
and an older one is brought forward by the steps in :data:`MIGRATIONS`, in one transaction.

Every statement of a batch runs in one transaction (:meth:`Store.run_transaction`); counters live
in memory between commits and are written with them, and reloaded from the file when a transaction
is rolled back. Puts are staged and written together, many rows per INSERT, before the next other
statement or the commit: one call into SQLite per group of concurrent sends, not one per message.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aioiothub._outbox.identity_locks import hold_identity, release_identity
from aioiothub.exceptions import (
    OutboxCorruptError,
    OutboxError,
    OutboxFull,
    OutboxSchemaError,
    OutboxStorageError,
)

__all__ = [
    "APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "Counts", "Durability", "Limits",
    "QueueResult", "Snapshot", "Store", "StoredMessage", "storage_error",
]

Durability = Literal["normal", "full"]
WhenFull = Literal["reject", "drop_oldest"]

APPLICATION_ID = 0x61696F62  # "aiob": says the file is an aioiothub outbox
SCHEMA_VERSION = 1


def _create_version_1(connection: sqlite3.Connection) -> None:
    connection.execute(
        "CREATE TABLE queues (id INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE,"
        " delivered INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,"
        " dropped INTEGER NOT NULL DEFAULT 0)"
    )
    connection.execute(
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue INTEGER NOT NULL,"
        " enqueued_at REAL NOT NULL, size INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
        " retain INTEGER NOT NULL)"
    )
    connection.execute("CREATE INDEX messages_by_queue ON messages (queue, seq)")


#: Step from schema version ``n`` to ``n + 1``, for each ``n`` below :data:`SCHEMA_VERSION`.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_version_1}


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of each queue and what happens at them."""

    max_messages: int
    max_bytes: int
    when_full: WhenFull
    ttl: float | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as delivery reads it back."""

    seq: int
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A queue's state after a commit."""

    pending: int
    pending_bytes: int
    oldest_seq: int | None
    oldest_time: float | None
    last_seq: int
    delivered: int
    expired: int
    dropped: int


@dataclass(slots=True)
class Counts:
    """A queue's counters between commits (the disk thread's own)."""

    queue_id: int
    identity: str
    pending: int = 0
    pending_bytes: int = 0
    last_seq: int = 0
    delivered: int = 0
    expired: int = 0
    dropped: int = 0


@dataclass(slots=True)
class QueueResult:
    """What a job on one queue returns; ``snapshot`` is filled in once the transaction committed."""

    value: Any = None
    dropped: int = 0
    expired: int = 0
    snapshot: Snapshot | None = None
    queue_id: int = 0
    messages: list[StoredMessage] = field(default_factory=list)


#: Rows of one INSERT statement at most (6 parameters each, under SQLite's oldest limit of 999).
_ROWS_PER_INSERT = 128


@functools.lru_cache(maxsize=8)
def _insert_statement(rows: int) -> str:
    """The INSERT of ``rows`` messages (a power of two, so that few statements are ever prepared)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO messages (queue, enqueued_at, size, topic, payload, retain) VALUES {values}"


def storage_error(exc: sqlite3.Error, path: str, doing: str) -> OutboxError:
    """The typed error for an SQLite failure while ``doing`` something with the file at ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return OutboxCorruptError(
            f"outbox {path!r} is not an outbox file or is damaged ({exc}) while {doing}; it is left as it is",
            path=path,
        )
    if code == sqlite3.SQLITE_FULL:
        reason = "the disk is full (or the file reached its size limit)"
    elif code == sqlite3.SQLITE_READONLY:
        reason = "the file or its directory is read-only"
    elif code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        reason = "the file cannot be opened for writing (missing directory, or no permission)"
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        reason = "another process holds the file locked"
    else:
        reason = str(exc)
    return OutboxStorageError(
        f"outbox {path!r}: {reason} while {doing}; what was committed before is kept", path=path
    )


class Store:
    """One open outbox file, used from the disk thread only."""

    def __init__(self, path: str, durability: Durability, limits: Limits) -> None:
        self.path = path
        self.durability = durability
        self.limits = limits
        self._connection: sqlite3.Connection | None = None
        self._queues: dict[int, Counts] = {}
        self._touched: set[int] = set()
        #: Puts of the current transaction not yet written: (row, result), in order.
        self._staged: list[tuple[tuple[Any, ...], QueueResult]] = []

    # ------------------------------------------------------------ open and close

    def open(self) -> None:
        """Open (or create) the file, check what it is and bring its schema forward."""
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "opening") from None
        try:
            self._check_and_migrate(connection)
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxStorageError(
                    f"outbox {self.path!r}: the file system does not support SQLite's WAL mode", path=self.path
                )
            connection.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
            connection.execute("PRAGMA busy_timeout=10000")
            # A write, so that a read-only file or directory is refused now rather than at the first send.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE queues SET id = id WHERE 0")
            connection.execute("COMMIT")
        except OutboxError:
            connection.close()
            raise
        except sqlite3.Error as exc:
            connection.close()
            raise storage_error(exc, self.path, "opening") from None
        self._connection = connection

    def _check_and_migrate(self, connection: sqlite3.Connection) -> None:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id != APPLICATION_ID and (application_id != 0 or tables):
            raise OutboxCorruptError(
                f"outbox {self.path!r} is a database of another application, not an outbox; it is left as it is",
                path=self.path,
            )
        if version > SCHEMA_VERSION:
            raise OutboxSchemaError(
                f"outbox {self.path!r} has schema version {version}, written by a newer aioiothub; this one "
                f"reads up to version {SCHEMA_VERSION}. The file is left as it is: open it with that newer version",
                path=self.path,
                version=version,
                supported=SCHEMA_VERSION,
            )
        if version == SCHEMA_VERSION:
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](connection)
            connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Commit nothing more, release the identities' locks and close the file."""
        for queue_id in list(self._queues):
            with contextlib.suppress(sqlite3.Error):
                self.release(queue_id)
            if queue_id in self._queues:  # the counters could not be written: still give the identity back
                release_identity(self.path, self._queues.pop(queue_id).identity)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("COMMIT")
            connection.close()

    def _db(self) -> sqlite3.Connection:
        """The connection, with the staged inserts written first (every statement sees every put)."""
        if self._connection is None:
            raise RuntimeError("the outbox is closed")
        if self._staged:
            self._insert_staged(self._connection)
        return self._connection

    def _insert_staged(self, connection: sqlite3.Connection) -> None:
        """Write the staged puts, many rows per statement (one call into SQLite, not one per message)."""
        staged, self._staged = self._staged, []
        start = 0
        while start < len(staged):
            rows = min(_ROWS_PER_INSERT, 1 << (len(staged) - start).bit_length() - 1)
            chunk = staged[start : start + rows]
            last = connection.execute(_insert_statement(rows), [value for put in chunk for value in put[0]]).lastrowid
            # AUTOINCREMENT under the write lock: the rows of one statement take consecutive numbers.
            for seq, (_, result) in enumerate(chunk, (last or 0) - rows + 1):
                result.value = seq
                self._queues[result.queue_id].last_seq = seq
            start += rows

    def _begin(self) -> sqlite3.Connection:
        connection = self._db()
        if not connection.in_transaction:
            connection.execute("BEGIN IMMEDIATE")
        return connection

    # ------------------------------------------------------------------ batches

    def run_transaction(self, jobs: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run ``jobs`` in one transaction: all of their writes are committed, or none."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            for job in jobs:
                try:
                    outcomes.append((True, job()))
                except (OutboxError, ValueError, RuntimeError) as exc:  # raised before the job wrote anything
                    outcomes.append((False, exc))
            connection = self._connection
            if connection is not None and connection.in_transaction:
                self._db()  # writes the staged puts
                self._write_counters(connection)
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            error = storage_error(exc, self.path, "writing")
            self._roll_back()
            return [(False, error)] * len(jobs)
        touched, self._touched = self._touched, set()
        snapshots = {queue_id: self._snapshot(queue_id) for queue_id in touched if queue_id in self._queues}
        for ok, value in outcomes:
            if ok and isinstance(value, QueueResult) and value.queue_id in snapshots:
                value.snapshot = snapshots[value.queue_id]
        return outcomes

    def _write_counters(self, connection: sqlite3.Connection) -> None:
        connection.executemany(
            "UPDATE queues SET delivered = ?, expired = ?, dropped = ? WHERE id = ?",
            [
                (counts.delivered, counts.expired, counts.dropped, counts.queue_id)
                for counts in (self._queues[queue_id] for queue_id in self._touched)
            ],
        )

    def _roll_back(self) -> None:
        self._staged = []
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
        touched, self._touched = self._touched, set()
        for queue_id in touched:
            with contextlib.suppress(sqlite3.Error):
                self._load(self._queues[queue_id])

    def _snapshot(self, queue_id: int) -> Snapshot:
        counts = self._queues[queue_id]
        oldest = self._db().execute(
            "SELECT seq, enqueued_at FROM messages WHERE queue = ? ORDER BY seq LIMIT 1", (queue_id,)
        ).fetchone()
        return Snapshot(
            pending=counts.pending,
            pending_bytes=counts.pending_bytes,
            oldest_seq=oldest[0] if oldest else None,
            oldest_time=oldest[1] if oldest else None,
            last_seq=counts.last_seq,
            delivered=counts.delivered,
            expired=counts.expired,
            dropped=counts.dropped,
        )

    # ------------------------------------------------------------------- queues

    def claim(self, identity: str) -> QueueResult:
        """The queue of ``identity``, created if new, locked against other processes."""
        connection = self._begin()
        connection.execute("INSERT OR IGNORE INTO queues (identity) VALUES (?)", (identity,))
        queue_id = connection.execute("SELECT id FROM queues WHERE identity = ?", (identity,)).fetchone()[0]
        self._lock_identity(identity)
        counts = Counts(queue_id, identity)
        self._load(counts)
        self._queues[queue_id] = counts
        self._touched.add(queue_id)
        return QueueResult(value=queue_id, queue_id=queue_id)

    def _load(self, counts: Counts) -> None:
        connection = self._db()
        pending, size, last = connection.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(max(seq), 0) FROM messages WHERE queue = ?",
            (counts.queue_id,),
        ).fetchone()
        delivered, expired, dropped = connection.execute(
            "SELECT delivered, expired, dropped FROM queues WHERE id = ?", (counts.queue_id,)
        ).fetchone()
        counts.pending, counts.pending_bytes, counts.last_seq = pending, size, max(last, counts.last_seq)
        counts.delivered, counts.expired, counts.dropped = delivered, expired, dropped

    def _lock_identity(self, identity: str) -> None:
        hold_identity(self.path, identity)

    def release(self, queue_id: int) -> None:
        """Stop tracking a queue (its client left) and let another client claim its identity."""
        counts = self._queues.get(queue_id)
        if counts is None:
            return
        if queue_id in self._touched and self._connection is not None:
            self._write_counters(self._begin())
            self._connection.execute("COMMIT")
            self._touched.discard(queue_id)
        del self._queues[queue_id]
        release_identity(self.path, counts.identity)

    # ------------------------------------------------------------ the statements

    def put(self, queue_id: int, topic: str, payload: bytes, retain: bool, now: float) -> QueueResult:
        """Append one message; at a bound, refuse it or drop the oldest, as the limits say."""
        counts = self._queues[queue_id]
        limits = self.limits
        size = len(topic) + len(payload)
        if size > limits.max_bytes:
            raise ValueError(f"the message is {size} bytes; the outbox's max_bytes is {limits.max_bytes}")
        over_count = counts.pending + 1 > limits.max_messages
        over_bytes = counts.pending_bytes + size > limits.max_bytes
        result = QueueResult(queue_id=queue_id)
        if over_count or over_bytes:
            limit = "max_messages" if over_count else "max_bytes"
            if limits.when_full == "reject":
                bound = limits.max_messages if over_count else limits.max_bytes
                raise OutboxFull(
                    f"outbox {self.path!r} holds {counts.pending} messages ({counts.pending_bytes} bytes) for "
                    f"{counts.identity!r}, at its {limit} of {bound}: the message was not taken",
                    path=self.path,
                    limit=limit,
                )
            result.dropped = self._drop_oldest(counts, size)
        connection = self._connection
        if connection is None:
            raise RuntimeError("the outbox is closed")
        if not connection.in_transaction:
            connection.execute("BEGIN IMMEDIATE")
        # Written with the batch's other puts before any other statement; the seq goes in ``result.value``.
        self._staged.append(((queue_id, now, size, topic, payload, int(retain)), result))
        counts.pending += 1
        counts.pending_bytes += size
        self._touched.add(queue_id)
        return result

    def _drop_oldest(self, counts: Counts, size: int) -> int:
        limits = self.limits
        dropped = 0
        freed = 0
        cutoff = None
        excess = max(0, counts.pending + 1 - limits.max_messages)
        rows = self._begin().execute(
            "SELECT seq, size FROM messages WHERE queue = ? ORDER BY seq", (counts.queue_id,)
        )
        for seq, row_size in rows:
            if dropped >= excess and counts.pending_bytes - freed + size <= limits.max_bytes:
                break
            dropped += 1
            freed += row_size
            cutoff = seq
        rows.close()
        if cutoff is not None:
            self._delete_through(counts, cutoff)
            counts.dropped += dropped
        return dropped

    def _delete_through(self, counts: Counts, seq: int) -> int:
        """Delete the queue's messages up to ``seq``; how many there were."""
        sizes = self._begin().execute(
            "DELETE FROM messages WHERE queue = ? AND seq <= ? RETURNING size", (counts.queue_id, seq)
        ).fetchall()
        counts.pending -= len(sizes)
        counts.pending_bytes -= sum(size for (size,) in sizes)
        self._touched.add(counts.queue_id)
        return len(sizes)

    def acknowledged(self, queue_id: int, seq: int) -> QueueResult:
        """The hub acknowledged every message of the queue up to ``seq``: remove them."""
        counts = self._queues[queue_id]
        delivered = self._delete_through(counts, seq)
        counts.delivered += delivered
        return QueueResult(value=delivered, queue_id=queue_id)

    def fetch(self, queue_id: int, after: int, limit: int, now: float) -> QueueResult:
        """Up to ``limit`` messages after ``after``, in order, once the expired ones at the head are dropped.

        Expiry looks at the head of the whole queue, so a message sent but not acknowledged
        before its time to live is dropped too (and not sent again).
        """
        counts = self._queues[queue_id]
        result = QueueResult(queue_id=queue_id)
        if self.limits.ttl is not None:
            result.expired = self._expire_head(counts, now - self.limits.ttl)
        rows = self._db().execute(
            "SELECT seq, topic, payload, retain FROM messages WHERE queue = ? AND seq > ? ORDER BY seq LIMIT ?",
            (queue_id, after, limit),
        ).fetchall()
        result.messages = [StoredMessage(seq, topic, payload, bool(retain)) for seq, topic, payload, retain in rows]
        result.value = counts.last_seq
        return result

    def _expire_head(self, counts: Counts, cutoff: float) -> int:
        connection = self._db()
        expired = 0
        batch = 1  # most of the time the head is not expired: look at one row first
        while True:
            rows = connection.execute(
                "SELECT seq, enqueued_at FROM messages WHERE queue = ? ORDER BY seq LIMIT ?", (counts.queue_id, batch)
            ).fetchall()
            through = None
            for seq, enqueued_at in rows:
                if enqueued_at >= cutoff:
                    break
                through = seq
            if through is None:
                break
            removed = self._delete_through(counts, through)
            counts.expired += removed
            expired += removed
            if through != rows[-1][0] or len(rows) < batch:
                break
            batch = 512
        return expired
