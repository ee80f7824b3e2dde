"""A virtual environment of its own for ``azure-eventhub``, the back end's reader: ``.peer-venv-eventhub``.

``azure-eventhub`` carries its own pure-Python AMQP stack; it gets a venv of its own so that it is
tested exactly as a back end installs it. Built with the peer venv machinery of
``benchmarks/_peer_venv.py`` on first use, reused while the SDK imports.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._peer_venv import REPO_ROOT, ensure_venv_with

__all__ = ["EVENTHUB_REQUIREMENTS", "EVENTHUB_VENV", "ensure_eventhub_python"]

EVENTHUB_VENV = REPO_ROOT / ".peer-venv-eventhub"
EVENTHUB_REQUIREMENTS = ["azure-eventhub==5.15.1"]
_PROBE = "import azure.eventhub\nprint(azure.eventhub.__version__)\n"


def ensure_eventhub_python() -> Path:
    """The interpreter of the Event Hubs venv, with ``azure-eventhub`` importable.

    Raises:
        PeerVenvError: the venv could not be built or the SDK does not import in it.
    """
    return ensure_venv_with(EVENTHUB_VENV, EVENTHUB_REQUIREMENTS, _PROBE, "5.15.1")
