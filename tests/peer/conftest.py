"""Fixtures for the peer tests: the official SDKs, each in an environment of its own.

``azure-iot-device`` 2.x pins ``paho-mqtt<2``, which cannot share an environment with ``aiomqtt``,
so the SDK gets its own venv at ``<repo>/.peer-venv`` (built by ``benchmarks/_peer_venv.py``, which
the benchmarks share). A failed build fails the tests with pip's output: a peer test that silently
skips would hide exactly the disagreements it exists to find.

The Node.js SDKs come from the npm registry into ``<repo>/.peer-node-sdk`` (``npm_packages.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._peer_venv import PeerVenvError, ensure_peer_python
from tests.peer.npm_packages import NpmInstallError, ensure_npm_packages


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The interpreter of the peer venv, with a satisfying ``azure-iot-device`` importable."""
    try:
        return ensure_peer_python()
    except PeerVenvError as exc:
        pytest.fail(str(exc), pytrace=False)


NODE_SDK_FOLDER = Path(__file__).resolve().parents[2] / ".peer-node-sdk"
"""Where the Node.js SDK packages for the peer tests are installed (git-ignored)."""

NODE_SDK_PACKAGES = {
    "azure-iot-provisioning-device": "^1.9.1",
    "azure-iot-provisioning-device-mqtt": "^1.8.1",
    "azure-iot-security-symmetric-key": "^1.8.2",
    "azure-iot-device": "^1.18.4",
    "azure-iot-device-mqtt": "^1.16.4",
}
"""The official Node.js device and provisioning SDK packages, major versions pinned."""


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The ``node_modules`` folder holding the Node.js SDK packages (installed on first use)."""
    try:
        return ensure_npm_packages(NODE_SDK_FOLDER, NODE_SDK_PACKAGES)
    except NpmInstallError as exc:
        pytest.fail(str(exc), pytrace=False)
