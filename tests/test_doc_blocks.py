"""Every code block of README.md and docs/ runs against the emulator, as a reader would run it.

Each ``python`` block runs in a process of its own (``tests/doc_block_child.py``) with the
environment a user sets for the emulator: ``IOTHUB_DEVICE_CONNECTION_STRING``, ``SSL_CERT_FILE``
(its CA) and ``IOTHUB_PORT``. A comment just before a block says how it runs:

- none: a program on its own (fragments take ``conn_str``, ``group_key`` … as the reader's own);
- ``<!-- run: with-client -->``: a fragment using ``client``, connected first by the harness;
- ``<!-- run: with-websocket-client -->``: the same over WebSocket (file upload: HTTPS on that port);
- ``<!-- run: with-hub -->``: a fragment using ``hub``, an in-process emulator;
- ``<!-- run: pytest -->``: a test module, run by pytest;
- ``... then: method NAME | c2d | desired | writable | input NAME | drop`` (after any of those): what
  the harness does as the back end, and checks the block handled, before it stops a block that loops;
- ``<!-- run: sh with-standalone-emulator -->``: a shell block run against ``aioiothub-emulator``,
  each ``export NAME=…`` taking the value the emulator printed;
- ``<!-- not-run: why -->``: not run (a real hub, another SDK); counted, and the reason is required.

A block that only includes an example (``--8<-- "examples/…"``) is run by ``tests/test_examples.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aioiothub.emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DEADLINE = 30.0
"""Seconds one block may take (most take well under one)."""

CONTEXTS = ("program", "with-client", "with-websocket-client", "with-hub", "pytest", "sh with-standalone-emulator")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>run|not-run):\s*(?P<text>.*?)\s*-->\s*$")
_INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')


@dataclass(frozen=True)
class Block:
    """One fenced code block and the marker before it."""

    page: str
    line: int
    language: str
    code: str
    marker: tuple[str, str] | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    """Every fenced block of the pages, with its dedented code."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        number = 0
        while number < len(lines):
            fence = _FENCE.match(lines[number])
            if not fence or not fence["language"]:
                number += 1
                continue
            indent = len(fence["indent"])
            body = []
            start = number
            number += 1
            while not lines[number].strip().startswith("```"):
                body.append(lines[number][indent:])
                number += 1
            number += 1
            before = next((line for line in reversed(lines[:start]) if line.strip()), "")
            marker = _MARKER.match(before)
            found.append(Block(
                page.relative_to(ROOT).as_posix(), start + 1, fence["language"], "\n".join(body) + "\n",
                (marker["kind"], marker["text"]) if marker else None,
            ))
    return found


BLOCKS = blocks()
PYTHON = [block for block in BLOCKS if block.language == "python" and not _INCLUDE.match(block.code.strip())]
INCLUDES = [block for block in BLOCKS if block.language == "python" and _INCLUDE.match(block.code.strip())]
SHELL = [block for block in BLOCKS if block.marker is not None and block.marker[0] == "run" and block.language == "sh"]


def test_markers_are_known_and_not_run_blocks_say_why() -> None:
    for block in BLOCKS:
        if block.marker is None:
            continue
        kind, text = block.marker
        if kind == "not-run":
            assert len(text) > 10, f"{block.name}: a not-run marker needs its reason"
        else:
            context = text.split(", then:")[0]
            assert context in CONTEXTS, f"{block.name}: unknown marker {text!r}"
    not_run = [block.name for block in BLOCKS if block.marker and block.marker[0] == "not-run"]
    # The few that need a real hub or another SDK; a new one is a decision, not an accident (the
    # ninth: a back end reading with azure-eventhub, which tests/peer/sdk_eventhub.py does in CI; the
    # tenth: azure-iot-hub sending C2D over AMQP, which tests/peer/sdk_c2d.py does in CI).
    assert len(not_run) <= 10, not_run
    assert len(PYTHON) >= 30


@pytest.mark.parametrize("block", INCLUDES, ids=lambda block: block.name)
def test_an_included_example_is_one_the_example_tests_run(block: Block) -> None:
    match = _INCLUDE.match(block.code.strip())
    assert match is not None
    path = ROOT / match["path"]
    assert path.parent == ROOT / "examples", block.name
    assert path.exists(), block.name


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        emulator.dps.add_enrollment_group("factory")  # the blocks' group_key
        emulator.dps.retry_after = 0
        emulator.dps.add_enrollment("sensor-1")
        yield emulator


def _environment(hub: Emulator, device_id: str) -> dict[str, str]:
    device = hub.add_device(device_id)
    module = hub.add_module(device_id, "docs-module")
    group = hub.dps.enrollment_group("factory")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("IOTHUB_", "DOCS_"))}
    return {
        **environment,
        "IOTHUB_DEVICE_CONNECTION_STRING": device.connection_string,
        "IOTHUB_PORT": str(hub.port),
        "SSL_CERT_FILE": str(hub.ca_file),
        "DOCS_DEVICE_ID": device_id,
        "DOCS_DEVICE_KEY": device.primary_key,
        "DOCS_MODULE_CONNECTION_STRING": module.connection_string,
        "DOCS_GROUP_KEY": group.primary_key,
        "DOCS_ENROLLMENT_KEY": hub.dps.enrollment("sensor-1").primary_key,
        "DOCS_WEBSOCKET_PORT": str(hub.websocket_port),
        "PYTHONPATH": str(ROOT),
    }


async def _read_until(stream: anyio.abc.ByteReceiveStream, output: bytearray, text: str) -> None:
    while text.encode() not in output:
        output.extend(await stream.receive())


async def _stimulate(hub: Emulator, device_id: str, action: str, stdout: anyio.abc.ByteReceiveStream,
                     output: bytearray) -> None:
    """Play the back end ``action`` and wait for the block to have handled it."""
    verb, _, argument = action.partition(" ")
    if verb == "method":
        await hub.wait_subscribed(device_id, "$iothub/methods/POST/#", timeout=DEADLINE)
        result = await hub.invoke_method(device_id, argument or "docs", {"from": "docs"}, timeout=DEADLINE)
        assert result.status == 200, result
    elif verb == "c2d":
        await hub.wait_subscribed(device_id, f"devices/{device_id}/messages/devicebound/#", timeout=DEADLINE)
        await hub.send_c2d(device_id, b"docs-c2d", properties={"k": "v"})
        await _read_until(stdout, output, "docs-c2d")
    elif verb in ("desired", "writable"):
        await hub.wait_subscribed(device_id, "$iothub/twin/PATCH/properties/desired/#", timeout=DEADLINE)
        if verb == "desired":
            await hub.update_desired(device_id, {"docsInterval": 7})
            await _read_until(stdout, output, "docsInterval")
        else:
            await hub.update_desired(device_id, {"thermostat1": {"__t": "c", "targetTemperature": 30}})
            # The acknowledgement is a reported-property update; the emulator records no event for it.
            while "thermostat1" not in hub.twin(device_id)["reported"]:  # noqa: ASYNC110 - no event to await
                await anyio.sleep(0.05)
    elif verb == "input":
        await hub.wait_subscribed(device_id, f"devices/{device_id}/modules/docs-module/inputs/#",
                                  module_id="docs-module", timeout=DEADLINE)
        await hub.send_to_input(device_id, "docs-module", argument, b"docs-input")
        await _read_until(stdout, output, "docs-input")
    elif verb == "drop":
        await _read_until(stdout, output, "client connected")
        await hub.wait_connected(device_id, timeout=DEADLINE)
        hub.drop_connection(device_id)
        await _read_until(stdout, output, "metric ConnectionDropped")
    else:
        raise AssertionError(f"unknown back-end action {action!r}")


def _write_readers_files(hub: Emulator, device_id: str, folder: Path) -> None:
    """The files the blocks name as the reader's own: a log to upload, a module, a device certificate."""
    (folder / "app.log").write_text("one line of log\n", encoding="utf-8")
    (folder / "module.py").write_text("print('module started')\n", encoding="utf-8")
    hub.add_device(f"{device_id}-x509", authentication="x509").write_certificate_files(folder)
    for name in ("cert", "key"):
        written = next(folder.glob(f"*{name}*.pem"), None)
        if written is not None:
            written.rename(folder / f"device-{name}.pem")


async def run_block(hub: Emulator, block: Block, tmp_path: Path) -> str:
    """Run ``block`` in a process of its own; what it printed (it must succeed)."""
    device_id = f"docs-{uuid.uuid4().hex[:8]}"
    context, _, then = (block.marker[1] if block.marker else "program").partition(", then: ")
    spec = tmp_path / "block.json"
    spec.write_text(json.dumps({"code": block.code, "context": context, "name": block.name}), encoding="utf-8")
    _write_readers_files(hub, device_id, tmp_path)
    environment = _environment(hub, device_id)
    if context == "pytest":
        (tmp_path / "test_block.py").write_text(block.code, encoding="utf-8")
        arguments = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_block.py"]
    else:
        arguments = [sys.executable, "-m", "tests.doc_block_child", str(spec)]
    output = bytearray()
    with anyio.fail_after(DEADLINE):
        async with await anyio.open_process(arguments, cwd=tmp_path, env=environment,
                                            stderr=subprocess.STDOUT) as process:
            assert process.stdout is not None
            if then:
                await _stimulate(hub, device_id, then, process.stdout, output)
                process.terminate()  # it handled what the back end did; a loop would go on forever
            async for chunk in process.stdout:
                output.extend(chunk)
            code = await process.wait()
    text = output.decode(errors="replace")
    if not then:
        assert code == 0, f"{block.name} failed:\n{block.code}\n{text}"
    return text


@pytest.mark.anyio
@pytest.mark.parametrize("block", [block for block in PYTHON if not (block.marker and block.marker[0] == "not-run")],
                         ids=lambda block: block.name)
async def test_a_python_block_runs_against_the_emulator(hub: Emulator, block: Block, tmp_path: Path) -> None:
    await run_block(hub, block, tmp_path)


@pytest.mark.anyio
async def test_the_in_process_emulator_snippet_gets_its_method_answered(hub: Emulator, tmp_path: Path) -> None:
    [block] = [block for block in PYTHON if block.page == "docs/emulator.md" and "invoke_method" in block.code]
    output = await run_block(hub, block, tmp_path)
    assert "200 {'rebooting': True}" in output, output


_BANNER = {
    "IOTHUB_DEVICE_CONNECTION_STRING": re.compile(r"^\s*device dev1: (?P<value>HostName=\S+)$", re.MULTILINE),
    "SSL_CERT_FILE": re.compile(r"^\s*CA file:\s+(?P<value>\S+)$", re.MULTILINE),
    "IOTHUB_PORT": re.compile(r"^\s*port:\s+(?P<value>\d+) ", re.MULTILINE),
}
"""Where each variable the shell blocks export is in what ``aioiothub-emulator`` prints."""


def _shell_script(block: Block, printed: str) -> str:
    lines = []
    for line in block.code.splitlines():
        export = re.match(r"^export (?P<name>\w+)=", line)
        if export:
            # What the reader copies from the emulator's output, in place of the block's example value.
            match = _BANNER[export["name"]].search(printed)
            assert match is not None, f"{block.name}: the emulator printed no {export['name']}:\n{printed}"
            line = f"export {export['name']}='{match['value']}'"
        # The project's virtual environment, wherever the block's relative path would find it.
        lines.append(re.sub(r"(\.\./)?\.venv/bin/", f"{Path(sys.executable).parent}/", line))
    return "\n".join(["set -e", *lines])


@pytest.mark.anyio
@pytest.mark.parametrize("block", SHELL, ids=lambda block: block.name)
async def test_a_shell_block_runs_against_the_standalone_emulator(block: Block, tmp_path: Path) -> None:
    # Free ports, as when 8883 is taken: the block must carry the port the emulator printed.
    command = [sys.executable, "-m", "aioiothub.emulator", "--port", "0", "--websocket-port", "0", "--device", "dev1"]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("IOTHUB_", "SSL_CERT"))}
    printed = bytearray()
    with anyio.fail_after(DEADLINE * 2):
        emulator_process = anyio.open_process(command, cwd=tmp_path, env=environment, stderr=subprocess.STDOUT)
        async with await emulator_process as emulator:
            assert emulator.stdout is not None
            try:
                await _read_until(emulator.stdout, printed, "Press Ctrl-C to stop.")
                script = _shell_script(block, printed.decode())
                completed = await anyio.run_process(["bash", "-c", script], cwd=ROOT, env=environment, check=False)
            finally:
                emulator.terminate()
    output = completed.stdout.decode() + completed.stderr.decode()
    assert completed.returncode == 0, f"{block.name} failed:\n{script}\n{output}"
    if "send_telemetry.py" in block.code:
        assert "sent 100 samples concurrently" in output
