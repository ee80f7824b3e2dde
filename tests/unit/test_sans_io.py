"""The protocol package stays sans-IO: no event loop, network, TLS or MQTT library behind it."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import aioiothub.protocol

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_DIR = Path(aioiothub.protocol.__file__).parent

FORBIDDEN = ("anyio", "aiomqtt", "paho", "asyncio", "ssl", "socket", "wsproto")

# Runs in a fresh interpreter so that nothing imported by pytest or other tests can mask an import.
# The top-level package is replaced by a bare namespace: the public ``aioiothub`` package imports
# the client and transport, and this check is about what the protocol modules pull in themselves.
PROBE = """
import importlib, json, pkgutil, sys, types
root, forbidden = sys.argv[1], sys.argv[2].split(",")
sys.path.insert(0, root)
package = types.ModuleType("aioiothub")
package.__path__ = [root + "/aioiothub"]
sys.modules["aioiothub"] = package
before = sorted(name for name in sys.modules if name.split(".")[0] in forbidden)
protocol = importlib.import_module("aioiothub.protocol")
names = [info.name for info in pkgutil.walk_packages(protocol.__path__, "aioiothub.protocol.")]
for name in names:
    importlib.import_module(name)
after = sorted(name for name in sys.modules if name.split(".")[0] in forbidden)
print(json.dumps({"modules": names, "before": before, "after": after}))
"""


def protocol_module_names() -> list[str]:
    return [info.name for info in pkgutil.walk_packages([str(PROTOCOL_DIR)], "aioiothub.protocol.")]


def test_importing_every_protocol_module_loads_no_io_library() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(REPO_ROOT), ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["before"] == []
    assert set(report["modules"]) >= {
        "aioiothub.protocol.connect",
        "aioiothub.protocol.dps",
        "aioiothub.protocol.limits",
        "aioiothub.protocol.properties",
        "aioiothub.protocol.topics",
        "aioiothub.protocol.twin",
    }
    assert report["modules"] == protocol_module_names()
    assert report["after"] == []


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module)
    return names


def test_protocol_modules_import_only_the_standard_library_and_exceptions() -> None:
    allowed_own = {"aioiothub.exceptions", "aioiothub._version"}
    # rglob: the modules of the packages under protocol/ (topics, mqtt) are checked as well.
    for path in sorted(PROTOCOL_DIR.rglob("*.py")):
        module = path.relative_to(PROTOCOL_DIR)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "aioiothub":
                assert name in allowed_own or name.startswith("aioiothub.protocol"), f"{module}: {name}"
            else:
                assert top in sys.stdlib_module_names, f"{module}: {name}"
            # Times are passed in by callers; the protocol core never reads a clock itself.
            assert top not in {"time", *FORBIDDEN}, f"{module}: {name}"
