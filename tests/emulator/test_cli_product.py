"""The standalone emulator as a newcomer uses it: a config file, REST calls, a state directory, restarts.

Each test runs ``python -m aioiothub.emulator`` (what the ``aioiothub-emulator`` script runs) in a
subprocess on free ports, reads the printed banner, and talks to it over HTTPS the way ``curl`` would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from aioiothub.emulator.certs import client_ssl_context
from aioiothub.emulator.service_api import development_policies
from aioiothub.protocol.sas import generate_sas_token

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
OWNER = development_policies()[0]
CONFIG = """
[[devices]]
id = "thermostat"
tags = { site = "b1" }
desired = { interval = 5 }

[[devices.modules]]
id = "filter"

[[policies]]
name = "backend"
rights = ["ServiceConnect"]
"""


@dataclass
class Running:
    process: anyio.abc.Process
    banner: str
    https_port: int
    ca_pem: bytes

    def http(self) -> httpx.AsyncClient:
        scope = f"localhost:{self.https_port}"
        token = generate_sas_token(scope, OWNER.primary_key, 2_000_000_000, policy_name="iothubowner")
        return httpx.AsyncClient(
            base_url=f"https://{scope}",
            verify=client_ssl_context(self.ca_pem),
            headers={"Authorization": token},
            params={"api-version": "2021-04-12"},
        )


async def _read_until(process: anyio.abc.Process, marker: str) -> str:
    assert process.stdout is not None
    text = ""
    with anyio.fail_after(30):
        async for chunk in process.stdout:
            text += chunk.decode()
            if marker in text:
                return text
    raise AssertionError(f"the emulator exited early: {text!r}")


@asynccontextmanager
async def emulator(*arguments: str) -> AsyncIterator[Running]:
    command = [sys.executable, "-m", "aioiothub.emulator", "--port", "0", "--websocket-port", "0", *arguments]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await anyio.open_process(command, cwd=ROOT, env=environment, stderr=subprocess.STDOUT)
    try:
        banner = await _read_until(process, "Press Ctrl-C to stop.")
        https_port = int(re.search(r"^  websocket port:\s+(\d+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        ca_file = anyio.Path(re.search(r"^  CA file:\s+(\S+)", banner, re.MULTILINE)[1])  # type: ignore[index]
        yield Running(process, banner, https_port, await ca_file.read_bytes())
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await process.aclose()


async def _stop(running: Running) -> str:
    running.process.send_signal(signal.SIGTERM)
    rest = await _read_until(running.process, "stopping")
    with anyio.fail_after(20):
        assert await running.process.wait() == 0
    return rest


async def test_config_rest_and_restart_with_state_dir(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(CONFIG)
    state = tmp_path / "state"
    async with emulator("--config", str(config), "--state-dir", str(state), "--log-traffic") as first:
        assert f"SharedAccessKey={OWNER.primary_key}" in first.banner  # the well-known development key
        assert "backend" in first.banner
        device_line = re.search(r"^  device thermostat: (\S+)", first.banner, re.MULTILINE)
        assert device_line is not None
        async with first.http() as http:
            twin = (await http.get("/twins/thermostat")).json()
            assert twin["tags"] == {"site": "b1"}
            assert twin["properties"]["desired"] == {"interval": 5, "$version": 2}
            created = await http.put("/devices/added-over-rest", json={"deviceId": "added-over-rest"})
            assert created.status_code == 200
            key = created.json()["authentication"]["symmetricKey"]["primaryKey"]
            patched = await http.patch("/twins/added-over-rest", json={"properties": {"desired": {"mode": "eco"}}})
            assert patched.status_code == 200
            sent = await http.post("/emulator/devices/added-over-rest/messages", json={"body": "queued while offline"})
            assert sent.status_code == 201
            assert (await http.delete("/devices/thermostat/modules/filter")).status_code == 204
        log = await _stop(first)
        assert "HTTP PUT /devices/added-over-rest -> 200" in log
        assert "SVC  added-over-rest cloud-to-device message" in log
        for secret in (OWNER.primary_key, key, "sig="):
            assert secret not in log

    async with emulator("--config", str(config), "--state-dir", str(state)) as second:
        assert second.ca_pem == await anyio.Path(state / "ca.pem").read_bytes()  # the same CA: devices keep trusting it
        assert device_line[1] in second.banner  # the same keys
        async with second.http() as http:
            device = (await http.get("/devices/added-over-rest")).json()
            assert device["authentication"]["symmetricKey"]["primaryKey"] == key
            assert device["cloudToDeviceMessageCount"] == 1
            twin = (await http.get("/twins/added-over-rest")).json()
            assert twin["properties"]["desired"] == {"mode": "eco", "$version": 2}
            assert (await http.get("/devices/thermostat/modules/filter")).status_code == 404  # deleted stays deleted
            assert (await http.get("/twins/thermostat")).json()["tags"] == {"site": "b1"}
        await _stop(second)


async def test_a_killed_emulator_keeps_every_completed_change(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with emulator("--state-dir", str(state)) as running:
        async with running.http() as http:
            for index in range(20):
                answer = await http.put(f"/devices/crash-{index}", json={"deviceId": f"crash-{index}"})
                assert answer.status_code == 200
        running.process.kill()  # SIGKILL: no clean shutdown
        await running.process.wait()
    async with emulator("--state-dir", str(state)) as restarted:
        async with restarted.http() as http:
            listed = (await http.get("/devices")).json()
        assert [device["deviceId"] for device in listed] == [f"crash-{index}" for index in range(20)]
        await _stop(restarted)


async def test_busy_port_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await anyio.run_process(
            [sys.executable, "-m", "aioiothub.emulator", "--port", str(port), "--websocket-port", "0"],
            env=environment,
            check=False,
        )
    assert result.returncode == 1
    assert b"already in use" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[[devices]]\nid = 5\n")
    for config, expected in ((broken, b"'id' must be a non-empty string"), (tmp_path / "missing.json", b"cannot read")):
        result = await anyio.run_process(
            [sys.executable, "-m", "aioiothub.emulator", "--port", "0", "--config", str(config)],
            env=environment,
            check=False,
        )
        assert result.returncode == 2
        assert expected in result.stderr
