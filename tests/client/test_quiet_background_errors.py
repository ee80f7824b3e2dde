"""Nothing reaches stderr from the library, and every failure it recovers from reaches errors().

The scenario (``tests/client/background_failures.py``) runs as a program of its own with logging
unconfigured, as in an application that never set it up: without the library's ``NullHandler``,
Python's last-resort handler would print every warning to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_client_through_drops_and_refusals_prints_nothing_and_reports_everything(transport: str) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHONWARNINGS", "IOTHUB_"))}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.client.background_failures", transport],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert json.loads(completed.stdout) == {
        "RenewalFailed": 1,
        "ConnectionDropped": 1,
        "ReconnectFailed": 2,
        "ConsumerFellBehind": 2,
        "MethodNotHandled": 1,
    }
