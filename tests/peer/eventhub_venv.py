"""A virtual environment of its own for ``azure-eventhub``, the back end's reader: ``.peer-venv-eventhub``.

``azure-eventhub`` carries its own pure-Python AMQP stack; it gets a venv of its own so that it is
tested exactly as a back end installs it. Built with the peer venv machinery of
``benchmarks/_peer_venv.py`` on first use, reused while the SDK imports.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks._peer_venv import REPO_ROOT, PeerVenvError, build_venv, venv_python

__all__ = ["EVENTHUB_REQUIREMENTS", "EVENTHUB_VENV", "ensure_eventhub_python"]

EVENTHUB_VENV = REPO_ROOT / ".peer-venv-eventhub"
EVENTHUB_REQUIREMENTS = ["azure-eventhub==5.15.1"]
_PROBE = "import azure.eventhub\nprint(azure.eventhub.__version__)\n"


def _imports(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False)
    return probe.returncode == 0 and probe.stdout.strip() == "5.15.1"


def ensure_eventhub_python() -> Path:
    """The interpreter of the Event Hubs venv, with ``azure-eventhub`` importable.

    Raises:
        PeerVenvError: the venv could not be built or the SDK does not import in it.
    """
    python = venv_python(EVENTHUB_VENV)
    if not _imports(python):
        build_venv(EVENTHUB_VENV, EVENTHUB_REQUIREMENTS)
        if not _imports(python):
            raise PeerVenvError(f"{EVENTHUB_REQUIREMENTS} were installed into {EVENTHUB_VENV}, but do not import")
    return python
