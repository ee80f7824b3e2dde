"""Install pinned npm packages into a git-ignored folder, once: the Node.js side of the peer tests.

:func:`ensure_npm_packages` copies a committed ``package.json`` and ``package-lock.json`` into the
target folder and runs ``npm ci`` there when the lock file differs from the one installed, or a
package the caller needs is missing; otherwise it does nothing. A failed install raises
:class:`NpmInstallError` with npm's output: a peer test that silently skipped would hide exactly the
disagreements it exists to find. Standard library only.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INSTALL_TIMEOUT", "NpmInstallError", "ensure_npm_packages", "node_executable"]

INSTALL_TIMEOUT = 600.0


class NpmInstallError(RuntimeError):
    """npm is missing, or installing the packages failed."""


def node_executable() -> str:
    """The ``node`` program on ``PATH``.

    Raises:
        NpmInstallError: there is none.
    """
    node = shutil.which("node")
    if node is None:
        raise NpmInstallError("the Node.js peer tests need 'node' (and 'npm') on PATH")
    return node


def _installed(target: Path, manifest_dir: Path, packages: Sequence[str]) -> bool:
    lock = target / "package-lock.json"
    if not lock.exists() or not filecmp.cmp(lock, manifest_dir / "package-lock.json", shallow=False):
        return False
    return all((target / "node_modules" / name / "package.json").exists() for name in packages)


def ensure_npm_packages(manifest_dir: Path, target: Path, packages: Sequence[str]) -> Path:
    """Make ``target/node_modules`` hold what ``manifest_dir``'s package files pin.

    Args:
        manifest_dir: the folder with the committed ``package.json`` and ``package-lock.json``.
        target: the install folder (git-ignored); created when missing.
        packages: package names that must be installed afterwards.

    Returns:
        ``target / "node_modules"``.

    Raises:
        NpmInstallError: npm is not installed, or ``npm ci`` failed.
    """
    if _installed(target, manifest_dir, packages):
        return target / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise NpmInstallError(f"npm is needed to install {', '.join(packages)} into {target}")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(manifest_dir / name, target / name)
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=target,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NpmInstallError(f"npm ci in {target} timed out after {INSTALL_TIMEOUT:.0f} s") from None
    if result.returncode != 0 or not _installed(target, manifest_dir, packages):
        raise NpmInstallError(f"npm ci in {target} failed:\n{result.stdout}\n{result.stderr}")
    return target / "node_modules"
