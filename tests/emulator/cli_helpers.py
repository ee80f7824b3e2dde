"""The emulator's command line as the CLI tests run it: started, its banner read, always ended."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc

__all__ = ["ROOT", "banner_field", "read_banner", "running_cli", "stop_cli"]

ROOT = Path(__file__).resolve().parents[2]


async def read_banner(process: anyio.abc.Process) -> str:
    """Read the emulator's output up to the end of its banner (20 s at most)."""
    assert process.stdout is not None
    text = ""
    with anyio.fail_after(20):
        async for chunk in process.stdout:
            text += chunk.decode()
            if "Press Ctrl-C to stop." in text:
                return text
    raise AssertionError(f"the emulator exited early: {text!r}")


@contextlib.asynccontextmanager
async def running_cli(*arguments: str) -> AsyncIterator[tuple[anyio.abc.Process, str]]:
    """``python -m aioiothub.emulator ARGUMENTS`` and its banner; killed on exit if still running."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "aioiothub.emulator", *arguments]
    process = await anyio.open_process(command, cwd=ROOT, env=environment, stderr=subprocess.STDOUT)
    try:
        yield process, await read_banner(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def stop_cli(process: anyio.abc.Process, stop_signal: signal.Signals) -> int:
    """Send ``stop_signal`` and return the exit status (within 20 s)."""
    process.send_signal(stop_signal)
    with anyio.fail_after(20):
        return await process.wait()


def banner_field(pattern: str, banner: str) -> str:
    """The first group of ``pattern`` (a multi-line regular expression) in the banner."""
    match = re.search(pattern, banner, re.MULTILINE)
    assert match is not None, f"{pattern!r} not in {banner!r}"
    return match[1]
