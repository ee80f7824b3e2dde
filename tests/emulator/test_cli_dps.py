"""``python -m aioiothub.emulator --enrollment-group NAME``: the printed id scope and key provision a device."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import aioiothub
from aioiothub.emulator.__main__ import main
from aioiothub.emulator.certs import client_ssl_context

ROOT = Path(__file__).resolve().parents[2]


async def _read_banner(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    text = ""
    with anyio.fail_after(20):
        async for chunk in process.stdout:
            text += chunk.decode()
            if "Press Ctrl-C to stop." in text:
                return text
    raise AssertionError(f"the emulator exited early: {text!r}")


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"{pattern!r} not in {text!r}"
    return match[1]


@pytest.mark.anyio
async def test_cli_enrollment_group_provisions_a_device() -> None:
    command = [sys.executable, "-m", "aioiothub.emulator", "--port", "0", "--no-websocket",
               "--id-scope", "0neCLI00001", "--enrollment-group", "factory"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await anyio.open_process(command, cwd=ROOT, env=environment, stderr=subprocess.STDOUT)
    try:
        banner = await _read_banner(process)
        port = int(_field(r"^  port:\s+(\d+)", banner))
        ca_pem = await anyio.Path(_field(r"^  CA file:\s+(\S+)", banner)).read_bytes()
        id_scope = _field(r"^  DPS id scope:\s+(\S+) \(provisioning host localhost, port \d+\)", banner)
        key = _field(r"^  enrollment group factory: key (\S+)", banner)
        assert id_scope == "0neCLI00001"
        provisioning = aioiothub.ProvisioningClient.from_enrollment_group_key(
            provisioning_host="localhost", id_scope=id_scope, registration_id="cli-sensor", group_key=key,
            port=port, ssl_context=client_ssl_context(ca_pem),
        )
        async with await aioiothub.IoTHubDeviceClient.from_provisioning(provisioning) as client:
            await client.send_message(b"provisioned from the CLI")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


def test_bad_id_scope_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--port", "0", "--no-websocket", "--id-scope", "0ne/bad"])
    assert caught.value.code == 2
    assert "id_scope" in capsys.readouterr().err
