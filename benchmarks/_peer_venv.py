"""A private virtual environment holding the official ``azure-iot-device`` SDK (``<repo>/.peer-venv``).

``azure-iot-device`` 2.x pins ``paho-mqtt<2``, which cannot share an environment with ``aiomqtt``,
so the SDK gets its own venv, built on first use and reused while the SDK imports there. Both the
peer tests (``tests/peer/conftest.py``) and the benchmarks get its interpreter from
:func:`ensure_peer_python`. A failed build raises :class:`PeerVenvError` with pip's output: a run
that silently left the SDK out would hide exactly what it exists to show.

Standard library only: the benchmarks import it by path, the tests as ``benchmarks._peer_venv``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = [
    "EVENTHUB_REQUIREMENTS",
    "EVENTHUB_VENV",
    "PEER_VENV",
    "SDK_REQUIREMENT",
    "PeerVenvError",
    "build_venv",
    "ensure_eventhub_python",
    "ensure_peer_python",
    "ensure_venv_with",
    "installed_sdk",
    "venv_python",
]

SDK_REQUIREMENT = "azure-iot-device>=2.14,<3"
# The official file-upload sample uploads with the storage SDK.
STORAGE_REQUIREMENT = "azure-storage-blob>=12.19,<13"
SDK_MINIMUM = (2, 14)
SDK_MAJOR = 2

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = REPO_ROOT / ".peer-venv"
# azure-eventhub carries its own pure-Python AMQP stack; a venv of its own tests (and measures) it
# exactly as a back end installs it.
EVENTHUB_VENV = REPO_ROOT / ".peer-venv-eventhub"
EVENTHUB_REQUIREMENTS = ["azure-eventhub==5.15.1"]
_EVENTHUB_PROBE = "import azure.eventhub\nprint(azure.eventhub.__version__)\n"

VENV_TIMEOUT = 300.0
INSTALL_TIMEOUT = 900.0
PROBE_TIMEOUT = 120.0

_PROBE = (
    "import azure.iot.device.aio\nimport azure.storage.blob\n"
    "from importlib import metadata\nprint(metadata.version('azure-iot-device'))\n"
)


class PeerVenvError(RuntimeError):
    """The peer venv could not be built, or the SDK does not import in it."""


def venv_python(venv: Path = PEER_VENV) -> Path:
    """The interpreter of ``venv``."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # No stdin: pip must never wait for an answer nobody will give.
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric release components: ``"2.14.0"`` -> ``(2, 14, 0)``, ``"3.0.0b2"`` -> ``(3, 0, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def installed_sdk(python: Path) -> str | None:
    """The SDK version importable by ``python`` when it satisfies SDK_REQUIREMENT, else None."""
    if not python.exists():
        return None
    try:
        probe = _run([str(python), "-c", _PROBE], PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0:
        return None
    version = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else ""
    numbers = _version_tuple(version)
    if not numbers or numbers[0] != SDK_MAJOR or numbers[:2] < SDK_MINIMUM:
        return None
    return version


def _failure(step: str, command: list[str], output: str, detail: str) -> PeerVenvError:
    return PeerVenvError(f"{step} failed ({detail}): {' '.join(command)}\n{output}")


def build_venv(venv: Path, requirements: list[str]) -> None:
    """Create ``venv`` (again, when broken) and install ``requirements`` into it from the package index.

    Raises:
        PeerVenvError: creating the venv or installing failed.
    """
    python = venv_python(venv)
    if not python.exists() or _run([str(python), "-c", "import pip"], PROBE_TIMEOUT).returncode != 0:
        # --clear: a half-built venv from an interrupted run is rebuilt, not patched.
        command = [sys.executable, "-m", "venv", "--clear", str(venv)]
        try:
            result = _run(command, VENV_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise _failure("creating the peer venv", command, "", f"timed out after {VENV_TIMEOUT:.0f} s") from None
        if result.returncode != 0:
            raise _failure("creating the peer venv", command, result.stdout, f"exit status {result.returncode}")
    command = [str(python), "-m", "pip", "install", "--quiet", "--no-input", *requirements]
    try:
        result = _run(command, INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else ""
        raise _failure("installing the SDK", command, output, f"timed out after {INSTALL_TIMEOUT:.0f} s") from None
    if result.returncode != 0:
        raise _failure("installing the SDK", command, result.stdout, f"exit status {result.returncode}")


def ensure_venv_with(venv: Path, requirements: list[str], probe: str, expected: str | None = None) -> Path:
    """The interpreter of ``venv``, built with ``requirements`` unless ``probe`` already runs there.

    ``probe`` is a Python snippet that must exit 0 (and print ``expected``, when given).

    Raises:
        PeerVenvError: the venv could not be built, or the probe still fails after building it.
    """
    python = venv_python(venv)

    def works() -> bool:
        if not python.exists():
            return False
        result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False)
        return result.returncode == 0 and (expected is None or result.stdout.strip() == expected)

    if not works():
        build_venv(venv, requirements)
        if not works():
            raise PeerVenvError(f"{requirements} were installed into {venv}, but do not import")
    return python


def ensure_peer_python() -> Path:
    """The interpreter of the peer venv, with a satisfying ``azure-iot-device`` importable.

    Builds the venv (and installs the SDK from the package index) when it is missing or broken.

    Raises:
        PeerVenvError: creating the venv or installing the SDK failed, or the SDK does not import.
    """
    python = venv_python()
    if installed_sdk(python) is None:
        build_venv(PEER_VENV, [SDK_REQUIREMENT, STORAGE_REQUIREMENT])
        if installed_sdk(python) is None:
            probe = _run([str(python), "-c", _PROBE], PROBE_TIMEOUT)
            raise PeerVenvError(
                f"{SDK_REQUIREMENT} was installed into {PEER_VENV} but does not import there:\n{probe.stdout}"
            )
    return python


def ensure_eventhub_python() -> Path:
    """The interpreter of the Event Hubs venv (``.peer-venv-eventhub``), with ``azure-eventhub`` importable.

    Raises:
        PeerVenvError: the venv could not be built or the SDK does not import in it.
    """
    return ensure_venv_with(EVENTHUB_VENV, EVENTHUB_REQUIREMENTS, _EVENTHUB_PROBE, "5.15.1")
