"""The documentation site builds with ``mkdocs build --strict``: no broken link, missing page,
missing snippet file or docstring the API reference cannot render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    pages = {path.relative_to(site).as_posix() for path in site.rglob("index.html")}
    for page in ("index.html", "simulator/index.html", "migration/index.html", "reference/clients/index.html"):
        assert page in pages
    # The snippets are the example files themselves, and the reference shows the docstrings.
    migration = (site / "migration" / "index.html").read_text(encoding="utf-8")
    assert "play_back_end" in migration
    assert "--8&lt;--" not in migration
    assert "IoTHubDeviceClient" in (site / "reference" / "clients" / "index.html").read_text(encoding="utf-8")
