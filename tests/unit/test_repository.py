"""The repository itself: no unresolved merge left in any tracked text file, nothing installed tracked."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_tracked_file_holds_a_merge_conflict_marker() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".yml", ".yaml", ".json", ".js", ".cfg", ".txt"}:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.startswith(MARKERS) or line == "=======":
                offenders.append(f"{name}:{number}")
    assert offenders == []


def test_nothing_installed_by_the_tests_is_tracked() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    installed = [
        name for name in listed.stdout.splitlines() if "node_modules/" in name or name.startswith((".peer", ".venv"))
    ]
    assert installed == []
