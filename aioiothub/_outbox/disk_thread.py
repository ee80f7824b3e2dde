"""The one thread per process that runs every outbox's SQLite statements.

Theory of operation
-------------------
Disk work never runs on the event loop. Each request is a job: a function of the file's
:class:`~aioiothub._outbox.store.Store`, the future to settle and the loop that owns it. The thread
takes every job waiting when it wakes, groups them by file and runs each file's jobs in one
transaction: a hundred concurrent ``send_message`` calls cost one commit (and, at
``durability="full"``, one fsync). When the commit fails (disk full, read-only file), every job of
that transaction fails with the same error and nothing of theirs is in the file, so no caller is
told a message is stored that is not.

Results go back to each loop in one ``call_soon_threadsafe`` per batch, not one per job. The
thread starts with the first open file and ends once the last one is closed, so an idle process
keeps no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["DiskThread", "disk_thread"]

T = TypeVar("T")
_MAX_BATCH = 4096


class Transactional(Protocol):
    """What the thread runs jobs on: one file's store."""

    def run_transaction(self, jobs: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run ``jobs`` in one transaction; ``(True, result)`` or ``(False, exception)`` for each."""
        ...


_Job = tuple[Transactional, Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class DiskThread:
    """Runs store jobs off the event loop, one transaction per file per batch."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._files = 0

    def opened(self) -> None:
        """A file is open: the thread stays while any is."""
        with self._lock:
            self._files += 1

    def closed(self) -> None:
        """A file was closed (called on the thread itself, by the closing job)."""
        with self._lock:
            self._files -= 1

    def submit(self, store: Transactional, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``job`` on the thread, in the next transaction of ``store``; its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._jobs.put((store, job, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aioiothub outbox disk", daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._execute(batch)
            with self._lock:
                if self._files <= 0 and self._jobs.empty():
                    self._thread = None
                    return

    def _execute(self, batch: list[_Job]) -> None:
        by_store: dict[int, list[_Job]] = {}
        for job in batch:
            by_store.setdefault(id(job[0]), []).append(job)
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for jobs in by_store.values():
            store = jobs[0][0]
            try:
                outcomes = store.run_transaction([job[1] for job in jobs])
            except BaseException as exc:  # handed to every caller of the batch
                outcomes = [(False, exc)] * len(jobs)
            for (_, _, future, loop), (ok, value) in zip(jobs, outcomes, strict=True):
                settled.setdefault(loop, []).append((future, ok, value))
        for loop, results in settled.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these any more
                loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue  # its caller was cancelled; the work was done (or not) all the same
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


disk_thread = DiskThread()
"""The process's disk thread, shared by every outbox."""
