"""The coverage-guided fuzz command runs, reports its rates, and fails on a crashing input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz.py"


def test_fuzz_command_runs_targets_and_reports_inputs_per_second(tmp_path: Path) -> None:
    output = tmp_path / "fuzz.json"
    targets = ["mqtt server role", "device inbound", "connection string"]
    command = [sys.executable, str(FUZZ), "--inputs", "3000", "--json", str(output)]
    for target in targets:
        command += ["--target", target]
    # The first run on a new machine also installs atheris.
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(output.read_text())["results"]
    assert [row["target"] for row in rows] == targets
    for row in rows:
        assert row["ok"]
        assert row["inputs"] == 3000
        assert row["inputs_per_second"] > 0
        assert row["coverage"] > 0
    assert "inputs/s" in result.stdout
