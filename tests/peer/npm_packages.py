"""npm packages for the peer tests, installed into a folder of their own from the npm registry.

:func:`ensure_npm_packages` installs the packages a peer suite names (``{name: version range}``, with
pinned major versions) into ``folder`` with ``npm install --prefix`` and reuses them on later runs:
the install is skipped when the folder already holds every package at a version the same request
installed (recorded in ``folder/.installed.json``). A failed install raises :class:`NpmInstallError`
with npm's output, so a test that needs the packages fails loudly instead of skipping.

Standard library only, and generic: any suite that needs Node.js packages (the provisioning SDK, the
device or service SDKs, Azurite) can call it with its own folder and package list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["INSTALL_TIMEOUT", "NpmInstallError", "ensure_npm_packages", "node_executable"]

INSTALL_TIMEOUT = 900.0
"""Seconds ``npm install`` may take on a slow network before it is abandoned."""

_MARKER = ".installed.json"


class NpmInstallError(RuntimeError):
    """Node.js or npm is missing, or ``npm install`` failed."""


def node_executable() -> str:
    """The ``node`` program on ``PATH``.

    Raises:
        NpmInstallError: there is none.
    """
    node = shutil.which("node")
    if node is None:
        raise NpmInstallError("the Node.js peer tests need 'node' (and 'npm') on PATH")
    return node


def _installed(folder: Path, packages: Mapping[str, str]) -> bool:
    try:
        recorded = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded != dict(packages):
        return False
    return all((folder / "node_modules" / name / "package.json").is_file() for name in packages)


def ensure_npm_packages(folder: Path, packages: Mapping[str, str]) -> Path:
    """Install ``packages`` into ``folder`` unless they are there already; return its ``node_modules``.

    Args:
        folder: where the packages go (created if needed); keep it out of version control.
        packages: package name -> version range, e.g. ``{"azure-iot-device": "^1.18.0"}``.

    Raises:
        NpmInstallError: npm is missing, or the install failed or timed out (with npm's output).
    """
    if not packages:
        raise ValueError("packages must name at least one package")
    node_executable()
    if _installed(folder, packages):
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise NpmInstallError("the Node.js peer tests need 'npm' on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MARKER).unlink(missing_ok=True)
    specs = [f"{name}@{version}" for name, version in sorted(packages.items())]
    command = [npm, "install", "--no-audit", "--no-fund", "--no-progress", "--prefix", str(folder), *specs]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
    except subprocess.TimeoutExpired:
        raise NpmInstallError(f"{' '.join(command)} did not finish within {INSTALL_TIMEOUT:.0f} s") from None
    if result.returncode != 0:
        raise NpmInstallError(f"{' '.join(command)} failed (exit status {result.returncode}):\n{result.stdout}")
    missing = [name for name in packages if not (folder / "node_modules" / name / "package.json").is_file()]
    if missing:
        raise NpmInstallError(f"npm reported success but {', '.join(missing)} is not in {folder}:\n{result.stdout}")
    (folder / _MARKER).write_text(json.dumps(dict(packages), sort_keys=True), encoding="utf-8")
    return folder / "node_modules"
