"""The command loop every benchmark worker runs, and what a worker reports about its own process.

A worker is a child process that holds one client library (``aioiothub``, raw ``aiomqtt`` or the
official ``azure-iot-device``) so that its memory, threads and CPU are not mixed with the broker's
or with another library's. This module imports only the standard library, because the
``azure-iot-device`` worker runs in its own virtual environment where ``aioiothub`` is not installed.

Wire format: one JSON object per line. On start the worker writes ``{"ready": true, ...}``. Each
command line ``{"op": NAME, ...}`` gets exactly one answer line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "Type: text", "traceback": ...}``. Closing stdin ends the worker.

Only answer lines go to stdout: file descriptor 1 is re-pointed at stderr before any client library
is imported, so whatever a library prints cannot corrupt the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

SAMPLE_INTERVAL = 0.05
"""Seconds between two samples of the thread count while a phase runs."""


def claim_stdout() -> TextIO:
    """Take file descriptor 1 for the answer channel and send everything else printed to stderr."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def process_status() -> dict[str, int]:
    """This process's resident memory (``VmRSS``, bytes), threads and open file descriptors, from ``/proc``."""
    status = {"rss_bytes": 0, "threads": threading.active_count(), "fds": 0}
    with contextlib.suppress(OSError):
        status["fds"] = len(os.listdir("/proc/self/fd"))
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    status["rss_bytes"] = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    status["threads"] = int(line.split()[1])
    except OSError:
        pass
    return status


def raise_open_files_limit(needed: int) -> dict[str, Any]:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``needed`` (never past the hard limit).

    Returns:
        ``{"soft": new soft limit, "hard": hard limit, "enough": whether soft >= needed}``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return {"soft": soft, "hard": hard, "enough": soft == resource.RLIM_INFINITY or soft >= needed}


class ThreadSampler:
    """Records the highest thread count seen while a phase runs (sampled from the event loop)."""

    def __init__(self) -> None:
        self.peak = process_status()["threads"]
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, process_status()["threads"])
            await asyncio.sleep(SAMPLE_INTERVAL)

    def start(self) -> None:
        """Start sampling."""
        self.peak = process_status()["threads"]
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        """Stop sampling and return the peak."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.peak = max(self.peak, process_status()["threads"])
        return self.peak


def describe(error: BaseException) -> str:
    """``"Type: message"`` for a report, with the causes a library chains behind a bare wrapper."""
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__ or error.__context__
    depth = 0
    while cause is not None and depth < 3:
        text += f" <- {type(cause).__name__}: {cause}"
        cause = cause.__cause__ or cause.__context__
        depth += 1
    return text[:500]


async def _stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve(
    commands: dict[str, Handler], channel: TextIO, hello: dict[str, Any], on_exit: Callable[[], Awaitable[None]]
) -> None:
    """Answer command lines from stdin until stdin closes or a ``shutdown`` command is done.

    Args:
        commands: handler per ``op``; each returns a JSON-serialisable result.
        channel: where answer lines go (from :func:`claim_stdout`).
        hello: extra fields for the greeting line.
        on_exit: called once before returning (close every client).
    """

    def answer(payload: dict[str, Any]) -> None:
        channel.write(json.dumps(payload) + "\n")
        channel.flush()

    answer({"ready": True, "pid": os.getpid(), "started": time.time(), **hello})
    reader = await _stdin_reader()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            command = json.loads(line)
            op = command.get("op")
            try:
                result = await commands[op](command)
            except Exception as exc:
                answer({"ok": False, "error": describe(exc), "traceback": traceback.format_exc()})
            else:
                answer({"ok": True, "result": result})
            if op == "shutdown":
                return
    finally:
        await on_exit()
