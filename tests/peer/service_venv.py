"""A virtual environment of its own for Microsoft's Python service SDK ``azure-iot-hub``: ``.peer-venv-service``.

``azure-iot-hub`` brings ``uamqp`` (a compiled AMQP client, installed from a wheel) and needs
``six`` without declaring it; it is kept apart from the device SDK's venv so that neither pins the
other. Built with the peer venv machinery of ``benchmarks/_peer_venv.py`` on first use, reused while
the SDK imports.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._peer_venv import REPO_ROOT, ensure_venv_with

__all__ = ["SERVICE_REQUIREMENTS", "SERVICE_VENV", "ensure_service_python"]

SERVICE_VENV = REPO_ROOT / ".peer-venv-service"
SERVICE_REQUIREMENTS = ["azure-iot-hub==2.7.0", "six>=1.16"]
_PROBE = "import azure.iot.hub\nfrom importlib import metadata\nprint(metadata.version('azure-iot-hub'))\n"


def ensure_service_python() -> Path:
    """The interpreter of the service venv, with ``azure-iot-hub`` importable.

    Raises:
        PeerVenvError: the venv could not be built or the SDK does not import in it.
    """
    return ensure_venv_with(SERVICE_VENV, SERVICE_REQUIREMENTS, _PROBE)
