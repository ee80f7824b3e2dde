"""``benchmarks/fleet_simulation.py --smoke`` still runs and prints its tables (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_benchmark_smoke_run_prints_its_tables(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fleet_simulation.py"), "--smoke", "--json", str(output)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Sustained fleet: 30 devices" in completed.stdout
    assert "| send latency p50 / p99 / max, once all connected |" in completed.stdout
    assert "Largest fleet" in completed.stdout
    results = json.loads(output.read_text())
    assert results["benchmark"] == "fleet_simulation"
    assert results["sustained"]["counters"]["devices"] == 30
    assert next(row["devices"] for row in results["largest"] if row["processes"] == 1) == 20
