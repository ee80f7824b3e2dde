"""Peer tests of the HTTPS surfaces: the official SDK as an IoT Edge module, and its file upload.

The SDK sends MQTT to 8883 and HTTPS to 443 with no port option, so the emulator listens on both
(run these inside a network namespace, as root). Each SDK scenario is a script in the peer venv
that reports its steps as JSON lines; the test plays the other side with aioiothub clients.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
STEP_TIMEOUT = 60.0
BLOCKS_DATA = bytes(index % 251 for index in range(20_000))


class Script:
    """A running SDK script and its JSON-lines report."""

    def __init__(self, process: anyio.abc.Process, log_path: Path) -> None:
        assert process.stdout is not None
        self.process = process
        self.log_path = log_path
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def next_step(self, expected: str) -> dict[str, Any]:
        """The next report line, which must be step ``expected``."""
        try:
            with anyio.fail_after(STEP_TIMEOUT):
                line = await self._stdout.receive_until(b"\n", 1 << 20)
        except (TimeoutError, anyio.IncompleteRead, anyio.EndOfStream) as exc:
            pytest.fail(f"SDK script gave no {expected!r} step ({exc!r}); log:\n{self.log_tail()}")
        report: dict[str, Any] = json.loads(line)
        assert report["step"] == expected, self.log_tail()
        return report

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])


@asynccontextmanager
async def run_script(
    python: Path, script: str, log_path: Path, *arguments: str, env: dict[str, str] | None = None
) -> AsyncIterator[Script]:
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            [str(python), str(HERE / script), *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
    script_run = Script(process, log_path)
    try:
        yield script_run
        with anyio.fail_after(STEP_TIMEOUT):
            assert await process.wait() == 0, script_run.log_tail()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    """An emulator on the SDK's fixed ports: MQTT 8883, WebSocket and REST 443."""
    async with Emulator(hostname="localhost", host="127.0.0.1", port=8883, websocket_port=443) as emulator:
        yield emulator


async def test_sdk_edge_module_routes_and_invokes(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    routes = [
        'FROM /messages/modules/sdkmod/outputs/out1 INTO BrokeredEndpoint("/modules/ourmod/inputs/in1")',
        'FROM /messages/modules/ourmod/outputs/back INTO BrokeredEndpoint("/modules/sdkmod/inputs/fromours")',
    ]
    sdk_env = await hub.edge_environment("edge1", "sdkmod", routes=routes)
    our_env = await hub.edge_environment("edge1", "ourmod")
    ours = await aioiothub.IoTHubModuleClient.from_edge_environment(environ=our_env.variables, port=8883)
    sensor_identity = hub.add_device("sensor")
    sensor = aioiothub.IoTHubDeviceClient.from_connection_string(
        sensor_identity.connection_string, port=8883, ssl_context=hub.client_ssl_context()
    )
    invoked: list[Any] = []

    async def relay() -> None:
        message = await anext(ours.input_messages("in1"))
        await ours.send_message_to_output(b"back from ours: " + message.body, "back")

    async def answer() -> None:
        request = await anext(sensor.method_requests())
        invoked.append(request.payload)
        await request.respond(200, {"rebooted": True})

    async with ours, sensor, anyio.create_task_group() as tasks:
        tasks.start_soon(relay)
        tasks.start_soon(answer)
        await hub.wait_subscribed("edge1", "devices/edge1/modules/ourmod/inputs/#", module_id="ourmod")
        await hub.wait_subscribed("sensor", METHODS_SUBSCRIPTION)
        async with run_script(peer_python, "sdk_edge_module.py", tmp_path / "edge.log", env=sdk_env.variables) as sdk:
            await sdk.next_step("connected")
            received = await sdk.next_step("input")
            method = await sdk.next_step("method")
            await sdk.next_step("done")

    assert received == {"step": "input", "input_name": "fromours", "data": "back from ours: from sdk"}
    assert method["result"] == {"status": 200, "payload": {"rebooted": True}}
    assert invoked == [{"delay": 1}]
    (sdk_record,) = hub.telemetry("edge1", "sdkmod")
    assert sdk_record.system_properties["$.on"] == "out1"


async def test_sdk_upload_with_storage_sdk(hub: Emulator, peer_python: Path, tmp_path: Path) -> None:
    identity = hub.add_device("dev1")

    async with run_script(
        peer_python, "sdk_upload.py", tmp_path / "upload.log", identity.connection_string, str(hub.ca_file)
    ) as sdk:
        first = await sdk.next_step("storage_info")
        await sdk.next_step("uploaded")
        await sdk.next_step("storage_info")
        await sdk.next_step("uploaded")
        await sdk.next_step("done")

    assert first["info"]["blobName"] == "dev1/single.txt"
    assert first["info"]["hostName"] == f"localhost:{hub.blob_port}"
    single, blocks = hub.uploads("dev1")
    assert (single.is_success, single.status_code, single.status_description) == (
        True, 200, "uploaded by azure-storage-blob"
    )
    assert await hub.upload_content(single) == b"Hello, World!"
    assert await hub.upload_content(blocks) == BLOCKS_DATA
