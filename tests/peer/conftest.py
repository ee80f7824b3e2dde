"""Fixtures for the peer tests: a private virtual environment holding the official Python device SDK.

``azure-iot-device`` 2.x pins ``paho-mqtt<2``, which cannot share an environment with ``aiomqtt``,
so the SDK gets its own venv at ``<repo>/.peer-venv`` (built by ``benchmarks/_peer_venv.py``, which
the benchmarks share). A failed build fails the tests with pip's output: a peer test that silently
skips would hide exactly the disagreements it exists to find.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._peer_venv import PeerVenvError, ensure_peer_python


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The interpreter of the peer venv, with a satisfying ``azure-iot-device`` importable."""
    try:
        return ensure_peer_python()
    except PeerVenvError as exc:
        pytest.fail(str(exc), pytrace=False)
