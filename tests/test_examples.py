"""The demo and every example run end to end against the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(arguments: list[str], cwd: Path) -> str:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IOTHUB_")}
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


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("send_telemetry.py", "the emulator received 104 messages"),
        ("twin_and_methods.py", "back end saw 200 {'accepted': 'reboot'}"),
        ("cloud_messages.py", "received b'command 2' {'n': '2'}"),
        ("edge_module.py", "the hub received [('output1', b'FIRST'), ('output1', b'SECOND')]"),
        ("pnp_thermostat.py", "thermostat1 targetTemperature 30.0 acknowledged (ac 200, av 2)"),
    ],
)
def test_example_runs_against_the_emulator(script: str, expected: str) -> None:
    assert expected in run([script], EXAMPLES)
