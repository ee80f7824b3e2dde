"""The documentation site builds with ``mkdocs build --strict``: no broken link, missing page,
missing snippet file or docstring the API reference cannot render. Its pages include the example
files CI runs, and nothing on it still announces a feature as coming."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PAGES_AND_EXAMPLES = {
    "quickstart": "examples/send_telemetry.py",
    "client": "examples/acknowledge_after_processing.py",
    "provisioning": "examples/provision_and_send.py",
    "edge-and-upload": "examples/upload_file.py",
    "migration": "examples/migrated_handlers.py",
    "simulator": "examples/fleet.py",
}
"""A page, and one example file whose text must appear on it (included, not copied)."""

REFERENCE = {
    "clients": "IoTHubDeviceClient",
    "provisioning": "from_enrollment_group_key",
    "pnp": "WritablePropertyRequest",
    "background-errors": "ConnectionDropped",
    "emulator": "service_connection_string",
    "testing": "iothub_device",
    "simulator": "ServiceRegistry",
}
"""API reference pages, and a name each must show from the docstrings."""


def _text(html: str) -> str:
    """The page's text: tags removed, entities of the characters examples use decoded."""
    text = re.sub(r"<[^>]+>", "", html)
    for entity, character in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&amp;", "&")):
        text = text.replace(entity, character)
    return text


def test_the_site_builds_strictly_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    pages = {path.parent.relative_to(site).as_posix() for path in site.rglob("index.html")}
    expected = {".", "emulator", "performance", "reliability", "wire-reference", *PAGES_AND_EXAMPLES}
    assert expected | {f"reference/{name}" for name in REFERENCE} <= pages

    for page, example in PAGES_AND_EXAMPLES.items():
        text = _text((site / page / "index.html").read_text(encoding="utf-8"))
        assert "--8<--" not in text
        # A distinctive line of the example (its first statement after the docstring) is on the page.
        source = (ROOT / example).read_text(encoding="utf-8")
        line = next(line for line in source.split('"""', 2)[2].splitlines() if line.startswith(("async def", "def ")))
        assert line in text, f"{example} is not included on {page}"
    for page, name in REFERENCE.items():
        assert name in (site / "reference" / page / "index.html").read_text(encoding="utf-8")

    for path in site.rglob("index.html"):
        text = _text(path.read_text(encoding="utf-8"))
        assert "being added" not in text, path
        assert "as they land" not in text, path
    migration = (site / "migration" / "index.html").read_text(encoding="utf-8")
    assert "NAMES THIS GUIDE MAPS TO" not in migration
    assert "message.ack()" not in _text(migration)
