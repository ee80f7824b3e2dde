"""Which module may import what: the layers of design.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import aioiothub

PACKAGE = Path(aioiothub.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    return {str(path.relative_to(PACKAGE)): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_aiomqtt_transport_imports_aiomqtt_or_paho() -> None:
    importers = {
        module
        for module, names in _modules().items()
        if any(name.split(".")[0] in {"aiomqtt", "paho"} for name in names)
    }
    assert importers == {"transports/aiomqtt.py"}


def test_the_protocol_core_imports_nothing_above_it() -> None:
    for module, names in _modules().items():
        if module.startswith("protocol/"):
            ours = {name for name in names if name.startswith("aioiothub.")}
            allowed = {name for name in ours if name.startswith("aioiothub.protocol") or name in {
                "aioiothub.exceptions", "aioiothub._version"}}
            assert ours == allowed, f"{module} imports {sorted(ours - allowed)}"


def test_the_session_and_clients_reach_transports_only_through_the_seam() -> None:
    for module, names in _modules().items():
        if module in {"session.py", "client.py", "hub_client.py", "device_client.py", "module_client.py", "inbound.py",
                      "settings.py"}:
            concrete = {name for name in names if name.startswith("aioiothub.transports.") and name != (
                "aioiothub.transports.base")}
            assert not concrete, f"{module} imports a concrete transport: {sorted(concrete)}"
