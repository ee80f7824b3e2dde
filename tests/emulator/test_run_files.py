"""Where the emulator's files go: the state directory at fixed paths, or temporary files nothing leaves behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aioiothub.emulator import Emulator
from tests.emulator.cli_helpers import ROOT, read_banner

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def emulator_process(temporary: Path, *arguments: str) -> AsyncIterator[tuple[anyio.abc.Process, Path]]:
    """Run the CLI with ``TMPDIR=temporary``; yield the process and the CA file it printed."""
    command = [sys.executable, "-m", "aioiothub.emulator", "--port", "0", "--websocket-port", "0", *arguments]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temporary)}
    process = await anyio.open_process(command, cwd=ROOT, env=environment, stderr=subprocess.STDOUT)
    try:
        banner = await read_banner(process)
        ca_file = Path(re.search(r"^  CA file:\s+(\S+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        yield process, ca_file
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def stop(process: anyio.abc.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        assert await process.wait() == 0


def leftovers(temporary: Path) -> list[str]:
    return sorted(path.name for path in temporary.iterdir() if path.name.startswith("aioiothub"))


async def test_with_a_state_dir_the_ca_file_is_the_same_at_every_start(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    state = tmp_path / "state"
    async with emulator_process(temporary, "--state-dir", str(state)) as (process, first):
        assert first == state.resolve() / "ca.pem"
        content = first.read_bytes()
        await stop(process)
    assert first.read_bytes() == content  # still there for the devices that were told of it
    async with emulator_process(temporary, "--state-dir", str(state)) as (process, second):
        assert second == first
        assert second.read_bytes() == content
        await stop(process)
    assert leftovers(temporary) == []


async def test_the_files_of_a_killed_emulator_are_removed_at_the_next_start(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    async with emulator_process(temporary) as (process, killed_ca):
        assert killed_ca.parent == temporary
        process.kill()  # SIGKILL: nothing of the emulator runs to clean up
        await process.wait()
    assert killed_ca.exists()
    async with emulator_process(temporary) as (process, ca_file):
        assert not killed_ca.exists()
        assert leftovers(temporary) == [ca_file.name]
        await stop(process)
    assert leftovers(temporary) == []


async def test_with_a_state_dir_workload_sockets_live_there() -> None:
    # Short paths: a Unix socket's must fit in about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="st-") as directory:
        state = Path(directory)
        async with Emulator(state_dir=state, websocket_port=None) as hub:
            environment = await hub.edge_environment("edge1", "filter")
            assert environment.workload_socket == state / "edge" / "workload-0.sock"
            assert environment.workload_socket.exists()
            assert hub.ca_file == state / "ca.pem"
        assert (state / "ca.pem").exists()
        assert not environment.workload_socket.exists()
