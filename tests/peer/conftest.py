"""Fixtures for the peer tests: the official SDKs, each in an environment of its own.

``azure-iot-device`` 2.x pins ``paho-mqtt<2``, which cannot share an environment with ``aiomqtt``,
so the SDK gets its own venv at ``<repo>/.peer-venv`` (built by ``benchmarks/_peer_venv.py``, which
the benchmarks share). A failed build fails the tests with pip's output: a peer test that silently
skips would hide exactly the disagreements it exists to find.

The Node.js SDKs come from the npm registry into ``<repo>/.peer-node-iot``, pinned by ``node/package-lock.json``
(``npm_packages.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks._peer_venv import PeerVenvError, ensure_eventhub_python, ensure_peer_python
from tests.peer.npm_packages import NpmInstallError, ensure_npm_packages
from tests.peer.service_venv import ensure_service_python


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The interpreter of the peer venv, with a satisfying ``azure-iot-device`` importable."""
    return _built(ensure_peer_python)


@pytest.fixture(scope="session")
def service_python() -> Path:
    """The interpreter of the service venv, with ``azure-iot-hub`` (and uamqp) importable."""
    return _built(ensure_service_python)


@pytest.fixture(scope="session")
def eventhub_python() -> Path:
    """The interpreter of the Event Hubs venv, with ``azure-eventhub`` importable."""
    return _built(ensure_eventhub_python)


def _built(ensure: Callable[[], Path]) -> Path:
    try:
        return ensure()
    except PeerVenvError as exc:
        pytest.fail(str(exc), pytrace=False)


NODE_MANIFEST = Path(__file__).resolve().parent / "node"
"""The committed ``package.json`` and ``package-lock.json`` pinning the official Node.js SDKs."""

NODE_INSTALL = Path(__file__).resolve().parents[2] / ".peer-node-iot"
"""Where they are installed (git-ignored)."""


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The ``node_modules`` folder holding the Node.js device, provisioning and service SDKs."""
    try:
        return ensure_npm_packages(
            NODE_MANIFEST,
            NODE_INSTALL,
            ["azure-iot-device", "azure-iot-device-mqtt", "azure-iot-provisioning-device",
             "azure-iot-provisioning-device-mqtt", "azure-iot-security-symmetric-key", "azure-iothub"],
        )
    except NpmInstallError as exc:
        pytest.fail(str(exc), pytrace=False)
