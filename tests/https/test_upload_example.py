"""``examples/upload_file.py`` runs end to end against the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_upload_example_runs_against_the_emulator() -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("IOTHUB_", "IOTEDGE_"))}
    completed = subprocess.run(
        [sys.executable, "upload_file.py"], cwd=EXAMPLES, env=environment, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    size = (EXAMPLES / "upload_file.py").stat().st_size
    assert f"uploaded {size} of {size} bytes" in completed.stdout
    assert f"uploader/examples/upload_file.py success=True ({size} bytes)" in completed.stdout
