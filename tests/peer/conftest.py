"""Fixtures for the peer tests: the official SDKs, each in an environment of its own.

``azure-iot-device`` 2.x pins ``paho-mqtt<2``, which cannot share an environment with ``aiomqtt``,
so the SDK gets its own venv at ``<repo>/.peer-venv`` (built by ``benchmarks/_peer_venv.py``, which
the benchmarks share). A failed build fails the tests with pip's output: a peer test that silently
skips would hide exactly the disagreements it exists to find.

The Node.js SDKs come from the npm registry into ``<repo>/.peer-node-iot``, pinned by ``node/package-lock.json``
(``npm_packages.py``).
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
