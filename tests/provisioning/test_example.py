"""``examples/provision_and_send.py`` runs end to end against the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_provision_and_send_runs_against_the_emulator() -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IOTHUB_")}
    completed = subprocess.run(
        [sys.executable, "provision_and_send.py"],
        cwd=EXAMPLES,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "provisioned 'example-sensor' on localhost" in completed.stdout
    assert "the emulator received 3 messages" in completed.stdout
