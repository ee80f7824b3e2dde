"""The public outbox: :class:`Outbox` (one file) and :class:`OutboxQueue` (one identity's queue in it).

Theory of operation
-------------------
A client given an outbox claims its identity's queue when it is entered (:meth:`Outbox.queue`):
the file is opened on first use, and the claim is refused while another live client, in this
process or another, holds the same identity. ``send_message`` then only appends to the queue
(:meth:`OutboxQueue.put`): it returns once the message is committed, whether or not the hub is
reachable. The client's delivery loop reads the queue in order (:meth:`OutboxQueue.fetch`, which
also drops messages past their time to live), publishes, and reports what the hub acknowledged
(:meth:`OutboxQueue.acknowledge`), which removes it from the file. Every statement runs on the
process's one disk thread (:mod:`.disk_thread`), which commits what arrives together in one
transaction.

The queue keeps the state of the last commit in memory (:class:`~aioiothub._outbox.store.Snapshot`):
statistics are read from it without touching the disk, and :meth:`OutboxQueue.flush` waits on it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, TypeVar

from aioiothub._outbox.disk_thread import disk_thread
from aioiothub._outbox.store import Durability, Limits, QueueResult, Snapshot, Store, StoredMessage, WhenFull

__all__ = ["Outbox", "OutboxQueue", "OutboxStatistics", "StoredMessage"]

T = TypeVar("T")
LossKind = Literal["expired", "dropped"]
#: Seconds between two reports of lost messages of one queue: a full queue dropping one message
#: per send is one event a second, not one per message.
REPORT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """One identity's queue in an outbox, as of the last commit.

    Attributes:
        pending: messages committed and not yet acknowledged by the hub.
        pending_bytes: their size (topic with properties, plus body).
        oldest_age: seconds since the oldest pending message was committed, or ``None``.
        delivered: messages the hub acknowledged (kept in the file, across restarts).
        expired: messages dropped undelivered at their time to live.
        dropped: messages dropped undelivered to make room (``when_full="drop_oldest"``).
    """

    pending: int
    pending_bytes: int
    oldest_age: float | None
    delivered: int
    expired: int
    dropped: int


def _check_int(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an integer, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{argument} must be greater than zero, not {value!r}")
    return value


class Outbox:
    """A durable, bounded, ordered store of outgoing telemetry in one SQLite file.

    Give it to a client (``outbox=``): ``await client.send_message(...)`` then returns once the
    message is committed to the file, connected or not, and the client delivers what is pending
    in the background, in the order it was sent, at least once, across reconnects and restarts of
    the process: a client opened later on the same file delivers what an earlier one left first.
    Each message gets a message id (``$.mid``; one the caller set is kept), so that back ends can
    drop the duplicates at-least-once delivery makes. One file holds the queues of many
    identities (a gateway, a simulated fleet), each delivered by its own client; two live clients
    of one identity on one file are refused with :class:`~aioiothub.OutboxInUseError`.

    Every file operation runs on one thread per process, shared by every outbox, never on the
    event loop; concurrent sends share one transaction (group commit).

    Durability:
        ``"normal"``: a message whose ``send_message`` returned survives the process crashing or
        being killed (``SIGKILL``) at any moment: it is in the operating system's hands (SQLite
        WAL, ``synchronous=NORMAL``). A power loss or kernel crash may lose the messages committed
        in the last moments before it (those not yet written back by the OS), but never leaves
        the file damaged, and never loses older ones.
        ``"full"``: in addition, every commit is fsynced before ``send_message`` returns
        (``synchronous=FULL``), so a returned send survives power loss too -- as far as the disk
        honours flushes. Slower: one fsync per group of concurrent sends.

    Args:
        path: the SQLite file (created if missing; its directory must exist). Beside it SQLite
            keeps ``-wal`` and ``-shm`` files, and the outbox a ``-lock`` file.
        max_messages: at most this many pending messages per identity.
        max_bytes: at most this many pending bytes (topic plus body) per identity.
        when_full: at a bound, ``"reject"`` (``send_message`` raises
            :class:`~aioiothub.OutboxFull` at once, nothing is stored) or ``"drop_oldest"`` (the
            identity's oldest pending messages are discarded, counted and reported as
            :class:`~aioiothub.OutboxMessagesDropped` on ``client.errors()``).
        ttl: seconds after which an undelivered message is dropped instead of sent, counted and
            reported (:class:`~aioiothub.OutboxMessagesExpired`); ``None`` keeps messages until
            delivered. Default 7,200 (IoT Edge's default).
        durability: ``"normal"`` or ``"full"``, see above.

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it.

    Example:
        >>> async def main(connection_string):
        ...     outbox = Outbox("telemetry.db", max_messages=100_000, when_full="drop_oldest")
        ...     async with IoTHubDeviceClient.from_connection_string(connection_string, outbox=outbox) as client:
        ...         await client.send_message({"temperature": 21.5})   # committed; delivered when it can be
        ...         await client.outbox.flush(timeout=30)                # everything so far acknowledged
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = 1_000_000,
        max_bytes: int = 1 << 30,
        when_full: WhenFull = "reject",
        ttl: float | None = 7200.0,
        durability: Durability = "normal",
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        if not isinstance(path, str) or not path or path == ":memory:":
            raise ValueError("path must name a file (an outbox is durable: not ':memory:' or empty)")
        if when_full not in ("reject", "drop_oldest"):
            raise ValueError(f"when_full must be 'reject' or 'drop_oldest', not {when_full!r}")
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ValueError(f"ttl must be a finite number of seconds greater than zero, or None, not {ttl!r}")
        self.path = path
        self.durability: Durability = durability
        self.limits = Limits(
            max_messages=_check_int(max_messages, "max_messages"),
            max_bytes=_check_int(max_bytes, "max_bytes"),
            when_full=when_full,
            ttl=None if ttl is None else float(ttl),
        )
        self._store: Store | None = None
        self._users = 0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        limits = self.limits
        return (
            f"Outbox({self.path!r}, max_messages={limits.max_messages}, max_bytes={limits.max_bytes}, "
            f"when_full={limits.when_full!r}, ttl={limits.ttl!r}, durability={self.durability!r})"
        )

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the file (once for any number of users; each :meth:`open` needs its :meth:`close`).

        Raises:
            OutboxCorruptError: the file is not an outbox, or is damaged.
            OutboxSchemaError: the file comes from a newer aioiothub.
            OutboxStorageError: the file cannot be created or written (read-only, missing directory).
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._store is None:
                store = Store(self.path, self.durability, self.limits)
                disk_thread.opened()

                def open_store() -> None:
                    try:
                        store.open()
                    except BaseException:
                        disk_thread.closed()
                        raise

                await disk_thread.submit(store, open_store)
                self._store = store
            self._users += 1

    async def close(self) -> None:
        """Close the file once its last user closes it (committed messages stay in it)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            store = self._store
            if store is None or self._users <= 0:
                return
            self._users -= 1
            if self._users:
                return
            self._store = None

            def close_store() -> None:
                try:
                    store.close()
                finally:
                    disk_thread.closed()

            await asyncio.shield(disk_thread.submit(store, close_store))

    async def queue(self, device_id: str, module_id: str | None = None) -> OutboxQueue:
        """Open the file if needed and claim the queue of one identity (what a client does when entered).

        Raises:
            OutboxInUseError: another live client already holds that identity's queue.
            OutboxCorruptError, OutboxSchemaError, OutboxStorageError: see :meth:`open`.
        """
        identity = device_id if module_id is None else f"{device_id}/{module_id}"
        await self.open()
        store = self._store
        assert store is not None
        try:
            result = await disk_thread.submit(store, lambda: store.claim(identity))
        except BaseException:
            await self.close()
            raise
        return OutboxQueue(self, store, identity, result)


class OutboxQueue:
    """One identity's queue in an :class:`Outbox`: ``client.outbox`` while the client is open.

    Example:
        >>> async def drain(client):
        ...     await client.outbox.flush(timeout=60)
        ...     print(client.outbox.statistics().pending)   # 0
    """

    def __init__(self, outbox: Outbox, store: Store, identity: str, claimed: QueueResult) -> None:
        self.outbox = outbox
        self.identity = identity
        self._store = store
        self._queue_id: int = claimed.value
        assert claimed.snapshot is not None
        self._snapshot: Snapshot = claimed.snapshot
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._more: asyncio.Event = asyncio.Event()
        self._ack_through = 0
        self._ack_job: asyncio.Future[QueueResult] | None = None
        self._released = False
        #: Told of messages dropped undelivered (the client reports them on ``errors()``).
        self.on_loss: Callable[[LossKind, int], None] | None = None
        self._unreported: dict[LossKind, int] = {"expired": 0, "dropped": 0}
        self._report_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<OutboxQueue {self.identity!r} in {self.outbox.path!r} pending={self._snapshot.pending}>"

    # --------------------------------------------------------------- what callers see

    def statistics(self) -> OutboxStatistics:
        """The queue's counts as of the last commit (no disk access)."""
        snapshot = self._snapshot
        age = None if snapshot.oldest_time is None else max(0.0, time.time() - snapshot.oldest_time)
        return OutboxStatistics(
            pending=snapshot.pending,
            pending_bytes=snapshot.pending_bytes,
            oldest_age=age,
            delivered=snapshot.delivered,
            expired=snapshot.expired,
            dropped=snapshot.dropped,
        )

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the documented API
        """Wait until every message committed so far is acknowledged by the hub and gone from the file.

        Messages dropped meanwhile (time to live, ``drop_oldest``) count as done: they are
        reported on ``client.errors()``. Once this returns, no message committed before it is sent
        again, not even after a restart.

        Args:
            timeout: seconds to wait at most; ``None`` waits for as long as it takes.

        Raises:
            TimeoutError: not everything was acknowledged within ``timeout`` (nothing is lost:
                delivery carries on).
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be zero or more seconds, or None, not {timeout!r}")
        target = self._snapshot.last_seq
        if self._done_through(target):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            pending = self._snapshot.pending
            raise TimeoutError(
                f"the outbox of {self.identity!r} still holds {pending} unacknowledged messages after {timeout:g} s"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # ------------------------------------------------------------- what the client uses

    async def put(self, topic: str, payload: bytes, retain: bool) -> None:
        """Commit one message (``topic`` already holds its properties); returns once it is in the file.

        Raises:
            OutboxFull: at a bound with ``when_full="reject"``.
            OutboxStorageError, OutboxCorruptError: the file refused the write; nothing was stored.
            ValueError: the message alone is over ``max_bytes``.
        """
        store, queue_id = self._require_open()
        result = await disk_thread.submit(store, lambda: store.put(queue_id, topic, payload, retain, time.time()))
        self._update(result)
        if result.dropped:
            self._report("dropped", result.dropped)

    async def fetch(self, after: int, limit: int) -> tuple[list[StoredMessage], int]:
        """Up to ``limit`` pending messages after sequence number ``after``, read from the file in order.

        Returns them and the sequence number read through: the last message's, or, when none is
        left after ``after`` (all delivered, expired or dropped), the last one committed then.
        """
        store, queue_id = self._require_open()
        result = await disk_thread.submit(store, lambda: store.fetch(queue_id, after, limit, time.time()))
        self._update(result)
        if result.expired:
            self._report("expired", result.expired)
        messages = result.messages
        return messages, messages[-1].seq if messages else max(after, result.value)

    def is_pending(self, seq: int) -> bool:
        """Whether message ``seq`` may still be in the file (not dropped, expired or acknowledged)."""
        oldest = self._snapshot.oldest_seq
        return oldest is not None and seq >= oldest

    def has_more(self, after: int) -> bool:
        """Whether messages after ``after`` were committed."""
        return self._snapshot.last_seq > after

    async def wait_for_more(self, after: int) -> None:
        """Return once a message after sequence number ``after`` is committed."""
        while self._snapshot.last_seq <= after:
            self._more.clear()
            await self._more.wait()

    def acknowledge(self, seq: int) -> None:
        """The hub acknowledged everything up to ``seq``: remove it (batched with later acknowledgements)."""
        if seq > self._ack_through:
            self._ack_through = seq
            if self._ack_job is None:
                self._submit_acknowledgements()

    def _submit_acknowledgements(self) -> None:
        store, queue_id = self._require_open()
        through = self._ack_through
        job = disk_thread.submit(store, lambda: store.acknowledged(queue_id, through))
        self._ack_job = job
        job.add_done_callback(lambda done: self._acknowledged(done, through))

    def _acknowledged(self, job: asyncio.Future[QueueResult], through: int) -> None:
        self._ack_job = None
        if job.cancelled() or job.exception() is not None:
            # Kept in the file: sent again after a restart (at-least-once). The next
            # acknowledgement retries the removal.
            return
        self._update(job.result())
        if self._ack_through > through and not self._released:
            self._submit_acknowledgements()

    async def release(self) -> None:
        """Write the last acknowledgements and give the identity back (the client is closing)."""
        if self._released:
            return
        try:
            if self._ack_job is not None:
                await asyncio.shield(self._ack_job)
            store, queue_id = self._require_open()
            through = self._ack_through
            self._released = True

            def last_acknowledgements_and_release() -> None:
                store.acknowledged(queue_id, through)
                store.release(queue_id)

            await asyncio.shield(disk_thread.submit(store, last_acknowledgements_and_release))
        finally:
            self._released = True
            if self._report_timer is not None:
                self._report_timer.cancel()
                self._report_now()
                if self._report_timer is not None:
                    self._report_timer.cancel()
            await self.outbox.close()

    # ------------------------------------------------------------------------- state

    def _require_open(self) -> tuple[Store, int]:
        if self._released:
            raise RuntimeError("the outbox queue was released: its client is closed")
        return self._store, self._queue_id

    def _update(self, result: QueueResult) -> None:
        snapshot = result.snapshot
        if snapshot is None:
            return
        grew = snapshot.last_seq > self._snapshot.last_seq
        self._snapshot = snapshot
        if grew:
            self._more.set()
        if self._waiters:
            for target, future in list(self._waiters):
                if not future.done() and self._done_through(target):
                    future.set_result(None)

    def _done_through(self, target: int) -> bool:
        oldest = self._snapshot.oldest_seq
        return oldest is None or oldest > target

    def _report(self, kind: LossKind, count: int) -> None:
        """Tell of lost messages: at once, then at most once a second with what was lost meanwhile."""
        self._unreported[kind] += count
        if self._report_timer is None:
            self._report_now()

    def _report_now(self) -> None:
        self._report_timer = None
        for kind, count in self._unreported.items():
            if count:
                self._unreported[kind] = 0
                if self.on_loss is not None:
                    self.on_loss(kind, count)
                self._report_timer = asyncio.get_running_loop().call_later(REPORT_INTERVAL, self._report_now)


