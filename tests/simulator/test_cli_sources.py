"""``aioiothub simulate`` on the user's own hub (``--service-connection-string``, ``--dps-id-scope``) and
with ``--transport native``, as a user runs it: in subprocesses, against an emulator over real sockets."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioiothub import derive_device_key
from aioiothub.emulator import Emulator
from tests.simulator.simulator_helpers import FLEET_KEY, QUICK, ROOT, SIMULATE, run

pytestmark = pytest.mark.anyio


async def simulate(arguments: list[str], environment: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run ``aioiothub simulate --json``; return its summary and what it wrote on stderr."""
    with anyio.fail_after(120):
        completed = await anyio.run_process(
            [*SIMULATE, *arguments, "--json"], cwd=ROOT, check=False,
            env={**os.environ, "AIOIOTHUB_FLEET_KEY": FLEET_KEY, **environment},
        )
    stderr = completed.stderr.decode()
    assert completed.returncode == 0, stderr
    summary: dict[str, Any] = json.loads(completed.stdout)
    return summary, stderr


def emulator_options(hub: Emulator, tmp_path: Path) -> list[str]:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(hub.ca_pem)
    return ["--port", str(hub.port), "--connect-host", hub.host, "--ca-file", str(ca_file)]


async def test_a_service_connection_string_creates_the_fleet_then_finds_it_again(tmp_path: Path) -> None:
    async with Emulator() as hub:
        # The secret comes from the environment, so that it stays out of process listings.
        arguments = [
            "--service-connection-string", "env:HUB_SERVICE_CONNECTION_STRING", *emulator_options(hub, tmp_path),
            "--devices", "3", "--messages", "2", *QUICK, "--transport", "native",
        ]
        environment = {"HUB_SERVICE_CONNECTION_STRING": hub.service_connection_string}
        first, stderr = await simulate(arguments, environment)
        assert "devices through the service API (3 created, 0 reused), transport native" in stderr
        for device_id in ("sim-0", "sim-1", "sim-2"):
            assert hub.identity(device_id).primary_key == derive_device_key(FLEET_KEY, device_id)
        second, stderr = await simulate(arguments, environment)
        assert "(0 created, 3 reused)" in stderr
    for summary in (first, second):
        assert summary["counters"]["acknowledged"] == 6
        assert summary["counters"]["failed"] == 0
        assert summary["settings"]["transport"] == "native"


async def test_dps_provisions_every_device_with_the_group_key(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        hub.dps.add_enrollment_group("fleet", primary_key=FLEET_KEY)
        hub.dps.retry_after = 0
        summary, stderr = await simulate(
            ["--dps-id-scope", hub.dps.id_scope, "--dps-host", hub.hostname, *emulator_options(hub, tmp_path),
             "--prefix", "sensor-", "--devices", "4", "--messages", "2", *QUICK],
            {},
        )
        assert sorted(record.registration_id for record in hub.dps.registrations()) == [
            "sensor-0", "sensor-1", "sensor-2", "sensor-3",
        ]
        target = f"devices provisioned through DPS {hub.host}:{hub.port}, id scope {hub.dps.id_scope}"
    assert summary["settings"]["target"] == target
    assert summary["counters"]["registrations"] == 4
    assert summary["counters"]["acknowledged"] == 8
    assert "4 registered through DPS" in stderr


# Prints whether paho-mqtt (what the aiomqtt transport runs on) was ever imported by the run.
_REPORT_PAHO = (
    "import sys; from aioiothub.__main__ import main; status = main(); "
    "print('paho imported:', 'paho' in sys.modules, file=sys.stderr); sys.exit(status)"
)


@pytest.mark.parametrize(("transport", "paho"), [("native", False), ("aiomqtt", True)])
def test_the_transport_option_reaches_every_device(transport: str, paho: bool) -> None:
    completed = run(
        [sys.executable, "-c", _REPORT_PAHO, "simulate", "--devices", "10", "--messages", "2", *QUICK,
         "--transport", transport, "--json"],
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["counters"]["acknowledged"] == 20
    assert summary["settings"]["transport"] == transport
    assert f"paho imported: {paho}" in completed.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--hub", "h.example", "--dps-id-scope", "0ne00000000"], "give one of --hub, --dps-id-scope, not several"),
        (["--dps-id-scope", "0ne00000000", "--emulator", "process"], "give --dps-id-scope or --emulator, not both"),
        (["--dps-id-scope", "0ne00000000", "--method-rate", "1"], "needs an emulator started for the run"),
        (["--service-connection-string", "env:NO_SUCH_VARIABLE_HERE"], "NO_SUCH_VARIABLE_HERE is not set"),
        (["--service-connection-string", "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0"], "not a policy's"),
        (["--websockets"], "--websockets is for --hub, --service-connection-string or --dps-id-scope"),
    ],
)
def test_bad_source_options_are_refused_before_anything_starts(arguments: list[str], message: str) -> None:
    completed = run([*SIMULATE, *arguments], environment={"AIOIOTHUB_FLEET_KEY": FLEET_KEY})
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "c2VjcmV0" not in completed.stderr


def test_the_users_hub_needs_the_fleet_key() -> None:
    completed = run([*SIMULATE, "--dps-id-scope", "0ne00000000"], environment={"AIOIOTHUB_FLEET_KEY": ""})
    assert completed.returncode == 2
    assert "--dps-id-scope needs the fleet key" in completed.stderr
