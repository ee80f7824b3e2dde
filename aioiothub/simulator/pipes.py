"""The line protocol between ``aioiothub simulate`` and the processes it starts.

A child reads instructions as lines on its standard input and writes JSON objects, one per line,
on its standard output. Its standard input closing means "stop", so a child never outlives the
process that started it, however that one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import anyio.abc

__all__ = ["emit", "json_lines", "stdin_reader", "stop_child"]


def emit(value: dict[str, Any]) -> None:
    """Write one JSON object as a line on standard output."""
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def stdin_reader() -> AsyncIterator[asyncio.StreamReader]:
    """Standard input as an asyncio stream (no thread blocks on it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    transport, _protocol = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        yield reader
    finally:
        transport.close()


async def json_lines(stream: anyio.abc.ByteReceiveStream) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects a child prints, one per line (other lines are ignored)."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    yield value


async def stop_child(process: anyio.abc.Process, *, grace: float = 30.0) -> None:
    """Close the child's stdin (its signal to stop), wait, and end it if it does not stop in time."""
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        with anyio.move_on_after(grace):
            await process.wait()
            return
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
            return
        process.kill()
        await process.wait()
