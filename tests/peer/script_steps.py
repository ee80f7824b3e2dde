"""Run a peer script (Python in a peer venv, or Node.js) and read the JSON lines it reports, step by step.

A peer script prints one ``{"step": name, ...}`` line per thing it did or saw; the test reads them in
order with :meth:`StepReader.next_step`, which fails with the script's log when the step does not
come in time or comes out of order. Closing the script's stdin asks it to finish.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import aioiothub

__all__ = ["STEP_TIMEOUT", "StepReader", "answer_methods", "run_steps"]

STEP_TIMEOUT = 60.0
"""Starting an SDK on a busy two-core machine can take a while."""


class StepReader:
    """The report of one running peer script."""

    def __init__(self, process: anyio.abc.Process, log_path: Path) -> None:
        assert process.stdout is not None
        self.process = process
        self.log_path = log_path
        self._stdout = BufferedByteReceiveStream(process.stdout)

    def log_tail(self) -> str:
        """The last lines the script wrote to stderr."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])
        except OSError:
            return "<no log>"

    async def next_step(self, expected: str, seconds: float = STEP_TIMEOUT) -> dict[str, Any]:
        """The next report line, which must be step ``expected``."""
        try:
            with anyio.fail_after(seconds):
                line = await self._stdout.receive_until(b"\n", 1 << 20)
        except (TimeoutError, anyio.IncompleteRead, anyio.EndOfStream, anyio.DelimiterNotFound) as exc:
            pytest.fail(f"the peer script gave no {expected!r} step ({exc!r}); its log:\n{self.log_tail()}")
        report: dict[str, Any] = json.loads(line)
        assert report.get("step") == expected, f"expected step {expected!r}, got {report}\n{self.log_tail()}"
        return report


@asynccontextmanager
async def run_steps(
    command: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> AsyncIterator[StepReader]:
    """Start ``command`` and yield its :class:`StepReader`; on exit close stdin, wait 15 s, then kill."""
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd
        )
    try:
        yield StepReader(process, log_path)
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.aclose()
            with anyio.move_on_after(15) as waiting:
                await process.wait()
            if waiting.cancelled_caught:
                process.kill()
                await process.wait()
            await process.aclose()


async def answer_methods(
    client: aioiothub.IoTHubDeviceClient | aioiothub.IoTHubModuleClient, seen: list[object]
) -> None:
    """Answer every direct method with 200 ``{"echo": payload}``, noting ``(name, payload)`` in ``seen``."""
    async for request in client.method_requests():
        seen.append((request.name, request.payload))
        await request.respond(200, {"echo": request.payload})
