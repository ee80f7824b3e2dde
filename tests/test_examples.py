"""The demo and every example run end to end against the embedded emulator, with no arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

EXPECTED = {
    "send_telemetry.py": "the emulator received 104 messages",
    "twin_and_methods.py": "back end saw 200 {'accepted': 'reboot'}",
    "cloud_messages.py": "received b'command 2' {'n': '2'}",
    "edge_module.py": "the hub received [('output1', b'FIRST'), ('output1', b'SECOND')]",
    "migrated_handlers.py": "handled ['c2d', 'desired', 'method']",
    "sas_token.py": "sent a message with a SAS token valid for 3600 s",
    "x509_device.py": "connected with a certificate; twin desired: {'$version': 1}",
    "websockets.py": 'the emulator received over MQTT/WebSocket: {"over":"websocket"}',
    "reconnect.py": "the emulator has all of them: True",
    "errors.py": "and the next request works: {'$version': 1}",
    "fleet.py": "80 of 80 messages acknowledged, 0 failed",
    "pnp_thermostat.py": "thermostat1 targetTemperature 30.0 acknowledged (ac 200, av 2)",
    "store_and_forward.py": "the emulator received 60 of 60 readings, in order: True",
}
"""What each example prints when it worked; an example not listed here must at least exit cleanly."""

SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))


def run(arguments: list[str], cwd: Path) -> str:
    # No IOTHUB_* variables: every example must pick the embedded emulator on its own.
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("IOTHUB_", "AIOIOTHUB_"))
    }
    completed = subprocess.run(
        [sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_demo_shows_every_kind_of_traffic() -> None:
    output = run(["-m", "aioiothub", "demo"], ROOT)
    for expected in (
        "received telemetry {\"temperature\":21.5,\"humidity\":40} (application/json)",
        "read its twin: desired={'interval': 10, '$version': 2}",
        "reported firmware 1.2.0 -> reported $version 2",
        "method 'reboot' returned 200 {'rebooted': True}",
        "desired patch arrived: {'interval': 5, '$version': 3}",
        "cloud-to-device message b'hello device' properties={'priority': 'high'}",
    ):
        assert expected in output


def test_every_listed_example_exists() -> None:
    assert set(EXPECTED) <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_against_the_emulator(script: str) -> None:
    output = run([script], EXAMPLES)
    if script in EXPECTED:
        assert EXPECTED[script] in output
    else:
        assert output.strip()
