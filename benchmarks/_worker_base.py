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

import argparse
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
    """Raise the soft ``RLIMIT_NOFILE`` towards ``needed``, and the hard limit too where allowed (root).

    Returns:
        ``{"soft": new soft limit, "hard": hard limit, "enough": whether soft >= needed}``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), needed))
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


#: The commands of a worker that drives device clients (ours, or an SDK's), beyond WorkerBase's own.
DEVICE_CLIENT_COMMANDS: tuple[str, ...] = (
    "connect",
    "twin_get",
    "patch_reported",
    "c2d_samples",
    "many_connect",
    "many_telemetry",
    "many_close",
)


class WorkerBase:
    """What every worker answers the same way; a worker adds its client library's commands.

    Subclasses implement :meth:`send_one` (one QoS 1 telemetry message, acknowledged) and
    :meth:`close`, and list their further commands in ``extra_commands``.
    """

    extra_commands: tuple[str, ...] = ()

    def __init__(self) -> None:
        names = ("status", "limits", "telemetry", "shutdown", *self.extra_commands)
        self.commands: dict[str, Handler] = {name: getattr(self, name) for name in names}

    async def status(self, command: dict[str, Any]) -> Any:
        """RSS, threads and open files of this process."""
        return process_status()

    async def limits(self, command: dict[str, Any]) -> Any:
        """Raise the open-files limit for ``needed`` descriptors."""
        return raise_open_files_limit(int(command["needed"]))

    async def send_one(self) -> None:
        """Send one telemetry message and wait for its acknowledgement."""
        raise NotImplementedError

    async def telemetry(self, command: dict[str, Any]) -> Any:
        """Send ``count`` messages from ``concurrency`` tasks; the time until the last acknowledgement."""
        count, concurrency = int(command["count"]), int(command["concurrency"])
        shares = [count // concurrency + (1 if index < count % concurrency else 0) for index in range(concurrency)]
        send_one = self.send_one

        async def sender(share: int) -> None:
            for _ in range(share):
                await send_one()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(sender(share) for share in shares)), float(command["timeout"]))
        return {"seconds": time.perf_counter() - started, "sent": count}

    async def shutdown(self, command: dict[str, Any]) -> Any:
        """Close every client."""
        await self.close()
        return None

    async def close(self) -> None:
        """Close every client (bounded in time)."""


def run(make_worker: Callable[[], WorkerBase], hello: Callable[[], dict[str, Any]]) -> None:
    """A worker's whole life: claim stdout, pick the event loop (``--loop uvloop``), serve commands."""
    options = argparse.ArgumentParser()
    options.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    loop = options.parse_args().loop
    channel = claim_stdout()

    async def main() -> None:
        worker = make_worker()
        await serve(worker.commands, channel, {"loop": loop, **hello()}, worker.close)

    if loop == "uvloop":
        import uvloop  # the aioiothub[uvloop] extra; only this worker needs it

        uvloop.run(main())
    else:
        asyncio.run(main())
