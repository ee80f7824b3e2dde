"""Every benchmark still runs: each script's ``--smoke`` size, in a subprocess, prints its table.

Nothing here asserts a speed (timed goals on a shared machine are for reading, not for CI); what
fails is a benchmark that crashes, hangs or stops printing its results. The benchmarks install
what they need themselves (mosquitto with apt-get, the official SDK in ``.peer-venv``); when that is
impossible they exit with the reason, and the test fails showing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# The first run on a new machine also installs mosquitto and builds the SDK's virtual environment.
TIMEOUT = 900.0


@pytest.mark.parametrize(
    ("script", "title", "rows"),
    [
        ("telemetry_throughput.py", "Telemetry throughput, one TLS connection", ["aioiothub[native]+uvloop"]),
        ("many_devices.py", "Many TLS device connections in one process", ["aioiothub[native]"]),
        ("latency.py", "Round-trip latency against the emulator", ["C2D delivery"]),
        (
            "emulator_capacity.py",
            "Emulator capacity on this machine",
            ["concurrent TLS connections", "4 partitions: lean (proton engine), live", "4 partitions: azure-eventhub"],
        ),
        ("outbox.py", "Durable outbox, 100 concurrent senders", ["emulator: durable, normal (msg/s)"]),
    ],
)
def test_benchmark_smoke_run_prints_its_table(tmp_path: Path, script: str, title: str, rows: list[str]) -> None:
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--json", str(output)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert title in result.stdout, result.stdout
    for row in rows:
        assert row in result.stdout, result.stdout
    assert json.loads(output.read_text())["benchmark"] == script.removesuffix(".py")
