"""Fixtures for the HTTPS tests: a fresh emulator per test (fault injection stays local).

The tests that also connect clients over MQTT (``test_edge``, and the REST listener's WebSocket
case) use the ``transport`` fixture and run once per transport; the upload tests speak HTTPS only
and run once.
"""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from tests.transport_matrix import parametrize_transport, use_transport


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_transport(metafunc)


@pytest.fixture
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The transport this test's clients use (see ``tests.transport_matrix``)."""
    return use_transport(request, monkeypatch)


@pytest.fixture
def hub(iothub_emulator: Emulator) -> Emulator:
    """An emulator with its TLS, WebSocket/REST and blob listeners on free ports (``aioiothub.testing``)."""
    return iothub_emulator
